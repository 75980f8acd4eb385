"""Config files: the SPEC's own example loads, mistakes are named by file, line and key."""
from __future__ import annotations

import subprocess
import sys

import pytest

from modelux_local.config.loader import load_dir
from modelux_local.errors import ConfigError

from .server import ROOT, ServerProcess, write_config

SPEC_SERVER = '''
[server]
host = "127.0.0.1"
port = 4000

[routing]
default = "agent-v2"
[[routing.bind]]
match = { agent = "support-bot" }
config = "support-v1"

[providers.anthropic]
kind = "anthropic"
base_url = "https://api.anthropic.com"
api_key_env = "ANTHROPIC_API_KEY"
timeout_s = 60

[providers.openai]
kind = "openai"
api_key_env = "OPENAI_API_KEY"

[providers.gemini]
kind = "gemini"
api_key_env = "GEMINI_API_KEY"

[[budgets]]
match = { agent = "research-v2" }
max_cost_usd = 0.50
max_calls = 40
max_tokens = 400000
max_duration_s = 900
warn_at = 0.8

[[webhooks]]
url = "http://127.0.0.1:9000/modelux"
events = ["budget.warning", "run.aborted", "anomaly.loop", "anomaly.cost"]
secret_env = "MODELUX_WEBHOOK_SECRET"

[anomalies]
loop_repeats = 5
retry_storm = 5
retry_window_s = 60

[limits]
max_body_mb = 10

[prices."my-provider/my-model"]
input = 0.5
output = 1.5
'''
SPEC_AGENT = '''
description = "Sonnet plans, Haiku executes, Flash summarises"
[aliases.planner]
strategy = "fallback"
targets = [
  { provider = "anthropic", model = "claude-sonnet-4-5" },
  { provider = "openai", model = "gpt-4.1", weight = 1 },
]
retries = { attempts = 2, backoff_ms = 250, on = ["429", "5xx", "timeout"] }
timeout_s = 60
[aliases.executor]
targets = [{ provider = "anthropic", model = "claude-haiku-4-5" }]
[aliases.summarizer]
targets = [{ provider = "gemini", model = "gemini-2.5-flash" }]
'''


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelux_local", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_spec_example_loads_and_routes(tmp_path):
    d = write_config(tmp_path, {"modelux.toml": SPEC_SERVER, "agent-v2.toml": SPEC_AGENT,
                                "support-v1.toml": SPEC_AGENT})
    cs = load_dir(d)
    assert cs.default_name == "agent-v2" and set(cs.routing) == {"agent-v2", "support-v1"}
    from modelux_local.routing import Router
    r = Router(cs)
    plan = r.resolve("@planner", {"agent": "x"})
    assert [t.label for t in plan.targets] == ["anthropic/claude-sonnet-4-5", "openai/gpt-4.1"]
    assert plan.retries.attempts == 2 and plan.targets[0].timeout_s == 60
    assert r.resolve("@planner", {"agent": "support-bot"}).config == "support-v1"
    assert r.resolve("claude-haiku-4-5", {}).targets[0].provider == "anthropic"
    assert r.resolve("gemini/gemini-2.5-pro", {}).targets[0].label == "gemini/gemini-2.5-pro"
    out = cli("config", "check", str(d))
    assert out.returncode == 0 and "@agent-v2 (default)" in out.stdout


@pytest.mark.parametrize("files,line,needle", [
    ({"a.toml": '[aliases.x]\ntargets = [{ provider = "mock", model = "m" }]\nstrategyy = "fallback"\n'}, 3,
     "unknown key 'strategyy' in [aliases.x]"),
    ({"a.toml": '[aliases.x]\ntargets = [{ provider = "mock", modle = "m" }]\n'}, 2, "unknown key 'modle'"),
    ({"a.toml": '[aliases.x]\ntargets = [{ provider = "nope", model = "m" }]\n'}, 2, "unknown provider 'nope'"),
    ({"a.toml": '[aliases.x]\ntargets = [{ provider = "mock", model = "m" ]\n'}, 2, "invalid TOML"),
    ({"a.toml": '[aliases.x]\nstrategy = "roundrobin"\ntargets = [{ provider = "mock", model = "m" }]\n'}, 2,
     "strategy"),
    ({"modelux.toml": '[providers.mock]\nkind = "mock"\n\n[server]\nport = "x"\n'}, 5, "port"),
    ({"modelux.toml": '[providers.mock]\nkind = "mock"\n\n[[webhooks]]\nurl = "http://x"\n'
                      'events = ["run.aborted", "budget.warn"]\n'}, 6, "Invalid enum value 'budget.warn'"),
])
def test_mistakes_name_file_line_and_key(tmp_path, files, line, needle):
    base = {"modelux.toml": '[providers.mock]\nkind = "mock"\n',
            "a.toml": '[aliases.x]\ntargets = [{ provider = "mock", model = "m" }]\n'}
    d = write_config(tmp_path, {**base, **files})
    with pytest.raises(ConfigError) as e:
        load_dir(d)
    assert needle in e.value.message and e.value.line == line, e.value.message
    out = cli("config", "check", str(d))
    assert out.returncode == 1 and f":{line}: " in out.stderr and needle in out.stderr


