"""Reads of the runs table for the live views (the TUI's runs table and header).

Plain rows back; the caller decides what "completed" means with its own clock.
"""
from __future__ import annotations

import apsw

from .analytics_queries import RunFilter
from .queries import RUN_COLUMNS

TABLE_COLUMNS = ("run_id, agent, tags, status, started_at, last_at, ended_at, calls, errors, retries, "
                 "input_tokens + output_tokens, cost_nusd, unpriced_calls, anomalies, abort_reason")


def ready(conn: apsw.Connection) -> None:
    """Raises when the runs table is not there yet (the server is still migrating)."""
    conn.execute("SELECT 1 FROM runs LIMIT 1").fetchall()


def data_version(conn: apsw.Connection) -> int:
    """Changes whenever another connection commits."""
    return conn.execute("PRAGMA data_version").fetchone()[0]


def live_table(conn: apsw.Connection, limit: int, active_since: float, query: str = "") -> list[tuple]:
    """TABLE_COLUMNS of the `limit` most recently started runs plus every run active since
    `active_since`, replays left out; with a filter `query`, also the `limit` newest matching runs.

    The first two halves walk an index (runs_started; runs_status_last), so this stays ~1 ms on a
    database of 50,000 runs; a filter costs one scan of the runs table while it is on."""
    where, args = RunFilter.from_query(query).where(0.0)  # no status in it: the idle timeout is unused
    matching = f"OR run_id IN (SELECT run_id FROM runs{where} ORDER BY started_at DESC LIMIT ?) " if where else ""
    return conn.execute(
        f"SELECT {TABLE_COLUMNS} FROM runs "
        "WHERE replay_id IS NULL AND (run_id IN (SELECT run_id FROM runs ORDER BY started_at DESC LIMIT ?) "
        "OR run_id IN (SELECT run_id FROM runs WHERE status = 'running' AND last_at >= ?) " + matching + ") "
        "ORDER BY started_at DESC", (limit, active_since, *args, *([limit] if where else []))).fetchall()


def played_back_runs(conn: apsw.Connection) -> set[str]:
    """Runs with calls answered from a cassette or the dev cache (walks the small calls_playback index)."""
    return {r[0] for r in conn.execute("SELECT DISTINCT run_id FROM calls WHERE provider IN ('cassette', 'cache') "
                                       "AND run_id IS NOT NULL")}


def running_count(conn: apsw.Connection, active_since: float) -> int:
    return conn.execute("SELECT count(*) FROM runs WHERE status = 'running' AND last_at >= ? "
                        "AND replay_id IS NULL", (active_since,)).fetchone()[0]


def status_and_last(conn: apsw.Connection, run_id: str) -> tuple[str, float] | None:
    """(stored status, last_at) of a run, or None."""
    return conn.execute("SELECT status, last_at FROM runs WHERE run_id = ?", (run_id,)).fetchone()


# -- run state changes (analytics/events.py fires the events that go with them) -----------------

def summary_row(conn: apsw.Connection, run_id: str) -> tuple[tuple | None, list[float]]:
    """(the run's RUN_COLUMNS row or None, its calls' latencies ascending), read on `conn` so that a
    transaction sees its own writes."""
    row = conn.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    if row is None:
        return None, []
    return row, [r[0] for r in conn.execute(
        "SELECT latency_ms FROM calls WHERE run_id = ? AND latency_ms IS NOT NULL ORDER BY latency_ms", (run_id,))]


def exists(conn: apsw.Connection, run_id: str) -> bool:
    return conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is not None


