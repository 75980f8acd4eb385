"""Runs list and totals through the real server: the SDK makes the calls, the API and the CLI
must agree with sums computed here from each call's own record and the SDK's usage."""
from __future__ import annotations

import uuid

import apsw
import openai
import pytest

from modelux_local.core.stats import percentile

from ._readside import CONFIG, age_run, call, cli_json
from .conftest import client_for


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from .server import ServerProcess, write_config

    base = tmp_path_factory.mktemp("runs")
    s = ServerProcess(base / "data", write_config(base / "config", CONFIG))
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    return client_for(server)


def _uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_run_totals_match_the_sum_of_its_calls(server, client):
    run_id, suite = _uid("run"), _uid("suite")
    ids, sdk_in, sdk_out = [], 0, 0
    for i, alias in enumerate(["@planner", "@executor", "@executor", "@planner"]):
        cid, resp = call(client, alias, f"step {i}: check the flight prices to Oslo", run_id=run_id, agent="tot", suite=suite)
        ids.append(cid)
        sdk_in, sdk_out = sdk_in + resp.usage.prompt_tokens, sdk_out + resp.usage.completion_tokens
    cid, streamed = call(client, "@executor", "summarise the flight prices", stream=True, run_id=run_id, agent="tot", suite=suite)
    ids.append(cid)
    sdk_in, sdk_out = sdk_in + streamed["usage"].prompt_tokens, sdk_out + streamed["usage"].completion_tokens
    with pytest.raises(openai.APIStatusError) as failed:  # an error call counts in calls and errors
        client.chat.completions.create(model="@broken", messages=[{"role": "user", "content": "x"}],
                                       extra_body={"mlx:tags": {"run_id": run_id, "agent": "tot", "suite": suite}})
    ids.append(failed.value.response.headers["x-mlx-call-id"])

    calls = [server.get(f"/mlx/v1/calls/{c}").json() for c in ids]
    assert [c["seq"] for c in calls] == [1, 2, 3, 4, 5, 6]
    run = server.get(f"/mlx/v1/runs/{run_id}").json()
    assert run["calls"] == 6 and run["errors"] == 1
    assert run["input_tokens"] == sdk_in == sum(c["input_tokens"] or 0 for c in calls)
    assert run["output_tokens"] == sdk_out == sum(c["output_tokens"] or 0 for c in calls)
    assert run["cost_usd"] == pytest.approx(sum(c["cost_usd"] or 0 for c in calls), abs=1e-12)
    assert run["cost_usd"] > 0
    lat = sorted(c["latency_ms"] for c in calls)
    assert run["p50_ms"] == pytest.approx(percentile(lat, 50), abs=0.02)
    assert run["p95_ms"] == pytest.approx(percentile(lat, 95), abs=0.02)
    assert [s["call_id"] for s in run["steps"]] == ids

    listed = cli_json(server, "runs", "--tag", f"suite={suite}")["runs"]
    assert len(listed) == 1
    api = server.get("/mlx/v1/runs", params={"tag": f"suite:{suite}"}).json()["runs"]
    summary = {k: v for k, v in run.items() if k != "steps"}
    assert listed[0] == api[0] == summary


