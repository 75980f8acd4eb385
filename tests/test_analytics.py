"""`analytics --group-by TAG` against a hand sum of the calls' own records (real server, SDK)."""
from __future__ import annotations

import uuid

import openai
import pytest

from modelux_local.core.stats import percentile

from ._readside import CONFIG, age_run, call, cli_json
from .conftest import client_for

# agent -> calls per run (aliases); None: runs without an agent tag
PLAN = {
    "alpha": [["@planner", "@executor"], ["@executor", "@executor", "@broken"], ["@planner"]],
    "beta": [["@executor"] * 4],
    None: [["@executor", "@planner"]],
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from .server import ServerProcess, write_config

    base = tmp_path_factory.mktemp("analytics")
    s = ServerProcess(base / "data", write_config(base / "config", CONFIG))
    s.start()
    client = client_for(s)
    made: dict = {}
    for agent, runs in PLAN.items():
        for aliases in runs:
            run_id = f"an-{uuid.uuid4().hex[:8]}"
            tags = {"run_id": run_id, "team": "search"} | ({"agent": agent} if agent else {})
            for i, alias in enumerate(aliases):
                if alias == "@broken":
                    with pytest.raises(openai.APIStatusError) as e:
                        call(client, alias, "fail", **tags)
                    cid = e.value.response.headers["x-mlx-call-id"]
                else:
                    cid, _ = call(client, alias, f"{agent} step {i}", **tags)
                made.setdefault(agent, {}).setdefault(run_id, []).append(cid)
    yield s, made
    s.stop()


def _hand_sum(server, runs: dict) -> dict:
    calls = [server.get(f"/mlx/v1/calls/{c}").json() for ids in runs.values() for c in ids]
    lat = sorted(c["latency_ms"] for c in calls)
    return {"runs": len(runs), "calls": len(calls), "cost_usd": sum(c["cost_usd"] or 0 for c in calls),
            "errors": sum(c["status"] == "error" for c in calls),
            "p50_ms": percentile(lat, 50), "p95_ms": percentile(lat, 95)}


def test_group_by_agent_matches_a_hand_sum(world):
    server, made = world
    doc = cli_json(server, "analytics", "--group-by", "agent")
    assert doc == server.get("/mlx/v1/analytics", params={"group_by": "agent"}).json()
    groups = {g["value"]: g for g in doc["groups"]}
    assert set(groups) == {"alpha", "beta", None}
    for agent, runs in made.items():
        want, got = _hand_sum(server, runs), groups[agent]
        assert (got["runs"], got["calls"], got["errors"]) == (want["runs"], want["calls"], want["errors"]), agent
        assert got["cost_usd"] == pytest.approx(want["cost_usd"], abs=1e-12)
        assert got["error_rate"] == pytest.approx(want["errors"] / want["calls"], abs=1e-6)
        assert got["p50_ms"] == pytest.approx(want["p50_ms"], abs=0.02)
        assert got["p95_ms"] == pytest.approx(want["p95_ms"], abs=0.02)
    assert groups["alpha"]["error_rate"] == pytest.approx(1 / 6, abs=1e-6)
    assert [g["value"] for g in doc["groups"]][:1] == ["alpha"]  # most expensive first


def test_any_tag_key_since_and_human_table(world):
    server, made = world
    by_team = cli_json(server, "analytics", "--group-by", "team")["groups"]
    assert [(g["value"], g["runs"], g["calls"]) for g in by_team] == [("search", 5, 12)]
    assert cli_json(server, "analytics", "--group-by", "nosuchtag")["groups"][0]["value"] is None
    table = server.cli("analytics", "--group-by", "agent").stdout.splitlines()
    assert table[0].split() == ["AGENT", "RUNS", "CALLS", "COST", "COST/RUN", "P50", "P95", "ERROR", "RATE"]
    none_row = next(line for line in table if line.startswith("(none)")).split()
    assert none_row[1:3] == ["1", "2"] and none_row[-1] == "0.00%"
    assert "exact percentiles" in table[-1]
    r = server.get("/mlx/v1/analytics")
    assert r.status_code == 400 and r.json()["error"]["param"] == "group_by"


def test_since_leaves_out_runs_started_before_the_window(world):
    """Last of the `world` tests: it adds a run of a new team, two days old, next to a recent one."""
    server, _ = world
    client = client_for(server)
    old, new = f"an-old-{uuid.uuid4().hex[:6]}", f"an-new-{uuid.uuid4().hex[:6]}"
    call(client, "@planner", "an old step", run_id=old, team="since")
    for _ in range(2):
        call(client, "@executor", "a new step", run_id=new, team="since")
    age_run(server, old, hours=48)

    def team(*a):
        groups = cli_json(server, "analytics", "--group-by", "team", *a)["groups"]
        return next((g["runs"], g["calls"]) for g in groups if g["value"] == "since")
    assert team() == (2, 3)
    assert team("--since", "24h") == (1, 2)
    api = server.get("/mlx/v1/analytics", params={"group_by": "team", "since": "24h"}).json()["groups"]
    assert [(g["runs"], g["calls"]) for g in api if g["value"] == "since"] == [(1, 2)]