def test_serve_refuses_bad_config_and_remote_host(tmp_path):
    d = write_config(tmp_path / "bad", {"modelux.toml": "[providers.mock]\nkind = 'mock'\nbogus = 1\n",
                                        "a.toml": ""})
    out = cli("serve", "--headless", "--config-dir", str(d), "--data-dir", str(tmp_path / "data"))
    assert out.returncode == 1 and "unknown key 'bogus'" in out.stderr and "modelux.toml:3" in out.stderr
    out = cli("serve", "--headless", "--host", "0.0.0.0", "--data-dir", str(tmp_path / "data"))
    assert out.returncode == 2 and "--allow-remote" in out.stderr and "MODELUX_TOKEN" in out.stderr


def test_serve_says_so_when_the_port_is_taken(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = cli("serve", "--headless", "--port", str(port), "--data-dir", str(tmp_path / "data"))
    assert out.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in out.stderr and "in use" in out.stderr


def test_token_required_when_set(tmp_path):
    import httpx
    with ServerProcess(tmp_path / "d", env={"MODELUX_TOKEN": "tok-123"}) as srv:
        body = {"model": "@executor", "messages": [{"role": "user", "content": "hi"}]}
        assert httpx.post(srv.base_url + "/chat/completions", json=body).status_code == 401
        ok = httpx.post(srv.base_url + "/chat/completions", json=body, headers={"authorization": "Bearer tok-123"})
        assert ok.status_code == 200
        assert srv.get("/healthz").status_code == 200
        m = httpx.post(srv.base_url + "/messages", json={"model": "@executor", "max_tokens": 10,
                                                          "messages": [{"role": "user", "content": "hi"}]})
        assert m.status_code == 401 and m.json()["type"] == "error"  # Anthropic's shape on /v1/messages
        assert m.json()["error"]["type"] == "authentication_error"
        ok = httpx.post(srv.base_url + "/messages", headers={"x-api-key": "tok-123"}, json={
            "model": "@executor", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})
        assert ok.status_code == 200 and ok.json()["type"] == "message"


def test_init_writes_a_starter_that_serves(tmp_path):
    d = tmp_path / "cfg"
    out = cli("init", str(d))
    assert out.returncode == 0 and "serve --config-dir" in out.stdout
    assert cli("init", str(d)).returncode == 1  # never overwrites silently
    cs = load_dir(d)
    assert cs.default_name == "agent-v2" and "agent-v3" in cs.routing
    listing = cli("config", "list", "--config-dir", str(d)).stdout
    assert "@agent-v2" in listing and "default" in listing
    shown = cli("config", "show", "@agent-v3", "--config-dir", str(d))
    assert shown.returncode == 0 and "mock/mock-small" in shown.stdout
    assert cli("config", "show", "@nope", "--config-dir", str(d)).returncode == 1
    with ServerProcess(tmp_path / "data", d) as srv:
        import openai
        c = openai.OpenAI(base_url=srv.base_url, api_key="x")
        assert c.chat.completions.create(model="@planner", messages=[{"role": "user", "content": "hi"}]).model == "mock-large"


def test_config_list_shows_a_promoted_serving_version(tmp_path):
    d = tmp_path / "cfg"
    assert cli("init", str(d)).returncode == 0
    paths = ["--config-dir", str(d), "--data-dir", str(tmp_path / "data")]
    assert cli("config", "promote", "@agent-v3", "--force", "--reason", "t", *paths).returncode == 0
    out = cli("config", "list", *paths).stdout
    line = next(line for line in out.splitlines() if line.startswith("@agent-v2"))
    assert "promoted v2" in line and load_dir(d).versions["agent-v3"] in line


def test_unknown_provider_in_a_later_alias_names_that_alias_line(tmp_path):
    d = write_config(tmp_path, {
        "modelux.toml": '[providers.mock]\nkind = "mock"\n',
        "a.toml": '[aliases.x]\ntargets = [{ provider = "mock", model = "m" }]\n\n'
                  '[aliases.y]\ntargets = [\n  { provider = "mock", model = "m" },\n  { provider = "gone", model = "m" },\n]\n'})
    with pytest.raises(ConfigError) as e:
        load_dir(d)
    assert "alias @y: unknown provider 'gone'" in e.value.message and e.value.line == 7


def test_type_errors_name_the_alias_not_a_placeholder(tmp_path):
    d = write_config(tmp_path, {"modelux.toml": '[providers.mock]\nkind = "mock"\n',
                                "a.toml": '[aliases.x]\ntargets = [{ provider = "mock", model = "m" }]\n\n'
                                          '[aliases.planner]\ntargets = [{ provider = "mock", model = "m" }]\n'
                                          'retries = "twice"\n'})
    with pytest.raises(ConfigError) as e:
        load_dir(d)
    assert "aliases.planner.retries" in e.value.message and "[...]" not in e.value.message and e.value.line == 6


def test_allow_remote_with_a_token_serves_on_all_interfaces(tmp_path):
    import openai

    from .conftest import client_for
    env = {"MODELUX_TOKEN": "remote-tok-77"}
    with ServerProcess(tmp_path / "d", env=env, extra_args=["--host", "0.0.0.0", "--allow-remote"]) as srv:
        assert "http://0.0.0.0:" in srv.log()  # bound to every interface (this test reaches it on loopback)
        r = client_for(srv, api_key="remote-tok-77").chat.completions.create(
            model="@executor", messages=[{"role": "user", "content": "hi"}])
        assert r.choices[0].message.content
        with pytest.raises(openai.AuthenticationError):
            client_for(srv, api_key="wrong").chat.completions.create(
                model="@executor", messages=[{"role": "user", "content": "hi"}])
