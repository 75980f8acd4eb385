"""Every refusal of the promotion gate, promote without --replay, rollback to a version whose file
is gone, and the config history endpoint: a real server, the CLI, replays of recorded runs."""
from __future__ import annotations

import json

import pytest

from .server import ServerProcess
from .test_promote import served_by
from .test_replay_support import make_config_dir, record_history

# Two more mock models: one slow (p95 latency rises), one that always fails (error rate rises).
MODELS = """
[providers.mock.models.mock-slow]
latency_ms = 600
output_tokens = 48

[providers.mock.models.mock-failing]
latency_ms = 5
error_rate = 1.0
error_status = 503

[prices."mock/mock-slow"]
input = 0.2
output = 0.8

[prices."mock/mock-failing"]
input = 0.2
output = 0.8
"""


def candidate(executor: str) -> str:
    return "".join(f'[aliases.{a}]\ntargets = [{{ provider = "mock", model = "{m}" }}]\n' for a, m in
                   [("planner", "mock-pro"), ("executor", executor), ("summarizer", "mock-lite"),
                    ("judge", "mock-pro"), ("embedder", "mock-embed")])


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    base = tmp_path_factory.mktemp("gate")
    cdir = make_config_dir(base / "config")
    toml = cdir / "modelux.toml"
    toml.write_text(toml.read_text().replace("\n# The gate", MODELS + "\n# The gate"))
    (cdir / "agent-slowexec.toml").write_text(candidate("mock-slow"))
    (cdir / "agent-failing.toml").write_text(candidate("mock-failing"))
    s = ServerProcess(base / "data", cdir, env={"USER": "bob"})
    s.start()
    s.history = record_history(s, runs=3)
    yield s
    s.stop()


def simulate(srv, *args: str) -> dict:
    return json.loads(srv.cli("simulate", *args, "--json").stdout)


def refused(srv, *args: str) -> str:
    r = srv.cli("config", "promote", *args, check=False)
    assert r.returncode == 4, (r.returncode, r.stdout, r.stderr)
    return r.stderr


def history(srv) -> list[dict]:
    return json.loads(srv.cli("config", "history", "--json").stdout)["history"]


def test_the_gate_names_the_p95_and_error_rate_thresholds(srv):
    slow = simulate(srv, "--config=@agent-slowexec")
    assert slow["delta"]["p95_latency_s"] > 0.25
    err = refused(srv, "@agent-slowexec", "--replay", slow["replay_id"])
    assert "p95 latency rises" in err and "max_p95_latency_increase_pct = 25" in err
    failing = simulate(srv, "--config=@agent-failing")
    assert failing["delta"]["error_rate"] > 0.01
    err = refused(srv, "@agent-failing", "--replay", failing["replay_id"])
    assert "error rate rises" in err and "max_error_rate_increase_pp = 1" in err
    assert served_by(srv) == "mock/mock-pro" and history(srv) == []


def test_partial_and_reprice_replays_fail_the_gate(srv):
    partial = simulate(srv, "--config=@agent-v3", "--max-cost", "0.000001", "--concurrency", "1")
    assert partial["partial"]
    err = refused(srv, "@agent-v3", "--replay", partial["replay_id"])
    assert f"replay {partial['replay_id']} is partial" in err and "max-cost" in err
    reprice = simulate(srv, "--config=@agent-v3", "--mode", "reprice")
    err = refused(srv, "@agent-v3", "--replay", reprice["replay_id"])
    assert "p95 latency not measured" in err and "reprice mode" in err
    assert "error rate not measured" in err and "agent success not measured" in err
    # without --replay the latest replay of the candidate is the evidence: here the reprice one
    err = refused(srv, "@agent-v3")
    assert f"replay {reprice['replay_id']}" in err and "reprice mode" in err
    assert "no replay of this candidate" in refused(srv, "@agent-v2")
    assert served_by(srv) == "mock/mock-pro" and history(srv) == []


def test_a_candidate_changed_since_its_replay_is_refused(srv):
    rep = simulate(srv, "--config=@agent-v3")
    v3 = srv.config_dir / "agent-v3.toml"
    original = v3.read_text()
    v3.write_text(original.replace("candidate:", "candidate (edited after its replay):"))
    try:
        err = refused(srv, "@agent-v3", "--replay", rep["replay_id"])
        assert f"@agent-v3 changed since replay {rep['replay_id']}" in err
    finally:
        v3.write_text(original)
    assert served_by(srv) == "mock/mock-pro" and history(srv) == []


def test_promote_without_replay_uses_the_latest_and_rollback_restores_a_deleted_file(srv):
    rep = simulate(srv, "--config=@agent-v3")
    out = srv.cli("config", "promote", "@agent-v3", "--reason", "latest replay").stdout
    assert "promoted @agent-v3" in out and served_by(srv) == "mock/mock-lite"
    promoted = history(srv)[-1]
    assert promoted["replay_id"] == rep["replay_id"] and not promoted["forced"]
    srv.cli("config", "rollback")
    assert served_by(srv) == "mock/mock-pro"
    # the candidate's file goes away: its promoted content still restores from the database
    v3 = srv.config_dir / "agent-v3.toml"
    original = v3.read_text()
    v3.unlink()
    try:
        out = srv.cli("config", "rollback", "--to", str(promoted["to_number"])).stdout
        assert f"now serves version {promoted['to_number']}" in out
        assert served_by(srv) == "mock/mock-lite"
    finally:
        v3.write_text(original)
    srv.cli("config", "rollback", "--to", str(promoted["from_number"]))
    assert served_by(srv) == "mock/mock-pro"

    api = srv.get("/mlx/v1/config/history").json()["history"]
    assert api == history(srv)
    # from None: after the first rollback the file served again (its content equals version 1)
    assert [(h["action"], h["from_number"], h["to_number"]) for h in api] == [
        ("promote", 1, 2), ("rollback", 2, 1), ("rollback", None, 2), ("rollback", 2, 1)]
    assert all(h["who"] == "bob" for h in api) and api[0]["reason"] == "latest replay"
    assert api[0]["figures"]["replay_id"] == rep["replay_id"]
