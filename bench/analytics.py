"""Bench section `analytics`: the read side at scale (1,000,000 calls in 50,000 runs).

Synthesises the database with bulk SQL (recursive CTEs; the same schema and migrations
as the server, runs rollups built from the calls exactly as the writer's upsert would),
then times, in process (median of several runs) and as a CLI subprocess (what a user
waits for, Python start included): `runs`, `runs --sort cost`, `runs --tag agent=...`,
`analytics --group-by agent`, `analytics --group-by env --since 24h`, `trace RUN_ID`.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench._harness import ROOT, Context

DESCRIPTION = "runs / analytics / trace over a synthetic database of 1M calls in 50k runs"

AGENTS = ["research-v2", "support-bot", "coder", "planner-x", "summariser", "triage", "writer", "qa"]


def add_arguments(ap) -> None:
    ap.add_argument("--analytics-calls", type=int, default=1_000_000, help="analytics section: calls to synthesise")
    ap.add_argument("--analytics-runs", type=int, default=50_000, help="analytics section: runs to synthesise")


def synthesise(db_path: Path, calls: int, runs: int, now: float | None = None) -> dict:
    """Fills a fresh database with `calls` calls spread evenly over `runs` runs in the last 7 days."""
    from modelux_local.storage.db import open_db

    now = time.time() if now is None else now
    per_run = max(1, calls // runs)
    conn = open_db(db_path)
    conn.execute("PRAGMA journal_mode=OFF")  # a scratch database: no need to journal the bulk load
    t0 = time.perf_counter()
    agents = ", ".join(f"'{a}'" for a in AGENTS)
    with conn:
        conn.execute("CREATE TEMP TABLE agents(i INTEGER PRIMARY KEY, name TEXT)")
        conn.execute(f"INSERT INTO agents(name) SELECT value FROM json_each(json_array({agents}))")
        # one row per call; the run of call i is i / per_run; latencies skewed like real traffic
        conn.execute(f"""
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {calls - 1}),
c AS MATERIALIZED (
  SELECT i, i / {per_run} AS r, i % {per_run} AS seq,
         abs(random() % 1000) AS u, abs(random() % 1000) AS u2 FROM n
)
INSERT INTO calls (call_id, run_id, started_at, endpoint, alias, config, config_version, provider, model,
  status, http_status, input_tokens, output_tokens, cached_tokens, reasoning_tokens, cost_nusd, priced,
  latency_ms, ttft_ms, stream, retries, tags, attempts, decision, error, request, response)
SELECT printf('call-%08d', i), printf('run-%06d', r),
  {now} - 7 * 86400 + r * (7.0 * 86400 / {runs}) + seq * 3.0,
  'chat', CASE WHEN seq % 3 = 0 THEN '@planner' ELSE '@executor' END, 'default', 'v1', 'mock',
  CASE WHEN seq % 3 = 0 THEN 'mock-large' ELSE 'mock-small' END,
  CASE WHEN u < 20 THEN 'error' ELSE 'ok' END, CASE WHEN u < 20 THEN 502 ELSE 200 END,
  200 + u, 50 + u2 / 4, 0, 0,
  CASE WHEN seq % 3 = 0 THEN (200 + u) * 3000 + (50 + u2 / 4) * 15000 ELSE (200 + u) * 250 + (50 + u2 / 4) * 1250 END, 1,
  80.0 + u2 * u2 / 200.0 + u / 10.0, 30.0 + u2 / 20.0, seq % 2, CASE WHEN u < 40 THEN 1 ELSE 0 END,
  json_object('run_id', printf('run-%06d', r), 'agent', (SELECT name FROM agents WHERE agents.i = 1 + r % {len(AGENTS)}),
              'env', CASE WHEN r % 5 = 0 THEN 'staging' ELSE 'prod' END),
  json_array(json_object('provider', 'mock', 'model', 'mock-small', 'status', 'ok', 'http_status', 200,
             'latency_ms', 80.0 + u2 * u2 / 200.0, 'error', NULL, 'category', NULL, 'next', NULL)),
  json_object('requested', '@executor', 'config', 'default', 'strategy', 'fallback'),
  CASE WHEN u < 20 THEN 'every target failed' ELSE NULL END,
  CAST(json_object('model', '@executor', 'messages', json_array(json_object('role', 'user',
       'content', printf('step %d of run %d: summarise the findings', seq, r)))) AS BLOB),
  CAST(json_object('choices', json_array(json_object('index', 0, 'message', json_object('role', 'assistant',
       'content', printf('answer %d', i))))) AS BLOB)
