"""Anomalies, flagged as calls land: a writer `after_batch` hook (off the request path, inside the
batch's transaction, milliseconds after the call ends).

- loop: the same request fingerprint (messages and tools, normalised: key order, whitespace)
  seen `[anomalies] loop_repeats` times in a run;
- retry_storm: `retry_storm` failed upstream attempts within `retry_window_s` in a run;
- cost: a run's calls or cost above both the p95 and `cost_factor` x the median of the same
  agent's completed runs (storage.history: the `agent` tag, else the run's first alias), once
  that agent has `cost_min_history` of them (history stats are cached and refreshed in the
  background, never queried per call).

Each anomaly is added once to `runs.anomalies` and fires `anomaly.<name>` in the same transaction.
This hook also applies what the budget guard decided about a call (run aborted, budget.warning).
"""
from __future__ import annotations

import hashlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import apsw
import msgspec

from ..calls import Addon
from ..core.records import CallRecord
from ..storage import runs
from ..storage.bodies import decode_body
from ..storage.breakdown import json_object
from ..storage.history import AgentHistory, agent_history, expected
from .budgets import Pending
from .events import emit, mark_aborted

log = logging.getLogger("modelux.anomalies")

_dec = msgspec.json.Decoder()
_enc_sorted = msgspec.json.Encoder(order="sorted")


def _normalise(x: Any) -> Any:
    """Whitespace runs in strings collapsed, recursively (strings are inlined: most values are)."""
    if isinstance(x, str):
        return " ".join(x.split())
    if isinstance(x, list):
        return [" ".join(v.split()) if isinstance(v, str) else _normalise(v) if isinstance(v, (list, dict)) else v
                for v in x]
    if isinstance(x, dict):
        return {k: " ".join(v.split()) if isinstance(v, str) else _normalise(v) if isinstance(v, (list, dict)) else v
                for k, v in x.items()}
    return x


def fingerprint(request: bytes | None) -> str | None:
    """Hash of the request's messages and tools, independent of key order and whitespace."""
    body = json_object(request)
    if body is None:
        return None
    if body.get("messages"):
        core = _normalise({"messages": body.get("messages"), "tools": body.get("tools"), "system": body.get("system")})
    elif body.get("input"):  # /v1/responses (embeddings never get here): the same turn on the same state
        core = _normalise({"input": body["input"], "instructions": body.get("instructions"), "tools": body.get("tools"),
                           "previous_response_id": body.get("previous_response_id")})
    else:
        return None
    return hashlib.sha256(_enc_sorted.encode(core)).hexdigest()[:16]


_first_aliases: dict[str, dict[str, str]] = {}  # database file -> run_id -> first alias (they never change)


def agent_stats(conn: apsw.Connection, now: float | None = None) -> dict[str, AgentHistory]:
    """Every agent's history (the background refresh); `[anomalies] cost_min_history` is applied when
    judging, so a config edit takes effect without waiting for the next refresh."""
    return agent_history(conn, now=now, first_alias=_first_aliases.setdefault(conn.filename, {}))


