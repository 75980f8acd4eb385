"""Abort and outcome through the API and the CLI, against the real server (embedded default)."""
from __future__ import annotations

import json
import time

import openai
import pytest

from .conftest import client_for


def _call(client, run_id: str, content: str = "one step of the task"):
    return client.chat.completions.create(model="@executor", messages=[{"role": "user", "content": content}],
                                          extra_body={"mlx:tags": {"run_id": run_id, "agent": "ctl"}})


def _refusal(client, run_id: str) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as ei:
        _call(client, run_id)
    return ei.value


def test_abort_via_api_refuses_the_next_call(default_server):
    client = client_for(default_server)
    _call(client, "ctl-api-abort")
    # as README's curl sends it: a JSON body without a JSON content type
    r = default_server.post("/mlx/v1/runs/ctl-api-abort/abort", content=b'{"reason": "looping on the same tool"}',
                            headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 204, r.text
    e = _refusal(client, "ctl-api-abort")
    assert e.status_code == 402
    assert e.body["code"] == "run_aborted"
    assert "looping on the same tool" in e.body["message"]
    run = default_server.get("/mlx/v1/runs/ctl-api-abort").json()
    assert run["status"] == "aborted"
    assert run["abort_reason"] == "looping on the same tool"
    assert run["steps"][-1]["status"] == "aborted" and run["steps"][-1]["http_status"] == 402
    assert run["steps"][-1]["decision"]["guards"][0]["code"] == "run_aborted"


def test_abort_via_cli_reaches_the_running_server_within_a_second(default_server):
    client = client_for(default_server)
    _call(client, "ctl-cli-abort")
    out = default_server.cli("abort", "ctl-cli-abort", "--reason", "operator stop").stdout
    assert "aborted" in out
    t0 = time.monotonic()
    while True:
        try:
            _call(client, "ctl-cli-abort")
        except openai.APIStatusError as e:
            assert e.status_code == 402 and e.body["code"] == "run_aborted"
            assert "operator stop" in e.body["message"]
            break
        assert time.monotonic() - t0 < 3, "the server still forwards calls of a run the CLI aborted"
    # README: "within about a second". The server polls every 0.5 s; 1.5 s leaves a second of slack
    assert time.monotonic() - t0 < 1.5
    assert default_server.get("/mlx/v1/runs/ctl-cli-abort").json()["status"] == "aborted"


def test_outcome_via_api_completes_the_run_and_a_new_call_reopens_it(default_server):
    client = client_for(default_server)
    _call(client, "ctl-outcome-api")
    r = default_server.post("/mlx/v1/runs/ctl-outcome-api/outcome", json={"success": True, "score": 0.9, "note": "ok"})
    assert r.status_code == 204, r.text
    run = default_server.get("/mlx/v1/runs/ctl-outcome-api").json()
    assert run["outcome"] == {"success": True, "score": 0.9, "note": "ok"}
    assert run["status"] == "completed" and run["ended_at"] is not None
    _call(client, "ctl-outcome-api", "one more step")
    run = default_server.get("/mlx/v1/runs/ctl-outcome-api").json()
    assert run["status"] == "running" and run["calls"] == 2
    assert run["outcome"]["success"] is True


def test_outcome_via_cli(default_server):
    client = client_for(default_server)
    _call(client, "ctl-outcome-cli")
    out = default_server.cli("outcome", "ctl-outcome-cli", "--failure", "--score", "0.25", "--note", "wrong answer")
    assert "failure" in out.stdout
    run = default_server.get("/mlx/v1/runs/ctl-outcome-cli").json()
    assert run["outcome"] == {"success": False, "score": 0.25, "note": "wrong answer"}
    assert run["status"] == "completed"


def test_unknown_runs_and_bad_bodies(default_server):
    assert default_server.post("/mlx/v1/runs/no-such-run/abort", json={}).status_code == 404
    r = default_server.post("/mlx/v1/runs/no-such-run/outcome", json={"success": True})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = default_server.post("/mlx/v1/runs/whatever/outcome", json={"succes": True})
    assert r.status_code == 400 and "success" in r.json()["error"]["message"]
    assert default_server.cli("abort", "no-such-run", check=False).returncode == 1
    assert default_server.cli("outcome", "no-such-run", "--success", check=False).returncode == 1
    r = default_server.cli("outcome", "x", check=False)  # --success or --failure is required
    assert r.returncode == 2


def test_webhooks_cli_lists_events_without_subscribers(default_server):
    doc = json.loads(default_server.cli("webhooks", "--json").stdout)
    names = {(e["event"], e["run_id"]) for e in doc["events"]}
    assert ("run.aborted", "ctl-api-abort") in names
    aborted = next(e for e in doc["events"] if e["run_id"] == "ctl-api-abort")
    assert aborted["detail"]["by"] == "api" and aborted["deliveries"] == []