def abort_reason(conn: apsw.Connection, run_id: str) -> str | None:
    row = conn.execute("SELECT abort_reason FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    return row[0] if row else None


def ensure(conn: apsw.Connection, run_id: str, now: float) -> None:
    """A run row to hang a state on (an abort can come before the run's first call is written).
    The calls rollup upsert merges into it later (started_at takes the minimum)."""
    conn.execute("INSERT INTO runs (run_id, started_at, last_at) VALUES (?, ?, ?) ON CONFLICT(run_id) DO NOTHING",
                 (run_id, now, now))


def abort(conn: apsw.Connection, run_id: str, reason: str, code: str, now: float) -> bool:
    """Sets the run aborted; False if it already was."""
    conn.execute("UPDATE runs SET status = 'aborted', abort_reason = ?, abort_code = ?, "
                 "ended_at = ? WHERE run_id = ? AND status != 'aborted'", (reason, code, now, run_id))
    return conn.changes() > 0


def log_abort(conn: apsw.Connection, run_id: str, reason: str, code: str, at: float, source: str) -> None:
    """Lets a running server learn of an abort it did not make."""
    conn.execute("INSERT INTO run_aborts (run_id, reason, code, at, source) VALUES (?, ?, ?, ?, ?)",
                 (run_id, reason, code, at, source))


def set_outcome(conn: apsw.Connection, run_id: str, outcome_json: str) -> None:
    conn.execute("UPDATE runs SET outcome = ? WHERE run_id = ?", (outcome_json, run_id))


def complete(conn: apsw.Connection, run_id: str) -> bool:
    """A running run completes (ended at its last call); False if it was not running."""
    conn.execute("UPDATE runs SET status = 'completed', ended_at = last_at WHERE run_id = ? AND status = 'running'",
                 (run_id,))
    return conn.changes() > 0


def complete_quietly(conn: apsw.Connection, idle_before: float, stale_before: float) -> None:
    """Completes running runs idle since `idle_before` that are replays or idle since `stale_before`."""
    conn.execute("UPDATE runs SET status = 'completed', ended_at = last_at WHERE status = 'running' AND last_at < ? "
                 "AND (last_at < ? OR replay_id IS NOT NULL)", (idle_before, stale_before))


def idle(conn: apsw.Connection, idle_before: float, limit: int) -> list[str]:
    """Ids of running runs with no call since `idle_before`, longest idle first."""
    return [r[0] for r in conn.execute("SELECT run_id FROM runs WHERE status = 'running' AND last_at < ? "
                                       "ORDER BY last_at LIMIT ?", (idle_before, limit))]


def flag(conn: apsw.Connection, run_id: str, name: str) -> bool:
    """Adds anomaly `name` to the run's flags; False if it already had it."""
    conn.execute("UPDATE runs SET anomalies = json_insert(anomalies, '$[#]', ?) WHERE run_id = ? "
                 "AND NOT EXISTS (SELECT 1 FROM json_each(runs.anomalies) WHERE value = ?)", (name, run_id, name))
    return conn.changes() > 0


def calls_and_cost(conn: apsw.Connection, run_id: str) -> tuple[int, int] | None:
    return conn.execute("SELECT calls, cost_nusd FROM runs WHERE run_id = ?", (run_id,)).fetchone()


def calls_to_check(conn: apsw.Connection, run_id: str) -> list[tuple]:
    """(call_id, request body as stored, attempts, started_at, provider, endpoint, tags, alias) of the run's
    recorded calls in order: what the anomaly checks look at."""
    return conn.execute("SELECT call_id, request, attempts, started_at, provider, endpoint, tags, alias FROM calls "
                        "WHERE run_id = ? AND replay_id IS NULL ORDER BY started_at, call_id", (run_id,)).fetchall()


def budget_seed(conn: apsw.Connection, since: float, before: float) -> tuple[list, list, set]:
    """What the budget guard needs after a restart: (runs active since `since` as (run_id, status,
    abort_reason, abort_code, started_at, last_at); (run_id, calls, tokens, cost_nusd) of their calls
    made before `before`; run ids already warned)."""
    runs = list(conn.execute(
        "SELECT run_id, status, abort_reason, abort_code, started_at, last_at FROM runs WHERE last_at >= ?", (since,)))
    # calls refused by a guard (no provider was tried) did not count against the budget
    sums = list(conn.execute(
        "SELECT c.run_id, count(*), sum(coalesce(c.input_tokens, 0) + coalesce(c.output_tokens, 0)), "
        "sum(coalesce(c.cost_nusd, 0)) FROM calls c JOIN runs r ON r.run_id = c.run_id "
        "WHERE r.last_at >= ? AND c.started_at < ? AND NOT (c.status = 'aborted' AND c.provider IS NULL) "
        "GROUP BY c.run_id", (since, before)))
    warned = {r[0] for r in conn.execute(
        "SELECT DISTINCT run_id FROM events WHERE event = 'budget.warning' AND at >= ?", (since,))}
    return runs, sums, warned


def newest_abort_seq(conn: apsw.Connection) -> int:
    return conn.execute("SELECT coalesce(max(seq), 0) FROM run_aborts").fetchone()[0]


def aborts_since(conn: apsw.Connection, seq: int) -> list[tuple]:
    """(seq, run_id, reason, code) of the aborts logged after `seq`, in order."""
    return list(conn.execute("SELECT seq, run_id, reason, code FROM run_aborts WHERE seq > ? ORDER BY seq", (seq,)))
