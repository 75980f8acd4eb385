"""The durable outbox: events are rows written in the transaction that caused them.

`emit(conn, ...)` is called on a connection that is inside a transaction (the writer's batch,
a writer job, or the CLI's own transaction): the event, its JSON body and one pending delivery
per matching webhook commit or roll back together with the change they announce. The body
carries the run summary as it was at that moment, so every retry POSTs the same bytes.
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable, Iterable, get_args

import apsw
import msgspec

from ..config.schema import Webhook, WebhookEvent
from ..core.stats import iso
from ..storage.queries import RUN_COLUMNS, Reader

EVENTS = get_args(WebhookEvent)

_enc = msgspec.json.Encoder()


def new_event_id() -> str:
    return f"evt_{time.time_ns():x}{os.urandom(3).hex()}"


def run_summary(conn: apsw.Connection, reader: Reader, run_id: str) -> dict | None:
    """The RunSummary of `run_id` read on `conn` (sees this transaction's own writes)."""
    row = conn.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    if row is None:
        return None
    lat = [r[0] for r in conn.execute(
        "SELECT latency_ms FROM calls WHERE run_id = ? AND latency_ms IS NOT NULL ORDER BY latency_ms", (run_id,))]
    return reader.run_summary(row, lat)


def wants(hook: Webhook, event: str) -> bool:
    return not hook.events or event in hook.events


def emit(conn: apsw.Connection, reader: Reader, webhooks: Iterable[Webhook], event: str, run_id: str | None,
         detail: dict[str, Any], at: float | None = None) -> str:
    """Writes one event and its pending deliveries; returns the event id."""
    at = time.time() if at is None else at
    eid = new_event_id()
    run = run_summary(conn, reader, run_id) if run_id else None
    body = _enc.encode({"id": eid, "event": event, "at": iso(at), "run": run, "detail": detail})
    conn.execute("INSERT INTO events (event_id, event, run_id, at, detail, body) VALUES (?, ?, ?, ?, ?, ?)",
                  (eid, event, run_id, at, _enc.encode(detail).decode(), body))
    urls = {h.url for h in webhooks if wants(h, event)}
    conn.executemany("INSERT OR IGNORE INTO webhook_deliveries (event_id, url, status, attempts, next_at) "
                     "VALUES (?, ?, 'pending', 0, ?)", [(eid, u, at) for u in sorted(urls)])
    return eid


# -- run state changes shared by the API, the CLI and the budget guard ----------------------


def ensure_run(conn: apsw.Connection, run_id: str, now: float) -> None:
    """A run row to hang a state on (an abort can come before the run's first call is written).
    The calls rollup upsert merges into it later (started_at takes the minimum)."""
    conn.execute("INSERT INTO runs (run_id, started_at, last_at) VALUES (?, ?, ?) ON CONFLICT(run_id) DO NOTHING",
                 (run_id, now, now))


def mark_aborted(conn: apsw.Connection, reader: Reader, webhooks: Iterable[Webhook], run_id: str, reason: str,
                 code: str, source: str, detail: dict | None = None, log_abort: bool = False) -> bool:
    """Sets the run aborted and fires `run.aborted`, once. Returns False if it already was aborted."""
    now = time.time()
    ensure_run(conn, run_id, now)
    conn.execute("UPDATE runs SET status = 'aborted', abort_reason = ?, abort_code = ?, "
                 "ended_at = ? WHERE run_id = ? AND status != 'aborted'",
                 (reason, code, now, run_id))
    changed = conn.changes() > 0
    if log_abort:  # lets a running server learn of an abort it did not make
        conn.execute("INSERT INTO run_aborts (run_id, reason, code, at, source) VALUES (?, ?, ?, ?, ?)",
                     (run_id, reason, code, now, source))
    if changed:
        emit(conn, reader, webhooks, "run.aborted", run_id, {"reason": reason, "code": code, "by": source,
                                                              **(detail or {})}, now)
    return changed


def record_outcome(conn: apsw.Connection, reader: Reader, webhooks: Iterable[Webhook], run_id: str,
                   outcome: dict) -> bool:
    """Stores the outcome; a running run completes (and fires `run.completed`). False: no such run."""
    if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is None:
        return False
    conn.execute("UPDATE runs SET outcome = ? WHERE run_id = ?", (_enc.encode(outcome).decode(), run_id))
    conn.execute("UPDATE runs SET status = 'completed', ended_at = last_at WHERE run_id = ? AND status = 'running'",
                 (run_id,))
    if conn.changes() > 0:
        emit(conn, reader, webhooks, "run.completed", run_id, {"reason": "outcome", "outcome": outcome})
    return True


# Runs idle for longer than this when first seen (a backlog after downtime or an upgrade), and
# replayed runs, are completed quietly, without a `run.completed` each; and at most IDLE_BATCH runs are completed per
# pass so one pass never holds the writer for long.
STALE_S = 24 * 3600
IDLE_BATCH = 200
RETENTION_S = 30 * 86400


def complete_idle(conn: apsw.Connection, reader: Reader, webhooks: Iterable[Webhook], idle_timeout_s: float,
                  busy: Callable[[str], bool] = lambda _r: False) -> list[str]:
    """Marks runs with no call for `idle_timeout_s` completed and fires `run.completed` for each."""
    now = time.time()
    cutoff = now - idle_timeout_s
    conn.execute("UPDATE runs SET status = 'completed', ended_at = last_at WHERE status = 'running' AND last_at < ? "
                 "AND (last_at < ? OR replay_id IS NOT NULL)", (cutoff, now - STALE_S))
    ids = [r[0] for r in conn.execute("SELECT run_id FROM runs WHERE status = 'running' AND last_at < ? "
                                      "ORDER BY last_at LIMIT ?", (cutoff, IDLE_BATCH))]
    done = []
    for rid in ids:
        if busy(rid):  # a call still in flight: the run is not idle, its record has not landed yet
            continue
        conn.execute("UPDATE runs SET status = 'completed', ended_at = last_at WHERE run_id = ? AND status = 'running'",
                     (rid,))
        if conn.changes() > 0:
            emit(conn, reader, webhooks, "run.completed", rid, {"reason": "idle", "idle_timeout_s": idle_timeout_s}, now)
            done.append(rid)
    return done


def prune_outbox(conn: apsw.Connection, now: float | None = None) -> int:
    """Drops events older than RETENTION_S whose deliveries are all settled (delivered or failed)."""
    before = (now or time.time()) - RETENTION_S
    conn.execute("DELETE FROM webhook_attempts WHERE at < ? AND event_id NOT IN "
                 "(SELECT event_id FROM webhook_deliveries WHERE status = 'pending')", (before,))
    conn.execute("DELETE FROM webhook_deliveries WHERE status != 'pending' AND event_id IN "
                 "(SELECT event_id FROM events WHERE at < ?)", (before,))
    conn.execute("DELETE FROM events WHERE at < ? AND event_id NOT IN (SELECT event_id FROM webhook_deliveries)",
                 (before,))
    return conn.changes()
