"""Deterministic data for the TUI tests: a config dir and a database with fixed ids and times.

Rows are written the way the server writes them (storage.record_rows.write_calls with
CallRecords priced by the config's PriceBook), then a few run flags (an anomaly, an abort)
that the analytics room would set are applied with plain UPDATEs.
"""
from __future__ import annotations

import json
from pathlib import Path

from modelux_local.config.loader import load_dir
from modelux_local.core.records import CallRecord
from modelux_local.core.usage import Usage
from modelux_local.pricing import PriceBook
from modelux_local.storage.db import open_db
from modelux_local.storage.record_rows import write_calls

NOW = 1_776_000_000.0  # 2026-04-12 13:20 UTC: "now", frozen for relative times (tests set TZ=UTC)

SERVER_TOML = """\
[routing]
default = "agent-v2"
[[routing.bind]]
match = { agent = "support-bot" }
config = "support-v1"

[providers.mock]
kind = "mock"

[[budgets]]
match = { agent = "research-v2" }
max_cost_usd = 0.01
"""
AGENT_V2 = """\
description = "Large model plans, small model executes"
[aliases.planner]
targets = [{ provider = "mock", model = "mock-large" }, { provider = "mock", model = "mock-small" }]
retries = { attempts = 2 }
[aliases.executor]
targets = [{ provider = "mock", model = "mock-small" }]
"""
SUPPORT_V1 = """\
description = "Support bot: everything on the small model"
[aliases.executor]
strategy = "loadbalance"
targets = [{ provider = "mock", model = "mock-small", weight = 3 }, { provider = "mock", model = "mock-large" }]
"""
CONFIG_FILES = {"modelux.toml": SERVER_TOML, "agent-v2.toml": AGENT_V2, "support-v1.toml": SUPPORT_V1}


