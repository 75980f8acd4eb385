"""simulate against a candidate: every figure of the report recomputed here from the stored calls."""
from __future__ import annotations

import json
import math

import pytest

from modelux_local.providers.mock import embed_text
from modelux_local.storage.bodies import decode_body

from .server import ServerProcess
from .test_replay_support import db, make_config_dir, pct, record_history


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    base = tmp_path_factory.mktemp("replay")
    s = ServerProcess(base / "data", make_config_dir(base / "config"))
    s.start()
    s.history = record_history(s, runs=6)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def live(srv):
    r = srv.cli("simulate", "--replay=24h", "--config=@agent-v3", "--json")
    return json.loads(r.stdout)


def _content(body) -> str | None:
    if body is None:
        return None
    d = json.loads(decode_body(None, body))  # responses are stored whole (compressed): no connection needed
    return ((d.get("choices") or [{}])[0].get("message") or {}).get("content")


def _cosine(a, b):
    return sum(x * y for x, y in zip(a, b)) / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def _expected(srv, replay_id: str) -> dict:
    """The report's figures, computed from the calls table without the replay package."""
    conn = db(srv)
    runs = []
    for rid in srv.history:
        orig = conn.execute("SELECT call_id, started_at, latency_ms, cost_nusd, status, response, endpoint "
                            "FROM calls WHERE run_id = ? ORDER BY started_at, call_id", (rid,)).fetchall()
        rep = {r[0]: r[1:] for r in conn.execute(
            "SELECT original_call_id, latency_ms, cost_nusd, status, response FROM calls WHERE run_id = ?",
            (f"{rid}~r{replay_id}",))}
        outcome = conn.execute("SELECT outcome FROM runs WHERE run_id = ?", (rid,)).fetchone()[0]
        errors = sum(1 for o in orig if o[4] in ("error", "aborted"))
        cur_ok = json.loads(outcome)["success"] if outcome else errors == 0
        duration = max(o[1] + o[2] / 1000 for o in orig) - min(o[1] for o in orig)
        model_time = sum(o[2] for o in orig) / 1000
        cand_time = sum(v[0] for v in rep.values()) / 1000
        cand_errors = sum(1 for v in rep.values() if v[2] in ("error", "aborted"))
        final = [o for o in orig if o[4] == "ok" and o[6] == "chat" and _content(o[5])][-1]
        sim = _cosine(embed_text(_content(final[5])), embed_text(_content(rep[final[0]][3]) or ""))
        runs.append({
            "cur_cost": sum(o[3] or 0 for o in orig) / 1e9, "cand_cost": sum(v[1] or 0 for v in rep.values()) / 1e9,
            "cur_lat": duration, "cand_lat": max(0.0, duration - model_time) + cand_time,
            "req": len(orig), "cand_req": len(rep), "cur_err": errors, "cand_err": cand_errors,
            "cur_ok": cur_ok, "cand_ok": cur_ok and cand_errors == 0 and sim >= 0.8})
    n = len(runs)

    def side(p):
        return {"mean_cost_per_run": sum(r[f"{p}_cost"] for r in runs) / n,
                "p50_latency_s": pct([r[f"{p}_lat"] for r in runs], 50),
                "p95_latency_s": pct([r[f"{p}_lat"] for r in runs], 95),
                "error_rate": sum(r[f"{p}_err"] for r in runs) / sum(r["req"] for r in runs),
                "agent_success": sum(1 for r in runs if r[f"{p}_ok"]) / n}
    cur, cand = side("cur"), side("cand")
    assert all(r["cand_req"] == r["req"] for r in runs)
    return {"current": cur, "candidate": cand, "runs": runs}


def test_live_report_matches_an_independent_computation(srv, live):
    exp = _expected(srv, live["replay_id"])
    assert live["runs_replayed"] == len(srv.history) and not live["partial"]
    assert live["requests"] == sum(r["req"] for r in exp["runs"])
    for side in ("current", "candidate"):
        for metric, value in exp[side].items():
            assert live[side][metric] == pytest.approx(value, rel=1e-9, abs=1e-12), (side, metric)
    for m in ("mean_cost_per_run", "p50_latency_s", "p95_latency_s"):
        assert live["delta"][m] == pytest.approx((exp["candidate"][m] - exp["current"][m]) / exp["current"][m])
    for m in ("error_rate", "agent_success"):
        assert live["delta"][m] == pytest.approx(exp["candidate"][m] - exp["current"][m], abs=1e-12)
    # the candidate moves @executor to the cheaper model: cost must fall, and the interval must hold the delta
    assert live["delta"]["mean_cost_per_run"] < -0.3
    lo, hi = live["ci"]["mean_cost_per_run"]
    assert lo <= live["delta"]["mean_cost_per_run"] <= hi < 0
    # one run failed a call, one reported a failed outcome: CURRENT success is 4 of 6
    assert live["current"]["agent_success"] == pytest.approx(4 / 6)
    assert live["current"]["error_rate"] > 0
    assert live["quality"]["evaluator"] == "similarity" and live["quality"]["judged"] == len(srv.history)
    assert set(live) >= {"runs_replayed", "requests", "window", "current", "candidate", "delta", "replay_id"}


