"""Spend and traffic figures over the calls table (replays left out), for the live header."""
from __future__ import annotations

from collections.abc import Iterable

import apsw

from .queries import NOT_INTERNAL


def calls_between(conn: apsw.Connection, start: float, end: float) -> int:
    """Calls agents made (not replays, not the semantic indexer's own) in [start, end]."""
    return conn.execute("SELECT count(*) FROM calls WHERE started_at >= ? AND started_at <= ? "
                        f"AND replay_id IS NULL AND {NOT_INTERNAL}", (start, end)).fetchone()[0]


def cost_by_minute(conn: apsw.Connection, start: float, end: float) -> Iterable[tuple[int, int | None]]:
    """(minute index since `start`, nano-dollars) for each minute with calls."""
    return conn.execute(
        "SELECT CAST((started_at - ?) / 60 AS INTEGER) AS m, sum(cost_nusd) FROM calls "
        "WHERE started_at >= ? AND started_at <= ? AND replay_id IS NULL GROUP BY m", (start, start, end)).fetchall()


def spend_since(conn: apsw.Connection, since: float) -> tuple[int, int]:
    """(highest call rowid, nano-dollars spent since `since` up to it): the start of a running sum."""
    top = conn.execute("SELECT coalesce(max(rowid), 0) FROM calls").fetchone()[0]
    total = conn.execute("SELECT coalesce(sum(cost_nusd), 0) FROM calls WHERE started_at >= ? AND rowid <= ? "
                         "AND replay_id IS NULL", (since, top)).fetchone()[0]
    return top, total


def spend_after(conn: apsw.Connection, since: float, top: int) -> tuple[int, int]:
    """(new highest rowid, nano-dollars since `since` of the calls written after rowid `top`)."""
    return conn.execute(
        "SELECT coalesce(max(rowid), ?), coalesce(sum(CASE WHEN started_at >= ? AND replay_id IS NULL "
        "THEN cost_nusd END), 0) FROM calls WHERE rowid > ?", (top, since, top)).fetchone()
