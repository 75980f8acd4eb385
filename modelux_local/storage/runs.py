"""Reads of the runs table for the live views (the TUI's runs table and header).

Plain rows back; the caller decides what "completed" means with its own clock.
"""
from __future__ import annotations

import apsw

TABLE_COLUMNS = ("run_id, agent, tags, status, started_at, last_at, ended_at, calls, errors, retries, "
                 "input_tokens + output_tokens, cost_nusd, unpriced_calls, anomalies, abort_reason")


def ready(conn: apsw.Connection) -> None:
    """Raises when the runs table is not there yet (the server is still migrating)."""
    conn.execute("SELECT 1 FROM runs LIMIT 1").fetchall()


def data_version(conn: apsw.Connection) -> int:
    """Changes whenever another connection commits."""
    return conn.execute("PRAGMA data_version").fetchone()[0]


def filter_where(query: str) -> tuple[str, list]:
    """The runs filter (`/` in the TUI) as a WHERE clause over the runs table and its arguments: every
    word must match, `k=v` a tag exactly, anything else a substring of id, agent, status, tags, flags.
    tui/runfilter.py `matches` applies the same rule to loaded rows."""
    clauses, args = [], []
    for word in query.split():
        if "=" in word:
            k, _, v = word.partition("=")
            clauses.append("json_extract(tags, ?) = ?")
            args += ['$."' + k.replace('"', '') + '"', v]
        else:
            clauses.append("(lower(run_id || ' ' || coalesce(agent, '') || ' ' || status || ' ' || tags || ' ' || "
                           "anomalies) LIKE ?)")
            args.append(f"%{word.lower()}%")
    return " AND ".join(clauses), args


def live_table(conn: apsw.Connection, limit: int, active_since: float, query: str = "") -> list[tuple]:
    """TABLE_COLUMNS of the `limit` most recently started runs plus every run active since
    `active_since`, replays left out; with a filter `query`, also the `limit` newest matching runs.

    The first two halves walk an index (runs_started; runs_status_last), so this stays ~1 ms on a
    database of 50,000 runs; a filter costs one scan of the runs table while it is on."""
    where, args = filter_where(query)
    matching = (f"OR run_id IN (SELECT run_id FROM runs WHERE {where} ORDER BY started_at DESC LIMIT ?) "
                if where else "")
    return conn.execute(
        f"SELECT {TABLE_COLUMNS} FROM runs "
        "WHERE replay_id IS NULL AND (run_id IN (SELECT run_id FROM runs ORDER BY started_at DESC LIMIT ?) "
        "OR run_id IN (SELECT run_id FROM runs WHERE status = 'running' AND last_at >= ?) " + matching + ") "
        "ORDER BY started_at DESC", (limit, active_since, *args, *([limit] if where else []))).fetchall()


def running_count(conn: apsw.Connection, active_since: float) -> int:
    return conn.execute("SELECT count(*) FROM runs WHERE status = 'running' AND last_at >= ? "
                        "AND replay_id IS NULL", (active_since,)).fetchone()[0]


def status_and_last(conn: apsw.Connection, run_id: str) -> tuple[str, float] | None:
    """(stored status, last_at) of a run, or None."""
    return conn.execute("SELECT status, last_at FROM runs WHERE run_id = ?", (run_id,)).fetchone()
