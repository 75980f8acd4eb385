"""Anomalies, flagged as calls land: a writer `after_batch` hook (off the request path, inside the
batch's transaction, milliseconds after the call ends).

- loop: the same request fingerprint (messages and tools, normalised: key order, whitespace)
  seen `[anomalies] loop_repeats` times in a run;
- retry_storm: `retry_storm` failed upstream attempts within `retry_window_s` in a run;
- cost: a run's calls or cost above both the p95 and twice the median of the same agent's
  completed runs, once that agent has MIN_HISTORY of them (history stats are cached and
  refreshed in the background, never queried per call).

Each anomaly is added once to `runs.anomalies` and fires `anomaly.<name>` in the same transaction.
This hook also applies what the budget guard decided about a call (run aborted, budget.warning).
"""
from __future__ import annotations

import hashlib
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import apsw
import msgspec

from ..core.records import CallRecord
from ..core.stats import percentile
from ..storage.bodies import decode_body
from .budgets import Pending
from .events import emit, mark_aborted

log = logging.getLogger("modelux.anomalies")

MIN_HISTORY = 20          # completed runs of an agent before cost outliers are judged
HISTORY_DAYS = 30         # which completed runs make up an agent's history
_dec = msgspec.json.Decoder()
_enc_sorted = msgspec.json.Encoder(order="sorted")


@dataclass(frozen=True, slots=True)
class AgentStats:
    runs: int
    calls_p50: float
    calls_p95: float
    cost_p50: float
    cost_p95: float


def _normalise(x: Any) -> Any:
    if isinstance(x, str):
        return " ".join(x.split())
    if isinstance(x, list):
        return [_normalise(v) for v in x]
    if isinstance(x, dict):
        return {k: _normalise(v) for k, v in x.items()}
    return x


def fingerprint(request: bytes | None) -> str | None:
    """Hash of the request's messages and tools, independent of key order and whitespace."""
    if not request:
        return None
    try:
        body = _dec.decode(request)
    except msgspec.DecodeError:
        return None
    if not isinstance(body, dict) or not body.get("messages"):
        return None
    core = _normalise({"messages": body.get("messages"), "tools": body.get("tools"), "system": body.get("system")})
    return hashlib.sha256(_enc_sorted.encode(core)).hexdigest()[:16]


def agent_stats(conn: apsw.Connection, now: float | None = None) -> dict[str, AgentStats]:
    """Per-agent percentiles of calls and cost over its completed runs (the background refresh)."""
    since = (now or time.time()) - HISTORY_DAYS * 86400
    by_agent: dict[str, tuple[list[float], list[float]]] = {}
    for agent, calls, cost in conn.execute(
            "SELECT agent, calls, cost_nusd FROM runs WHERE status = 'completed' AND agent IS NOT NULL "
            "AND started_at >= ? AND replay_id IS NULL", (since,)):
        c, k = by_agent.setdefault(agent, ([], []))
        c.append(calls)
        k.append(cost)
    out = {}
    for agent, (calls, costs) in by_agent.items():
        if len(calls) < MIN_HISTORY:
            continue
        calls.sort()
        costs.sort()
        out[agent] = AgentStats(len(calls), percentile(calls, 50), percentile(calls, 95),
                                percentile(costs, 50), percentile(costs, 95))
    return out


