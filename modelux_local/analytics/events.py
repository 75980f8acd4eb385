"""The durable outbox: events are rows written in the transaction that caused them.

`emit(conn, ...)` is called on a connection that is inside a transaction (the writer's batch,
a writer job, or the CLI's own transaction): the event, its JSON body and one pending delivery
per matching webhook commit or roll back together with the change they announce. The body
carries the run summary as it was at that moment, so every retry POSTs the same bytes.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any, get_args

import apsw
import msgspec

from ..config.schema import Webhook, WebhookEvent
from ..core.stats import iso
from ..storage import outbox, runs
from ..storage.queries import Reader

EVENTS = get_args(WebhookEvent)

_enc = msgspec.json.Encoder()


def new_event_id() -> str:
    return f"evt_{time.time_ns():x}{os.urandom(3).hex()}"


def run_summary(conn: apsw.Connection, reader: Reader, run_id: str) -> dict | None:
    """The RunSummary of `run_id` read on `conn` (sees this transaction's own writes)."""
    row, lat = runs.summary_row(conn, run_id)
    return reader.run_summary(row, lat) if row is not None else None


def wants(hook: Webhook, event: str) -> bool:
    return not hook.events or event in hook.events


def emit(conn: apsw.Connection, reader: Reader, webhooks: Iterable[Webhook], event: str, run_id: str | None,
         detail: dict[str, Any], at: float | None = None) -> str:
    """Writes one event and its pending deliveries; returns the event id."""
    at = time.time() if at is None else at
    eid = new_event_id()
    run = run_summary(conn, reader, run_id) if run_id else None
    body = _enc.encode({"id": eid, "event": event, "at": iso(at), "run": run, "detail": detail})
    urls = {h.url for h in webhooks if wants(h, event)}
    outbox.add_event(conn, eid, event, run_id, at, _enc.encode(detail).decode(), body, sorted(urls))
    return eid


# -- run state changes shared by the API, the CLI and the budget guard ----------------------


ensure_run = runs.ensure


def mark_aborted(conn: apsw.Connection, reader: Reader, webhooks: Iterable[Webhook], run_id: str, reason: str,
                 code: str, source: str, detail: dict | None = None, log_abort: bool = False) -> bool:
    """Sets the run aborted and fires `run.aborted`, once. Returns False if it already was aborted."""
    now = time.time()
    ensure_run(conn, run_id, now)
    changed = runs.abort(conn, run_id, reason, code, now)
    if log_abort:  # lets a running server learn of an abort it did not make
        runs.log_abort(conn, run_id, reason, code, now, source)
    if changed:
        emit(conn, reader, webhooks, "run.aborted", run_id, {"reason": reason, "code": code, "by": source,
                                                              **(detail or {})}, now)
    return changed


def record_outcome(conn: apsw.Connection, reader: Reader, webhooks: Iterable[Webhook], run_id: str,
                   outcome: dict) -> bool:
    """Stores the outcome; a running run completes (and fires `run.completed`). False: no such run."""
    if not runs.exists(conn, run_id):
        return False
    runs.set_outcome(conn, run_id, _enc.encode(outcome).decode())
    if runs.complete(conn, run_id):
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
    runs.complete_quietly(conn, cutoff, now - STALE_S)
    ids = runs.idle(conn, cutoff, IDLE_BATCH)
    done = []
    for rid in ids:
        if busy(rid):  # a call still in flight: the run is not idle, its record has not landed yet
            continue
        if runs.complete(conn, rid):
            emit(conn, reader, webhooks, "run.completed", rid, {"reason": "idle", "idle_timeout_s": idle_timeout_s}, now)
            done.append(rid)
    return done


def prune_outbox(conn: apsw.Connection, now: float | None = None) -> int:
    """Drops events older than RETENTION_S whose deliveries are all settled (delivered or failed)."""
    return outbox.prune(conn, (now or time.time()) - RETENTION_S)
