"""One server for the /v1/responses tests: every provider kind behind an alias, a budget, a native upstream."""
from __future__ import annotations

from dataclasses import dataclass

from .fakes.fake_anthropic import FakeAnthropic
from .fakes.fake_gemini import FakeGemini
from .fakes.fake_responses import FakeResponses
from .fakes.openai_upstream import FakeOpenAI
from .server import ServerProcess, write_config

UPSTREAM_KEY = "sk-upstream-key-5150-never-store"
MODELUX = """[routing]
default = "main"

[providers.mock]
kind = "mock"

[providers.up]
kind = "openai"
base_url = "{up}"
api_key_env = "TEST_UP_KEY"

[providers.ant]
kind = "anthropic"
base_url = "{ant}"
api_key_env = "TEST_UP_KEY"

[providers.gem]
kind = "gemini"
base_url = "{gem}"
api_key_env = "TEST_UP_KEY"

[providers.nat]
kind = "openai"
base_url = "{nat}"
api_key_env = "TEST_UP_KEY"
responses = "native"

[[budgets]]
match = {{ agent = "stream-capped" }}
max_cost_usd = 0.0003
"""
ROUTING = """[aliases.planner]
targets = [{ provider = "mock", model = "mock-large" }]
[aliases.oai]
targets = [{ provider = "up", model = "gpt-4o-mini" }]
[aliases.claude]
targets = [{ provider = "ant", model = "claude-sonnet-4-5" }]
[aliases.gemini]
targets = [{ provider = "gem", model = "gemini-2.5-flash" }]
[aliases.native]
targets = [{ provider = "nat", model = "gpt-4o-mini" }]
[aliases.native-then-mock]
targets = [{ provider = "nat", model = "gpt-4o-mini" }, { provider = "mock", model = "mock-small" }]
retries = { attempts = 0 }
"""


@dataclass
class Env:
    srv: ServerProcess
    up: FakeOpenAI
    ant: FakeAnthropic
    nat: FakeResponses
    gem: FakeGemini

    def call(self, call_id: str) -> dict:
        return self.srv.get(f"/mlx/v1/calls/{call_id}").json()


def start_env(base) -> Env:
    up, ant, nat, gem = FakeOpenAI().start(), FakeAnthropic().start(), FakeResponses().start(), FakeGemini().start()
    cfg = write_config(base / "config", {
        "modelux.toml": MODELUX.format(up=up.base_url, ant=ant.base_url, nat=nat.base_url, gem=gem.base_url), "main.toml": ROUTING})
    srv = ServerProcess(base / "data", cfg, env={"TEST_UP_KEY": UPSTREAM_KEY}).start()
    return Env(srv, up, ant, nat, gem)


def stop_env(env: Env) -> None:
    env.srv.stop()
    for fake in (env.up, env.ant, env.nat, env.gem):
        fake.stop()