class AnomalyWatcher:
    """The writer hook. Its state is touched only on the writer thread (history is swapped whole)."""

    def __init__(self, rt: Any, pending: Pending, notify: Callable[[], None]):
        self.rt = rt
        self.pending = pending
        self.notify = notify
        self.history: dict[str, AgentStats] = {}
        self._loops: dict[str, dict[str, int]] = {}
        self._failures: dict[str, deque[float]] = {}
        self._flagged: dict[str, set[str]] = {}
        self._seen: dict[str, float] = {}
        self._since_prune = 0

    def __call__(self, conn: apsw.Connection, records: list[CallRecord]) -> None:
        server = self.rt.configs.server
        cfg, hooks, reader = server.anomalies, server.webhooks, self.rt.reader
        fired = False
        outliers: dict[str, str] = {}
        now = time.time()
        batch = {r.call_id for r in records}
        for rec in records:
            for item in self.pending.take(rec.call_id):
                fired = True
                if item[0] == "abort":
                    _, rid, reason, code, detail = item
                    mark_aborted(conn, reader, hooks, rid, reason, code, "budget", {"call_id": rec.call_id, **detail})
                elif item[0] == "warning":
                    emit(conn, reader, hooks, "budget.warning", item[1], {"call_id": rec.call_id, **item[2]})
            rid = rec.run_id
            if not rid or rec.replay_id:  # replayed traffic repeats the originals' loops: no alarms for it
                continue
            if rid not in self._seen:  # first sight since start (or since pruned): count what is stored
                self._seed(conn, rid, batch, cfg)
            self._seen[rid] = now
            if rec.provider is not None and rec.attempts and rec.endpoint != "embeddings":
                fp = fingerprint(rec.request)
                if fp is not None:
                    counts = self._loops.setdefault(rid, {})
                    n = counts[fp] = counts.get(fp, 0) + 1
                    if n >= cfg.loop_repeats:
                        fired |= self._flag(conn, rid, "loop", {"fingerprint": fp, "repeats": n,
                                                                "loop_repeats": cfg.loop_repeats, "call_id": rec.call_id})
            fired |= self._retries(conn, rec, rid, cfg)
            agent = rec.tags.get("agent")
            if agent and agent in self.history:
                outliers[rid] = agent
        for rid, agent in outliers.items():
            fired |= self._cost(conn, rid, agent)
        if fired:
            self.notify()
        self._since_prune += len(records)
        if self._since_prune > 2000:
            self._prune(now - max(600.0, 2 * server.runs.idle_timeout_s))

    def _seed(self, conn: apsw.Connection, rid: str, batch: set[str], cfg: Any) -> None:
        """Loop counts and recent failed attempts of a run's calls stored before this batch, so a
        restart (or a run idle long enough to be pruned) does not reset its anomaly counters."""
        counts: dict[str, int] = {}
        failures: list[float] = []
        for call_id, request, attempts, started, provider, endpoint in conn.execute(
                "SELECT call_id, request, attempts, started_at, provider, endpoint FROM calls "
                "WHERE run_id = ? AND replay_id IS NULL ORDER BY started_at", (rid,)):
            if call_id in batch:
                continue
            tries = msgspec.json.decode(attempts) if attempts else []
            if provider is not None and tries and endpoint != "embeddings":
                fp = fingerprint(decode_body(conn, request))
                if fp is not None:
                    counts[fp] = counts.get(fp, 0) + 1
            t = started
            for a in tries:
                t += (a.get("latency_ms") or 0) / 1000
                if a.get("status") == "error":
                    failures.append(t)
        if counts:
            self._loops[rid] = counts
        if failures:
            self._failures[rid] = deque(t for t in failures if t >= failures[-1] - cfg.retry_window_s)

    def _retries(self, conn: apsw.Connection, rec: CallRecord, rid: str, cfg: Any) -> bool:
        t = rec.started_at
        failed = []
        for a in rec.attempts:
            t += (a.get("latency_ms") or 0) / 1000
            if a.get("status") == "error":
                failed.append(t)
        if not failed:
            return False
        dq = self._failures.setdefault(rid, deque())
        dq.extend(failed)
        while dq and dq[0] < dq[-1] - cfg.retry_window_s:
            dq.popleft()
        if len(dq) >= cfg.retry_storm:
            return self._flag(conn, rid, "retry_storm", {"failed_attempts": len(dq), "retry_storm": cfg.retry_storm,
                                                         "retry_window_s": cfg.retry_window_s, "call_id": rec.call_id})
        return False

    def _cost(self, conn: apsw.Connection, rid: str, agent: str) -> bool:
        s = self.history.get(agent)
        row = conn.execute("SELECT calls, cost_nusd FROM runs WHERE run_id = ?", (rid,)).fetchone()
        if s is None or row is None:
            return False
        calls, cost = row
        over = []
        if calls > s.calls_p95 and calls > 2 * s.calls_p50:
            over.append("calls")
        if cost > s.cost_p95 and cost > 2 * s.cost_p50:
            over.append("cost")
        if not over:
            return False
        return self._flag(conn, rid, "cost", {
            "agent": agent, "over": over, "history_runs": s.runs, "calls": calls, "calls_p50": s.calls_p50,
            "calls_p95": s.calls_p95, "cost_usd": cost / 1e9, "cost_p50_usd": s.cost_p50 / 1e9,
            "cost_p95_usd": s.cost_p95 / 1e9})

    def _flag(self, conn: apsw.Connection, rid: str, name: str, detail: dict) -> bool:
        flagged = self._flagged.setdefault(rid, set())
        if name in flagged:
            return False
        flagged.add(name)
        conn.execute("UPDATE runs SET anomalies = json_insert(anomalies, '$[#]', ?) WHERE run_id = ? "
                     "AND NOT EXISTS (SELECT 1 FROM json_each(runs.anomalies) WHERE value = ?)", (name, rid, name))
        if conn.changes() == 0:  # already flagged before a restart
            return False
        emit(conn, self.rt.reader, self.rt.configs.server.webhooks, f"anomaly.{name}", rid, detail)
        log.warning("run %s: anomaly %s %s", rid, name, detail)
        return True

    def _prune(self, older_than: float) -> None:
        self._since_prune = 0
        for rid in [r for r, t in self._seen.items() if t < older_than]:
            for d in (self._seen, self._loops, self._failures, self._flagged):
                d.pop(rid, None)