def test_list_filters_sort_limit_and_status(server, client):
    suite = _uid("suite")
    sizes = {"small": 1, "big": 3, "mid": 2}
    runs = {}
    for name, n in sizes.items():
        runs[name] = _uid(name)
        for i in range(n):
            call(client, "@planner" if name == "mid" else "@executor", f"{name} {i}", run_id=runs[name],
                 agent=f"agent-{name}", suite=suite)

    by_calls = cli_json(server, "runs", "--tag", f"suite={suite}", "--sort", "calls")["runs"]
    assert [r["run_id"] for r in by_calls] == [runs["big"], runs["mid"], runs["small"]]
    newest = cli_json(server, "runs", "--tag", f"suite={suite}", "--limit", "1")["runs"]
    assert [r["run_id"] for r in newest] == [runs["mid"]]  # made last
    by_cost = server.get("/mlx/v1/runs", params={"tag": f"suite:{suite}", "sort": "cost"}).json()["runs"]
    assert by_cost[0]["run_id"] == runs["mid"]  # @planner is 12x the price of @executor
    assert [r["cost_usd"] for r in by_cost] == sorted((r["cost_usd"] for r in by_cost), reverse=True)
    both = server.get("/mlx/v1/runs", params=[("tag", f"suite:{suite}"), ("tag", "agent:agent-big")]).json()["runs"]
    assert [r["run_id"] for r in both] == [runs["big"]]
    assert {r["run_id"] for r in cli_json(server, "runs", "--tag", f"suite={suite}", "--status", "running")["runs"]} \
        == set(runs.values())
    assert cli_json(server, "runs", "--tag", f"suite={suite}", "--status", "aborted")["runs"] == []

    table = server.cli("runs", "--tag", f"suite={suite}").stdout
    header, *lines = table.splitlines()
    assert header.split()[:6] == ["STATUS", "RUN_ID", "AGENT", "CALLS", "TOKENS", "COST"]
    big = next(line for line in lines if runs["big"] in line).split()
    assert big[0] == "running" and big[2] == "agent-big" and big[3] == "3" and big[5].startswith("$0.0")


def test_since_leaves_out_runs_started_before_the_window(server, client):
    suite = _uid("suite")
    old, new = _uid("old"), _uid("new")
    for run in (old, new):
        call(client, "@executor", "a step", run_id=run, suite=suite)
    age_run(server, old, hours=30)
    ids = lambda *a: [r["run_id"] for r in cli_json(server, "runs", "--tag", f"suite={suite}", *a)["runs"]]  # noqa: E731
    assert ids() == [new, old]
    assert ids("--since", "24h") == [new]
    assert ids("--since", "2d") == [new, old]
    api = server.get("/mlx/v1/runs", params={"tag": f"suite:{suite}", "since": "24h"}).json()["runs"]
    assert [r["run_id"] for r in api] == [new]


def test_replay_runs_are_left_out_unless_asked(server, client):
    suite = _uid("suite")
    live = _uid("live")
    call(client, "@executor", "live call", run_id=live, suite=suite)
    # a run written by a replay (the replay room's writer sets runs.replay_id)
    conn = apsw.Connection(str(server.db_path))
    conn.set_busy_timeout(5000)
    conn.execute("INSERT INTO runs (run_id, tags, started_at, last_at, calls, replay_id) VALUES (?, ?, ?, ?, 1, 'rp_1')",
                 (_uid("replayed"), f'{{"suite": "{suite}"}}', 1.0e9, 1.0e9))
    conn.close()
    assert [r["run_id"] for r in cli_json(server, "runs", "--tag", f"suite={suite}")["runs"]] == [live]
    assert len(cli_json(server, "runs", "--tag", f"suite={suite}", "--replays")["runs"]) == 2
    api = server.get("/mlx/v1/runs", params={"tag": f"suite:{suite}", "include_replays": "1"}).json()["runs"]
    assert {r["replay_id"] for r in api} == {None, "rp_1"}


def test_bad_parameters_are_clear_errors(server):
    r = server.get("/mlx/v1/runs", params={"sort": "price"})
    assert r.status_code == 400 and "unknown sort 'price'" in r.json()["error"]["message"]
    r = server.get("/mlx/v1/runs", params={"since": "yesterday"})
    assert r.status_code == 400 and "30m, 24h or 7d" in r.json()["error"]["message"]
    r = server.get("/mlx/v1/runs", params={"limit": "lots"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "limit"
    bad = server.cli("runs", "--since", "3x", check=False)
    assert bad.returncode == 2 and "invalid duration '3x'" in bad.stderr
    bad = server.cli("runs", "--tag", "novalue", check=False)
    assert bad.returncode == 2 and "key=value" in bad.stderr