def test_replay_calls_are_linked_priced_and_kept_out_of_live_analytics(srv, live):
    rid = live["replay_id"]
    conn = db(srv)
    rows = conn.execute("SELECT c.run_id, c.original_call_id, o.run_id FROM calls c JOIN calls o "
                        "ON o.call_id = c.original_call_id WHERE c.replay_id = ?", (rid,)).fetchall()
    assert len(rows) == live["requests"]
    assert all(run == f"{orig_run}~r{rid}" for run, _, orig_run in rows)
    replay_runs = conn.execute("SELECT run_id FROM runs WHERE replay_id = ?", (rid,)).fetchall()
    assert len(replay_runs) == len(srv.history)
    spent = conn.execute("SELECT sum(cost_nusd) FROM calls WHERE replay_id = ?", (rid,)).fetchone()[0]
    assert live["replay_cost_usd"] == pytest.approx(spent / 1e9)
    listed = {r["run_id"] for r in srv.get("/mlx/v1/runs", params={"limit": 200}).json()["runs"]}
    assert listed == set(srv.history)
    groups = srv.get("/mlx/v1/analytics", params={"group_by": "agent"}).json()["groups"]
    assert [g["runs"] for g in groups if g["value"] == "research-v2"] == [len(srv.history)]


def test_reprice_gives_the_live_cost_delta_when_token_counts_are_equal(srv, live):
    rep = json.loads(srv.cli("simulate", "--config=@agent-v3", "--mode", "reprice", "--json").stdout)
    assert rep["estimate"] is True and rep["replay_cost_usd"] == 0
    assert rep["delta"]["mean_cost_per_run"] == pytest.approx(live["delta"]["mean_cost_per_run"], rel=1e-6)
    assert rep["candidate"]["mean_cost_per_run"] == pytest.approx(live["candidate"]["mean_cost_per_run"], rel=1e-6)
    assert rep["candidate"]["p95_latency_s"] is None and rep["delta"]["agent_success"] is None
    text = srv.cli("replays", "show", rep["replay_id"]).stdout
    assert "not measured" in text and "estimate" in text


# configs/example's prices, USD per million tokens (input, output), and where @agent-v3 routes each alias
PRICES = {"mock-pro": (2.0, 8.0), "mock-lite": (0.2, 0.8)}
V3 = {"@planner": "mock-pro", "@executor": "mock-lite", "@summarizer": "mock-lite"}


def test_reprice_deltas_match_figures_computed_by_hand(srv):
    """Each recorded call's own token counts at @agent-v3's published prices, summed per run by hand."""
    rep = json.loads(srv.cli("simulate", "--config=@agent-v3", "--mode", "reprice", "--json").stdout)
    conn = db(srv)
    current, candidate = [], []
    for rid in srv.history:
        rows = conn.execute("SELECT alias, input_tokens, output_tokens, cost_nusd FROM calls WHERE run_id = ?",
                            (rid,)).fetchall()
        current.append(sum(r[3] or 0 for r in rows) / 1e9)
        candidate.append(sum(((r[1] or 0) * PRICES[V3[r[0]]][0] + (r[2] or 0) * PRICES[V3[r[0]]][1]) / 1e6
                             for r in rows))
    cur, cand = sum(current) / len(current), sum(candidate) / len(candidate)
    assert rep["runs_replayed"] == len(srv.history) and rep["mode"] == "reprice"
    assert rep["current"]["mean_cost_per_run"] == pytest.approx(cur, rel=1e-6)
    assert rep["candidate"]["mean_cost_per_run"] == pytest.approx(cand, rel=1e-6)
    assert rep["delta"]["mean_cost_per_run"] == pytest.approx((cand - cur) / cur, rel=1e-6)
    assert -0.9 < rep["delta"]["mean_cost_per_run"] < -0.3  # the executor's calls at a tenth of the price


