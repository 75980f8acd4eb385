"""The live exporters' reads and their cursor (export_cursors, migration 13)."""
from __future__ import annotations

import time

import apsw

from .bodies import decode_body
from .queries import STEP_COLUMNS, _json_or_text, step_from_row


def read_cursor(conn: apsw.Connection, name: str) -> int:
    row = conn.execute("SELECT last_rowid FROM export_cursors WHERE name = ?", (name,)).fetchone()
    return row[0] if row else 0


def write_cursor(conn: apsw.Connection, name: str, last_rowid: int) -> None:
    conn.execute("INSERT INTO export_cursors (name, last_rowid, updated_at) VALUES (?, ?, ?) "
                 "ON CONFLICT(name) DO UPDATE SET last_rowid = excluded.last_rowid, updated_at = excluded.updated_at "
                 "WHERE excluded.last_rowid > export_cursors.last_rowid", (name, last_rowid, time.time()))


def calls_after(conn: apsw.Connection, after_rowid: int, limit: int) -> list[tuple[int, dict]]:
    """(rowid, step) of the calls recorded after `after_rowid`, in arrival order, with bodies and
    `started_ts`/`ended_ts`, replays included (the caller skips them but moves past them)."""
    out = []
    for row in conn.execute(f"SELECT rowid, {STEP_COLUMNS}, request, response FROM calls WHERE rowid > ? "
                            "ORDER BY rowid LIMIT ?", (after_rowid, limit)):
        step = step_from_row(row[1:-2], None)
        step["started_ts"] = row[3]
        step["ended_ts"] = row[3] + (step["latency_ms"] or 0) / 1000
        step["request"] = _json_or_text(decode_body(conn, row[-2]))
        step["response"] = _json_or_text(decode_body(conn, row[-1]))
        out.append((row[0], step))
    return out


def backlog(conn: apsw.Connection, after_rowid: int) -> tuple[int, float | None]:
    """How many calls are past the cursor, and when the oldest of them started."""
    n = conn.execute("SELECT count(*) FROM calls WHERE rowid > ?", (after_rowid,)).fetchone()[0]
    first = conn.execute("SELECT started_at FROM calls WHERE rowid > ? ORDER BY rowid LIMIT 1",
                         (after_rowid,)).fetchone() if n else None
    return n, first[0] if first else None
