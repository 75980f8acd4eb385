"""`trace RUN_ID`: the run as a tree with attempts nested, through a real server whose first
target always fails (one retry, then a fallback that succeeds)."""
from __future__ import annotations

import uuid

import pytest

from ._readside import CONFIG, call, cli_json
from .conftest import client_for


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from .server import ServerProcess, write_config

    base = tmp_path_factory.mktemp("trace")
    s = ServerProcess(base / "data", write_config(base / "config", CONFIG))
    s.start()
    client = client_for(s)
    run_id = f"trace-{uuid.uuid4().hex[:8]}"
    ids = [call(client, "@planner", "plan the migration", run_id=run_id, agent="migrator")[0],
           call(client, "@flaky", "run step one", run_id=run_id, agent="migrator")[0],
           call(client, "@executor", "report", stream=True, run_id=run_id, agent="migrator")[0]]
    yield s, run_id, ids
    s.stop()


def test_trace_json_is_the_run_with_steps_and_attempts(run):
    server, run_id, ids = run
    doc = cli_json(server, "trace", run_id)
    assert doc == server.get(f"/mlx/v1/runs/{run_id}").json()
    assert [s["call_id"] for s in doc["steps"]] == ids and [s["seq"] for s in doc["steps"]] == [1, 2, 3]
    flaky = doc["steps"][1]
    assert (flaky["alias"], flaky["provider"], flaky["model"], flaky["status"]) == ("@flaky", "mock", "mock-small", "ok")
    assert [(a["model"], a["status"], a["http_status"], a["next"]) for a in flaky["attempts"]] == [
        ("mock-broken", "error", 503, "retry"), ("mock-broken", "error", 503, "fallback"),
        ("mock-small", "ok", 200, None)]
    assert doc["retries"] == 2 and doc["calls"] == 3 and doc["tags"]["agent"] == "migrator"


def test_trace_tree_shows_calls_in_order_with_attempts_nested(run):
    server, run_id, ids = run
    doc = cli_json(server, "trace", run_id)
    out = server.cli("trace", run_id).stdout
    lines = out.splitlines()
    assert lines[0].startswith(f"run {run_id}  running  agent=migrator")
    assert f"3 calls · {doc['input_tokens']:,} in / {doc['output_tokens']:,} out tokens" in lines[1]
    assert "anomalies: none" in out
    steps = [line for line in lines if line.startswith(("├─ #", "└─ #"))]
    assert [s.split()[1:4] for s in steps] == [["#1", "@planner", "->"], ["#2", "@flaky", "->"], ["#3", "@executor", "->"]]
    assert "mock/mock-large  ok 200" in steps[0] and "mock/mock-small  ok 200" in steps[1] and "stream ttft" in steps[2]
    i = lines.index(next(line for line in lines if line.startswith("├─ #2")))
    nested = lines[i + 1:i + 5]
    assert "routing: @t" in nested[0] and "fallback -> mock/mock-broken, mock/mock-small" in nested[0]
    assert nested[1].startswith("│    ├─ attempt 1: mock/mock-broken  error 503") and nested[1].endswith("-> retry")
    assert "attempt 2: mock/mock-broken  error 503" in nested[2] and nested[2].endswith("-> fallback")
    assert nested[3].startswith("│    └─ attempt 3: mock/mock-small  ok 200")
    usd = doc["steps"][0]["cost_usd"]
    assert usd > 0 and (f"${usd:.4f}" if usd >= 1e-4 else f"${usd:.6f}") in steps[0]  # README: small costs get 6 places


def test_unknown_run_is_a_clear_error(run):
    server, _, _ = run
    r = server.cli("trace", "no-such-run", check=False)
    assert r.returncode == 1 and "no run 'no-such-run'" in r.stderr and r.stdout == ""
    assert server.get("/mlx/v1/runs/no-such-run").status_code == 404
