"""The webhook outbox tables: events, one delivery per (event, url), and each delivery attempt.

analytics/events.py decides what to emit and analytics/webhooks.py delivers; the SQL is here.
"""
from __future__ import annotations

import json

import apsw

from ..core.stats import iso


def add_event(conn: apsw.Connection, event_id: str, event: str, run_id: str | None, at: float, detail: str,
              body: bytes, urls: list[str]) -> None:
    """The event and one pending delivery per url, on the caller's transaction."""
    conn.execute("INSERT INTO events (event_id, event, run_id, at, detail, body) VALUES (?, ?, ?, ?, ?, ?)",
                 (event_id, event, run_id, at, detail, body))
    conn.executemany("INSERT OR IGNORE INTO webhook_deliveries (event_id, url, status, attempts, next_at) "
                     "VALUES (?, ?, 'pending', 0, ?)", [(event_id, u, at) for u in urls])


def due(conn: apsw.Connection, now: float, limit: int) -> list[tuple]:
    """(event_id, url, attempts, event, body) of the pending deliveries due by `now`, oldest first."""
    return list(conn.execute(
        "SELECT d.event_id, d.url, d.attempts, e.event, e.body FROM webhook_deliveries d "
        "JOIN events e ON e.event_id = d.event_id WHERE d.status = 'pending' AND d.next_at <= ? "
        "ORDER BY d.next_at LIMIT ?", (now, limit)))


def next_due(conn: apsw.Connection) -> float | None:
    row = conn.execute("SELECT min(next_at) FROM webhook_deliveries WHERE status = 'pending'").fetchone()
    return row[0] if row else None


def record_attempt(conn: apsw.Connection, event_id: str, url: str, attempt: int, at: float, http_status: int | None,
                   error: str | None, latency_ms: float | None, *, gave_up: bool, next_at: float) -> None:
    """The attempt, and the delivery delivered (no error), failed (`gave_up`) or pending again at `next_at`."""
    conn.execute("INSERT INTO webhook_attempts (event_id, url, attempt, at, http_status, error, latency_ms) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?)", (event_id, url, attempt, at, http_status, error, latency_ms))
    if error is None:
        conn.execute("UPDATE webhook_deliveries SET status = 'delivered', attempts = ?, delivered_at = ?, "
                     "last_error = NULL WHERE event_id = ? AND url = ?", (attempt, at, event_id, url))
    else:
        conn.execute("UPDATE webhook_deliveries SET status = ?, attempts = ?, next_at = ?, last_error = ? "
                     "WHERE event_id = ? AND url = ?",
                     ("failed" if gave_up else "pending", attempt, next_at, error, event_id, url))


def prune(conn: apsw.Connection, before: float) -> int:
    """Drops events older than `before` whose deliveries are all settled (delivered or failed)."""
    conn.execute("DELETE FROM webhook_attempts WHERE at < ? AND event_id NOT IN "
                 "(SELECT event_id FROM webhook_deliveries WHERE status = 'pending')", (before,))
    conn.execute("DELETE FROM webhook_deliveries WHERE status != 'pending' AND event_id IN "
                 "(SELECT event_id FROM events WHERE at < ?)", (before,))
    conn.execute("DELETE FROM events WHERE at < ? AND event_id NOT IN (SELECT event_id FROM webhook_deliveries)",
                 (before,))
    return conn.changes()


def recent_events(conn: apsw.Connection, limit: int) -> list[dict]:
    """The newest `limit` events, each with its deliveries and their attempts (`webhooks` in the CLI)."""
    events = list(conn.execute("SELECT event_id, event, run_id, at, detail FROM events ORDER BY at DESC LIMIT ?",
                               (limit,)))
    out = []
    for eid, event, run_id, at, detail in events:
        deliveries = []
        for url, status, n, next_at, delivered_at, last_error in conn.execute(
                "SELECT url, status, attempts, next_at, delivered_at, last_error FROM webhook_deliveries "
                "WHERE event_id = ? ORDER BY url", (eid,)):
            attempts = [{"attempt": a, "at": iso(t), "http_status": s, "error": e, "latency_ms": round(ms or 0, 1)}
                        for a, t, s, e, ms in conn.execute(
                            "SELECT attempt, at, http_status, error, latency_ms FROM webhook_attempts "
                            "WHERE event_id = ? AND url = ? ORDER BY attempt", (eid, url))]
            deliveries.append({"url": url, "status": status, "attempts": n, "last_error": last_error,
                               "next_at": iso(next_at) if status == "pending" else None,
                               "delivered_at": iso(delivered_at), "tries": attempts})
        out.append({"id": eid, "event": event, "run_id": run_id, "at": iso(at), "detail": json.loads(detail),
                    "deliveries": deliveries})
    return out
