"""The read side: run summaries, steps, calls. Each thread reads on its own connection."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import apsw
import msgspec

from ..core.stats import iso, percentile
from ..pricing import nanos_to_usd
from .bodies import decode_body
from .db import connect, migrate
from .history import DEFAULT_MIN_HISTORY, agent_history, expected, run_agents

_dec = msgspec.json.Decoder()

STEP_COLUMNS = ("call_id, run_id, started_at, alias, config, config_version, provider, model, status, http_status, "
                "input_tokens, output_tokens, cached_tokens, reasoning_tokens, cost_nusd, priced, latency_ms, ttft_ms, "
                "stream, attempts, decision, endpoint, error, tags, replay_id, original_call_id")
RUN_COLUMNS = ("run_id, tags, status, started_at, last_at, ended_at, calls, errors, retries, input_tokens, "
               "output_tokens, cost_nusd, unpriced_calls, outcome, anomalies, abort_reason, replay_id")


class Reader:
    def __init__(self, path: Path | str, idle_timeout_s: float = 300.0):
        self.path = Path(path)
        self.idle_timeout_s = idle_timeout_s
        self._local = threading.local()
        self._first_alias: dict[str, str] = {}  # run_id -> its first alias, for agent_history (never changes)

    def conn(self) -> apsw.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = connect(self.path)
            migrate(c)
            self._local.conn = c
        return c

    # -- runs ------------------------------------------------------------------------------

    def run_summary(self, row: tuple, latencies: list[float] | None = None) -> dict:
        (run_id, tags, status, started, last, ended, calls, errors, retries, tin, tout, cost, unpriced,
         outcome, anomalies, abort_reason, replay_id) = row
        if status == "running" and time.time() - last > self.idle_timeout_s:
            status, ended = "completed", last
        if latencies is None:
            latencies = self.run_latencies(run_id)
        end = ended if ended is not None else last
        return {
            "run_id": run_id, "tags": _dec.decode(tags), "status": status,
            "started_at": iso(started), "ended_at": iso(ended) if status != "running" else None,
            "calls": calls, "errors": errors, "retries": retries,
            "input_tokens": tin, "output_tokens": tout,
            "cost_usd": None if calls and unpriced == calls else nanos_to_usd(cost),
            "unpriced_calls": unpriced,
            "duration_ms": round((end - started) * 1000, 1),
            "p50_ms": _round(percentile(latencies, 50)), "p95_ms": _round(percentile(latencies, 95)),
            "outcome": _dec.decode(outcome) if outcome else None,
            "anomalies": _dec.decode(anomalies) if anomalies else [],
            "abort_reason": abort_reason, "replay_id": replay_id,
            "played_back_calls": self.played_back(run_id),
        }

    def played_back(self, run_id: str) -> int:
        """Calls of the run answered from a cassette or the dev cache (the calls_playback index)."""
        return self.conn().execute("SELECT count(*) FROM calls WHERE run_id = ? AND provider IN ('cassette', 'cache')",
                                   (run_id,)).fetchone()[0]

    def run_latencies(self, run_id: str) -> list[float]:
        return [r[0] for r in self.conn().execute(
            "SELECT latency_ms FROM calls WHERE run_id = ? AND latency_ms IS NOT NULL ORDER BY latency_ms", (run_id,))]

    def get_run(self, run_id: str, with_steps: bool = True, min_history: int = DEFAULT_MIN_HISTORY,
                now: float | None = None, with_expected: bool = True) -> dict | None:
        row = self.conn().execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            return None
        out = self.run_summary(row)
        out["expected"] = self.expectations([row], min_history, now).get(run_id) if with_expected else None
        if with_steps:
            out["steps"] = self.steps(run_id)
        return out

    def expectations(self, rows: list[tuple], min_history: int = DEFAULT_MIN_HISTORY,
                     now: float | None = None) -> dict[str, dict]:
        """run_id -> `expected` (its agent's usual run) for runs rows (RUN_COLUMNS); replays have none."""
        conn = self.conn()
        agents = run_agents(conn, [r[0] for r in rows if r[16] is None])
        history = agent_history(conn, agents=agents.values(), now=now, first_alias=self._first_alias)
        out = {}
        for r in rows:
            h = history.get(agents.get(r[0], ""))
            if h is not None:
                out[r[0]] = expected(h, r[11], r[6], min_history)
        return out

    def steps(self, run_id: str) -> list[dict]:
        rows = self.conn().execute(
            f"SELECT {STEP_COLUMNS} FROM calls WHERE run_id = ? ORDER BY started_at, call_id", (run_id,))
        return [step_from_row(r, seq) for seq, r in enumerate(rows, 1)]

    # -- calls -----------------------------------------------------------------------------

    def get_call(self, call_id: str) -> dict | None:
        c = self.conn()
        row = c.execute(f"SELECT {STEP_COLUMNS}, request, response FROM calls WHERE call_id = ?", (call_id,)).fetchone()
        if row is None:
            return None
        seq = None
        if row[1]:
            seq = c.execute("SELECT count(*) FROM calls WHERE run_id = ? AND (started_at < ? OR (started_at = ? AND call_id <= ?))",
                            (row[1], row[2], row[2], call_id)).fetchone()[0]
        out = step_from_row(row[:-2], seq)
        out["request"] = _json_or_text(decode_body(c, row[-2]))
        out["response"] = _json_or_text(decode_body(c, row[-1]))
        return out


# The semantic indexer's own embedding calls (storage/embed_job.py tags them so): not user traffic.
NOT_INTERNAL = "coalesce(json_extract(tags, '$.modelux'), '') != 'semantic-index'"


def untagged_calls(conn: apsw.Connection, since: float | None = None) -> int:
    """Calls that arrived without a run_id (so belong to no run), the indexer's and replays' aside."""
    return conn.execute(f"SELECT count(*) FROM calls WHERE run_id IS NULL AND replay_id IS NULL AND {NOT_INTERNAL} "
                        "AND started_at >= ?", (since or 0,)).fetchone()[0]


def step_from_row(r: tuple, seq: int | None) -> dict:
    (call_id, run_id, started, alias, config, version, provider, model, status, http_status, tin, tout, cached,
     reasoning, cost, priced, latency, ttft, stream, attempts, decision, endpoint, error, tags, replay_id, orig) = r
    return {
        "call_id": call_id, "run_id": run_id, "seq": seq, "alias": alias, "config": config, "config_version": version,
        "provider": provider, "model": model, "status": status, "http_status": http_status,
        "input_tokens": tin, "output_tokens": tout, "cached_tokens": cached, "reasoning_tokens": reasoning,
        "cost_usd": nanos_to_usd(cost), "priced": bool(priced), "latency_ms": _round(latency), "ttft_ms": _round(ttft),
        "started_at": iso(started), "stream": bool(stream), "endpoint": endpoint, "error": error,
        "tags": _dec.decode(tags), "attempts": _dec.decode(attempts), "decision": _dec.decode(decision),
        "replay_id": replay_id, "original_call_id": orig,
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def _json_or_text(b: Any) -> Any:
    if b is None:
        return None
    try:
        return _dec.decode(b)
    except msgspec.DecodeError:
        return bytes(b).decode("utf-8", "replace")