FROM c""")
        # the rollups, as record_rows' upsert leaves them after the same calls
        conn.execute("""
INSERT INTO runs (run_id, tags, agent, started_at, last_at, status, calls, errors, retries, input_tokens,
  output_tokens, cost_nusd, unpriced_calls)
SELECT run_id, max(tags), json_extract(max(tags), '$.agent'), min(started_at),
  max(started_at + latency_ms / 1000), 'completed', count(*), sum(status = 'error'), sum(retries),
  sum(input_tokens), sum(output_tokens), sum(cost_nusd), 0
FROM calls GROUP BY run_id""")
    conn.execute("ANALYZE")
    conn.close()
    return {"calls": calls, "runs": runs, "seconds": round(time.perf_counter() - t0, 1),
            "db_mb": round(db_path.stat().st_size / 1e6)}


def _time(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def _cli(data_dir: Path, *args: str) -> float:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "modelux_local", *args, "--data-dir", str(data_dir), "--json"],
                       cwd=ROOT, capture_output=True, text=True)
    dt = (time.perf_counter() - t0) * 1000
    if p.returncode != 0:
        raise RuntimeError(f"modelux {' '.join(args)} failed: {p.stderr.strip()}")
    return dt


async def run(ctx: Context) -> dict:
    from modelux_local.storage import Reader
    from modelux_local.storage.analytics_queries import analytics, list_runs, make_filter

    calls = 20_000 if ctx.quick else ctx.args.analytics_calls
    runs = 1_000 if ctx.quick else ctx.args.analytics_runs
    data_dir = ctx.workdir / "data"
    data_dir.mkdir()
    ctx.log(f"synthesising {calls:,} calls in {runs:,} runs ...")
    made = synthesise(data_dir / "modelux.db", calls, runs)
    ctx.log(f"  done in {made['seconds']} s ({made['db_mb']} MB)")
    reader = Reader(data_dir / "modelux.db")
    one_run = "run-%06d" % (runs // 2)
    cases = {
        "runs": (lambda: list_runs(reader, make_filter()), ["runs"]),
        "runs --sort cost": (lambda: list_runs(reader, make_filter(), sort="cost"), ["runs", "--sort", "cost"]),
        "runs --tag agent=coder": (lambda: list_runs(reader, make_filter(tags=["agent=coder"])),
                                   ["runs", "--tag", "agent=coder"]),
        "runs --since 24h --sort calls": (lambda: list_runs(reader, make_filter(since="24h"), sort="calls"),
                                          ["runs", "--since", "24h", "--sort", "calls"]),
        "analytics --group-by agent": (lambda: analytics(reader, "agent", make_filter()),
                                       ["analytics", "--group-by", "agent"]),
        "analytics --group-by env --since 24h": (lambda: analytics(reader, "env", make_filter(since="24h")),
                                                 ["analytics", "--group-by", "env", "--since", "24h"]),
        f"trace {one_run}": (lambda: reader.get_run(one_run), ["trace", one_run]),
    }
    figures: dict = {"database": made, "cases": {}}
    for name, (fn, argv) in cases.items():
        fn()  # warm the page cache once, as a second command would find it
        q_ms = _time(fn, 3 if "analytics" in name else 5)
        cli_ms = _cli(data_dir, *argv)
        figures["cases"][name] = {"query_ms": round(q_ms, 1), "cli_ms": round(cli_ms)}
        ctx.log(f"  {name:<40} query {q_ms:8.1f} ms   cli {cli_ms:6.0f} ms")
    return figures


def render(f: dict) -> str:
    d = f["database"]
    lines = [f"analytics at scale: {d['calls']:,} calls in {d['runs']:,} runs ({d['db_mb']} MB, built in {d['seconds']} s)",
             f"  {'command':<42} {'query (median)':>15} {'CLI wall':>10}"]
    for name, c in f["cases"].items():
        lines.append(f"  {name:<42} {c['query_ms']:>12.1f} ms {c['cli_ms']:>7} ms")
    lines.append("  query: the read function in process; CLI wall: `modelux-local ... --json` as a subprocess")
    return "\n".join(lines)
