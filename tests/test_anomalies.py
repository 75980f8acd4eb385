"""Anomalies flagged while runs happen (loop, retry storm, cost outlier) and the run lifecycle's
idle completion, each seen in the run summary and announced by its webhook."""
from __future__ import annotations

import time

import openai
import pytest

from .conftest import client_for
from .fakes.webhook_receiver import WebhookReceiver
from .server import ServerProcess, write_config

MODELUX = """
[routing]
default = "default"

[providers.mock]
kind = "mock"

[providers.mock.models.flaky]
error_rate = 1.0

[anomalies]
loop_repeats = 3
retry_storm = 3
retry_window_s = 60

[runs]
idle_timeout_s = 0.6

[[webhooks]]
url = "{url}"
"""
ROUTING = """
[aliases.executor]
targets = [{ provider = "mock", model = "mock-small" }]

[aliases.flaky]
targets = [{ provider = "mock", model = "flaky" }]
retries = { attempts = 1, backoff_ms = 1 }
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("anomalies")
    receiver = WebhookReceiver().start()
    cdir = write_config(d / "config", {"modelux.toml": MODELUX.format(url=receiver.url), "default.toml": ROUTING})
    server = ServerProcess(d / "data", cdir).start()
    yield server, receiver
    server.stop()
    receiver.stop()


def _ask(client, run_id: str, messages: list, agent: str = "looper", model: str = "@executor"):
    return client.chat.completions.create(model=model, messages=messages,
                                          extra_body={"mlx:tags": {"run_id": run_id, "agent": agent}})


def _anomalies(server, run_id: str) -> list[str]:
    return server.get(f"/mlx/v1/runs/{run_id}").json()["anomalies"]


def _for_run(receiver, event: str, run_id: str) -> list[dict]:
    return [e for e in receiver.events(event) if e["run"]["run_id"] == run_id]


def test_the_same_prompt_repeated_flags_a_loop_once(env):
    server, receiver = env
    client = client_for(server)
    same = [{"role": "system", "content": "You are a tool-using agent."},
            {"role": "user", "content": "Check the inventory for item 42."}]
    spaced = [{"content": "You are a  tool-using agent. ", "role": "system"},  # other key order and whitespace
              {"role": "user", "content": "Check the inventory\nfor item 42."}]
    _ask(client, "loop-run", same)
    _ask(client, "loop-run", spaced)
    assert _anomalies(server, "loop-run") == []
    _ask(client, "loop-run", same)  # the 3rd time
    assert _anomalies(server, "loop-run") == ["loop"]
    _ask(client, "loop-run", same)
    assert _anomalies(server, "loop-run") == ["loop"]
    hook = receiver.wait_for(lambda r: _for_run(r, "anomaly.loop", "loop-run"), timeout=5)
    assert len(hook) == 1 and hook[0]["detail"]["repeats"] == 3 and hook[0]["run"]["anomalies"] == ["loop"]


def test_different_prompts_are_not_a_loop(env):
    server, _ = env
    client = client_for(server)
    for i in range(4):
        _ask(client, "no-loop-run", [{"role": "user", "content": f"step {i} of the plan"}])
    assert _anomalies(server, "no-loop-run") == []


def test_failed_attempts_in_a_burst_flag_a_retry_storm(env):
    server, receiver = env
    client = client_for(server)
    for i in range(2):  # each call: 1 try + 1 retry, both failing -> 2, then 4 failed attempts (>= 3)
        with pytest.raises(openai.APIStatusError) as ei:
            _ask(client, "storm-run", [{"role": "user", "content": "fetch the page"}], model="@flaky")
        assert ei.value.status_code == 502
        assert _anomalies(server, "storm-run") == ([] if i == 0 else ["retry_storm"]), i
    hook = receiver.wait_for(lambda r: _for_run(r, "anomaly.retry_storm", "storm-run"), timeout=5)
    assert hook[0]["detail"]["failed_attempts"] >= 3


def test_an_idle_run_completes_and_fires_run_completed(env):
    server, receiver = env
    client = client_for(server)
    _ask(client, "idle-run", [{"role": "user", "content": "only step"}])
    hook = receiver.wait_for(lambda r: _for_run(r, "run.completed", "idle-run"), timeout=5)
    assert hook[0]["detail"]["reason"] == "idle" and hook[0]["run"]["status"] == "completed"
    run = server.get("/mlx/v1/runs/idle-run").json()
    assert run["status"] == "completed" and run["ended_at"]


def test_a_run_far_above_its_agents_history_flags_cost(env):
    server, receiver = env
    client = client_for(server)
    for i in range(20):  # the agent's history: 20 runs of one call each
        _ask(client, f"hist-{i}", [{"role": "user", "content": f"usual task {i}"}], agent="steady")
    receiver.wait_for(lambda r: sum(e["run"]["run_id"].startswith("hist-") for e in r.events("run.completed")) == 20,
                      timeout=10)
    time.sleep(2.5)  # the history refresh follows completions (at most once a second)
    run_id = "outlier"
    for i in range(3):  # above the p95 (1) and twice the median (1) of the history from the 3rd call on
        _ask(client, run_id, [{"role": "user", "content": f"unusual step {i}"}], agent="steady")
        # flagged on the very call that crosses the threshold, not before and not later
        assert _anomalies(server, run_id) == ([] if i < 2 else ["cost"]), i
    hook = receiver.wait_for(lambda r: _for_run(r, "anomaly.cost", run_id), timeout=5)
    assert hook[0]["detail"]["history_runs"] >= 20 and "calls" in hook[0]["detail"]["over"]


def test_loop_counts_survive_a_server_restart(tmp_path):
    """Two repeats before a restart and one after still make loop_repeats = 3."""
    receiver = WebhookReceiver().start()
    cdir = write_config(tmp_path / "config", {"modelux.toml": MODELUX.format(url=receiver.url).replace(
        "idle_timeout_s = 0.6", "idle_timeout_s = 300"), "default.toml": ROUTING})
    msgs = [{"role": "user", "content": "same thing again after a restart"}]
    try:
        for round_ in (2, 1):
            with ServerProcess(tmp_path / "data", cdir) as server:
                client = client_for(server)
                for _ in range(round_):
                    _ask(client, "loop-restart", msgs)
                anomalies = server.get("/mlx/v1/runs/loop-restart").json()["anomalies"]
        assert anomalies == ["loop"]
    finally:
        receiver.stop()