def test_text_report_list_and_step_diff(srv, live):
    out = srv.cli("replays", "show", live["replay_id"]).stdout
    for label in ("runs_replayed", "mean cost/run", "p50 latency", "p95 latency", "error rate", "agent success",
                  "95% CI", "quality", "replay cost", live["replay_id"]):
        assert label in out
    assert live["replay_id"] in srv.cli("replays", "list").stdout
    run = srv.history[0]
    steps = srv.cli("replays", "show", live["replay_id"], "--run", run).stdout
    assert "mock/mock-pro" in steps and "mock/mock-lite" in steps  # the executor moved, side by side
    data = json.loads(srv.cli("replays", "show", live["replay_id"], "--run", run, "--json").stdout)
    moved = [s for s in data["steps"] if s["original"]["model"] != s["candidate"]["model"]]
    assert len(moved) == 3 and all(s["candidate"]["model"] == "mock-lite" for s in moved)


def test_filters_select_runs_by_tag_and_id(srv):
    one = json.loads(srv.cli("simulate", "--config=@agent-v3", "--mode=reprice", "--run-id", srv.history[3],
                             "--json").stdout)
    assert one["runs_replayed"] == 1
    none = srv.cli("simulate", "--config=@agent-v3", "--mode=reprice", "--tag", "agent=other", "--json", check=False)
    assert none.returncode == 1 and none.stdout == "" and "no recorded runs to replay" in none.stderr
    sampled = json.loads(srv.cli("simulate", "--config=@agent-v3", "--mode=reprice", "--sample", "2",
                                 "--json").stdout)
    assert sampled["runs_replayed"] == 2


def test_max_cost_stops_the_replay_and_says_so(srv):
    rep = json.loads(srv.cli("simulate", "--config=@agent-v3", "--max-cost", "0.000001", "--concurrency", "1",
                             "--json").stdout)
    assert rep["partial"] and "max-cost" in rep["stopped_reason"]
    assert rep["runs_replayed"] < len(srv.history)


@pytest.mark.parametrize("evaluator", ["tool_calls", "json_valid", "judge"])
def test_other_evaluators_report_what_they_judged(srv, evaluator):
    rep = json.loads(srv.cli("simulate", "--config=@agent-v3", "--eval", evaluator, "--run-id", srv.history[0],
                             "--json").stdout)
    q = rep["quality"]
    assert q["evaluator"] == evaluator and q["judged"] + q["not_judged"] == 1
    if evaluator == "tool_calls":  # no tools offered: same (no) tool calls at every step
        assert q["accepted"] == 1
    if evaluator == "json_valid":  # no step answered JSON: nothing to judge
        assert q["not_judged"] == 1


def test_interrupting_a_replay_leaves_a_partial_report_and_a_consistent_database(srv):
    import signal
    import subprocess
    import sys
    import time

    from .server import ROOT

    cmd = [sys.executable, "-m", "modelux_local", "simulate", "--config=@agent-slow", "--concurrency", "1", "--json",
           "--data-dir", str(srv.data_dir), "--config-dir", str(srv.config_dir)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=srv.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    conn = db(srv)
    deadline = time.monotonic() + 20
    replay_id = None
    while time.monotonic() < deadline:  # wait until it has finished a run and is inside the next ones
        row = conn.execute("SELECT r.replay_id FROM replays r JOIN replay_runs rr USING (replay_id) "
                           "WHERE r.candidate = 'agent-slow' LIMIT 1").fetchone()
        if row:
            replay_id = row[0]
            break
        time.sleep(0.02)
    assert replay_id, proc.communicate(timeout=30)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    rep = json.loads(out)
    assert rep["partial"] and rep["stopped_reason"] == "interrupted" and rep["replay_id"] == replay_id
    assert 1 <= rep["runs_replayed"] < len(srv.history)
    stored = conn.execute("SELECT status, report IS NOT NULL FROM replays WHERE replay_id = ?", (replay_id,)).fetchone()
    assert stored == ("partial", 1)
    assert "PARTIAL" in srv.cli("replays", "show", replay_id).stdout
    # consistent: every replay run's rollup agrees with its stored calls, every call links to an original
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    for run_id, calls in conn.execute("SELECT run_id, calls FROM runs WHERE replay_id = ?", (replay_id,)).fetchall():
        assert calls == conn.execute("SELECT count(*) FROM calls WHERE run_id = ?", (run_id,)).fetchone()[0]
    orphans = conn.execute("SELECT count(*) FROM calls c WHERE c.replay_id = ? AND c.run_id IS NOT NULL AND NOT EXISTS "
                           "(SELECT 1 FROM calls o WHERE o.call_id = c.original_call_id)", (replay_id,)).fetchone()[0]
    assert orphans == 0
