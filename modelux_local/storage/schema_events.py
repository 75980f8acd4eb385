"""Migrations for run events: aborts, the webhook outbox. Numbers 3, 5, 7... belong to this room.

- `runs.abort_code`: why a run is refused (`run_aborted` or `run_budget_exceeded`), so a
  restarted server refuses it with the same code.
- `run_aborts`: an append-only log of aborts made from outside the server (the CLI writes the
  database directly); a running server polls it by `seq`, which costs one index probe.
- `events`: the durable outbox. One row per event, written in the same transaction as what
  caused it; `body` is the exact JSON that is POSTed (and signed), so every retry sends the
  same bytes.
- `webhook_deliveries`: one row per (event, webhook url): pending -> delivered | failed.
- `webhook_attempts`: every POST tried, with its HTTP status or error, for `modelux-local webhooks`.
"""

MIGRATIONS: list[tuple[int, str]] = [
    (3, """
ALTER TABLE runs ADD COLUMN abort_code TEXT;
CREATE INDEX runs_status_last ON runs(status, last_at);
CREATE TABLE run_aborts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, reason TEXT, code TEXT NOT NULL,
    at REAL NOT NULL, source TEXT NOT NULL
);
CREATE TABLE events (
    event_id TEXT PRIMARY KEY, event TEXT NOT NULL, run_id TEXT, at REAL NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}', body BLOB NOT NULL
);
CREATE INDEX events_run ON events(run_id, at);
CREATE INDEX events_at ON events(at);
CREATE TABLE webhook_deliveries (
    event_id TEXT NOT NULL, url TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL,
    delivered_at REAL, last_error TEXT,
    PRIMARY KEY (event_id, url)
);
CREATE INDEX webhook_due ON webhook_deliveries(status, next_at);
CREATE TABLE webhook_attempts (
    event_id TEXT NOT NULL, url TEXT NOT NULL, attempt INTEGER NOT NULL, at REAL NOT NULL,
    http_status INTEGER, error TEXT, latency_ms REAL
);
CREATE INDEX webhook_attempts_event ON webhook_attempts(event_id, url, attempt);
"""),
]