def write_configs(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for name, text in CONFIG_FILES.items():
        (d / name).write_text(text)
    return d


def _call(n: int, run_id: str, agent: str, t: float, alias: str, model: str, tin: int, tout: int, *,
          status: str = "ok", attempts: list[dict] | None = None, cs=None, prices=None) -> CallRecord:
    messages = [{"role": "system", "content": "You are a careful research agent."},
                {"role": "user", "content": f"Step {n}: find three sources about solar storage and summarise them."}]
    response = {"id": f"chatcmpl-{n}", "object": "chat.completion", "model": model, "choices": [{
        "index": 0, "finish_reason": "tool_calls" if n == 2 else "stop",
        "message": {"role": "assistant", "content": None if n == 2 else f"Answer to step {n}: three sources found.",
                    **({"tool_calls": [{"id": "call_search_1", "type": "function", "function": {
                        "name": "web_search", "arguments": json.dumps({"query": "solar storage 2026", "k": 3})}}]}
                       if n == 2 else {})}}],
        "usage": {"prompt_tokens": tin, "completion_tokens": tout, "total_tokens": tin + tout}}
    attempts = attempts or [{"provider": "mock", "model": model, "status": status, "http_status": 200 if status == "ok" else 500,
                             "latency_ms": 400.0, "error": None, "category": None, "next": None}]
    return CallRecord(
        call_id=f"call_{run_id[-4:]}_{n:02d}", run_id=run_id, tags={"run_id": run_id, "agent": agent},
        endpoint="chat", started_at=t, alias=alias, config="agent-v2", config_version=cs.versions["agent-v2"],
        provider="mock", model=model, status=status, http_status=200 if status == "ok" else 502,
        usage=Usage(tin, tout) if status == "ok" else None, latency_ms=400.0 + n, ttft_ms=None, stream=False,
        attempts=attempts,
        decision={"requested": alias, "config": "agent-v2", "strategy": "fallback",
                  "order": ["mock/mock-large", "mock/mock-small"], "attempts_made": len(attempts),
                  "served_by": f"mock/{model}" if status == "ok" else None},
        error=None if status == "ok" else "every target failed", request=json.dumps(
            {"model": alias, "messages": messages,
             "tools": [{"type": "function", "function": {"name": "web_search", "parameters": {}}}]}).encode(),
        response=json.dumps(response).encode() if status == "ok" else None, price_book=prices)


def history_calls(n_runs: int, kw: dict) -> list[CallRecord]:
    """research-v2's usual runs, a day before NOW: 2 calls each, every third run 3 (p90: 3 calls, ~$0.0095)."""
    recs = []
    for j in range(n_runs):
        run_id = f"run_usual{j:02d}"  # call ids end with the run id's last 4 characters: "al07"
        for n in range(1, (3 if j % 3 == 0 else 2) + 1):
            recs.append(_call(n, run_id, "research-v2", NOW - 86400 + j * 600 + n * 30, "@planner", "mock-large",
                              600 + 30 * (j % 5), 80, **kw))
    return recs


def build_db(data_dir: Path, config_dir: Path, history: int = 0) -> Path:
    """Four runs: a running research run near its budget, a completed one, a looping one, an aborted one;
    with `history`, that many completed runs of research-v2 before them (its usual run)."""
    cs = load_dir(config_dir)
    prices = PriceBook(cs.server.prices, cs.server.providers)
    kw = {"cs": cs, "prices": prices}
    recs = history_calls(history, kw)
    # run_research01: 3 calls, the second retried (a 500 then ok), running (last call 20 s ago)
    recs.append(_call(1, "run_research01", "research-v2", NOW - 300, "@planner", "mock-large", 1200, 300, **kw))
    recs.append(_call(2, "run_research01", "research-v2", NOW - 120, "@executor", "mock-small", 800, 60, attempts=[
        {"provider": "mock", "model": "mock-small", "status": "error", "http_status": 500, "latency_ms": 35.0,
         "error": "upstream 500", "category": "5xx", "next": "retry"},
        {"provider": "mock", "model": "mock-small", "status": "ok", "http_status": 200, "latency_ms": 380.0,
         "error": None, "category": None, "next": None}], **kw))
    recs.append(_call(3, "run_research01", "research-v2", NOW - 20, "@planner", "mock-large", 1500, 200, **kw))
    # run_summary002: completed long ago (idle past the timeout)
    for n in range(1, 3):
        recs.append(_call(n, "run_summary002", "summariser", NOW - 1500 + n * 10, "@executor", "mock-small", 400, 100, **kw))
    # run_loop0003: the same step five times (flagged as a loop)
    for n in range(1, 6):
        recs.append(_call(n, "run_loop0003", "research-v2", NOW - 200 + n * 5, "@executor", "mock-small", 300, 40, **kw))
    # run_abort004: a failed call, then aborted over budget
    recs.append(_call(1, "run_abort004", "support-bot", NOW - 90, "@executor", "mock-small", 500, 80, **kw))
    recs.append(_call(2, "run_abort004", "support-bot", NOW - 60, "@executor", "mock-small", 0, 0, status="error", **kw))
    conn = open_db(data_dir / "modelux.db")
    with conn:
        write_calls(conn, recs)
        conn.execute("UPDATE runs SET anomalies = ? WHERE run_id = 'run_loop0003'", (json.dumps(["loop"]),))
        # the history went idle long ago: the server's lifecycle marked it completed
        conn.execute("UPDATE runs SET status = 'completed', ended_at = last_at WHERE run_id LIKE 'run_usual%'")
        conn.execute("UPDATE runs SET status = 'aborted', ended_at = last_at, abort_reason = 'max_cost_usd' "
                     "WHERE run_id = 'run_abort004'")
        for i, name in enumerate(cs.routing):
            conn.execute("INSERT INTO config_versions VALUES (?, ?, ?, ?, ?)",
                         (name, cs.versions[name], cs.texts[name], f"cfg/{name}.toml", NOW - 3600 + i))
    conn.close()
    return data_dir / "modelux.db"