class AnomalyWatcher(Addon):
    """The writer hook. Its state is touched only on the writer thread (history is swapped whole)."""

    def __init__(self, rt: Any, pending: Pending, notify: Callable[[], None]):
        self.rt = rt
        self.pending = pending
        self.notify = notify
        self.history: dict[str, AgentHistory] = {}
        self._agents: dict[str, str] = {}  # run_id -> agent tag or first alias (the history it is judged by)
        self._loops: dict[str, dict[str, int]] = {}
        self._failures: dict[str, deque[float]] = {}
        self._flagged: dict[str, set[str]] = {}
        self._seen: dict[str, float] = {}
        self._since_prune = 0
        self._taken: list[tuple[str, list[tuple]]] = []  # pending events taken by the current batch

    def after_batch(self, conn: apsw.Connection, records: list[CallRecord]) -> None:
        server = self.rt.configs.server
        cfg, hooks, reader = server.anomalies, server.webhooks, self.rt.reader
        fired = False
        outliers: dict[str, str] = {}
        now = time.time()
        batch = {r.call_id for r in records}
        self._taken = []
        for rec in records:
            if taken := self.pending.take(rec.call_id):
                self._taken.append((rec.call_id, taken))
            for item in taken:
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
            agent = self._agents.setdefault(rid, rec.tags.get("agent") or rec.alias or "")
            if agent and agent in self.history:
                outliers[rid] = agent
        for rid, agent in outliers.items():
            fired |= self._cost(conn, rid, agent, cfg)
        if fired:
            self.notify()
        self._since_prune += len(records)
        if self._since_prune > 2000:
            self._prune(now - max(600.0, 2 * server.runs.idle_timeout_s))


    __call__ = after_batch  # a plain writer hook too (bench/guards.py times it directly)
    def rollback(self, records: list[CallRecord]) -> None:
        """The writer's transaction failed and will be retried (a full disk): give back the events
        taken and forget the runs, so the retry reseeds their counters from what is stored instead
        of counting the same calls again."""
        for call_id, items in self._taken:
            for item in items:
                self.pending.add(call_id, item)
        self._taken = []
        for rec in records:
            for d in (self._seen, self._loops, self._failures, self._flagged):
                d.pop(rec.run_id, None)

    def _seed(self, conn: apsw.Connection, rid: str, batch: set[str], cfg: Any) -> None:
        """Loop counts and recent failed attempts of a run's calls stored before this batch, so a
        restart (or a run idle long enough to be pruned) does not reset its anomaly counters."""
        counts: dict[str, int] = {}
        failures: list[float] = []
        for call_id, request, attempts, started, provider, endpoint, tags, alias in runs.calls_to_check(conn, rid):
            if call_id in batch:
                continue
            if rid not in self._agents and (alias or tags):
                self._agents[rid] = (_dec.decode(tags) or {}).get("agent") or alias or ""
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

    def _cost(self, conn: apsw.Connection, rid: str, agent: str, cfg: Any) -> bool:
        s = self.history.get(agent)
        row = runs.calls_and_cost(conn, rid)
        if s is None or row is None or s.runs < cfg.cost_min_history:
            return False
        calls, cost = row
        factor = cfg.cost_factor
        over = []
        if calls > s.calls_p95 and calls > factor * s.calls_p50:
            over.append("calls")
        if cost > s.cost_p95 and cost > factor * s.cost_p50:
            over.append("cost")
        if not over:
            return False
        return self._flag(conn, rid, "cost", {
            "agent": agent, "over": over, "history_runs": s.runs, "cost_factor": factor, "calls": calls,
            "calls_p50": s.calls_p50, "calls_p95": s.calls_p95, "cost_usd": cost / 1e9,
            "cost_p50_usd": s.cost_p50 / 1e9, "cost_p95_usd": s.cost_p95 / 1e9,
            # what the run detail, `runs --sort over_usual` and the TUI's meter show for this run
            "expected": expected(s, cost, calls, cfg.cost_min_history)})

    def _flag(self, conn: apsw.Connection, rid: str, name: str, detail: dict) -> bool:
        flagged = self._flagged.setdefault(rid, set())
        if name in flagged:
            return False
        flagged.add(name)
        if not runs.flag(conn, rid, name):  # already flagged before a restart
            return False
        emit(conn, self.rt.reader, self.rt.configs.server.webhooks, f"anomaly.{name}", rid, detail)
        log.warning("run %s: anomaly %s %s", rid, name, detail)
        return True

    def _prune(self, older_than: float) -> None:
        self._since_prune = 0
        for rid in [r for r, t in self._seen.items() if t < older_than]:
            for d in (self._seen, self._loops, self._failures, self._flagged, self._agents):
                d.pop(rid, None)
