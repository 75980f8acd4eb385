"""Reading calls (with their run's tags) in time order, in pages, for the exporters (export/)."""
from __future__ import annotations

from collections.abc import Iterator

import apsw

from .bodies import decode_body
from .queries import STEP_COLUMNS, _json_or_text, step_from_row

PAGE = 1000


def count_calls(conn: apsw.Connection, since: float | None, include_replays: bool = False) -> int:
    where, args = _where(since, include_replays)
    return conn.execute(f"SELECT count(*) FROM calls {where}", args).fetchone()[0]


def iter_calls(conn: apsw.Connection, since: float | None, include_replays: bool = False,
               with_bodies: bool = True) -> Iterator[dict]:
    """Steps (as the management API shapes them) plus `run_id`, request/response bodies and
    `started_ts`/`ended_ts` epoch seconds; keyset-paged so memory stays flat on big databases."""
    where, args = _where(since, include_replays)
    bodies = ", request, response" if with_bodies else ""
    last = (-1.0, "")
    seq: dict[str, int] = {}  # run -> seq of the last exported call (the run may start before --since)
    while True:
        page = list(conn.execute(
            f"SELECT {STEP_COLUMNS}{bodies} FROM calls {where} {'AND' if where else 'WHERE'} "
            f"(started_at, call_id) > (?, ?) ORDER BY started_at, call_id LIMIT {PAGE}", (*args, *last)))
        if not page:
            return
        for row in page:
            step = step_from_row(row[:len(row) - (2 if with_bodies else 0)], None)
            run_id = step["run_id"]
            if run_id:
                if run_id not in seq:
                    seq[run_id] = conn.execute("SELECT count(*) FROM calls WHERE run_id = ? AND (started_at < ? OR "
                                               "(started_at = ? AND call_id < ?))",
                                               (run_id, row[2], row[2], row[0])).fetchone()[0]
                seq[run_id] += 1
                step["seq"] = seq[run_id]
            step["started_ts"] = row[2]
            step["ended_ts"] = row[2] + (step["latency_ms"] or 0) / 1000
            if with_bodies:
                step["request"] = _json_or_text(decode_body(conn, row[-2]))
                step["response"] = _json_or_text(decode_body(conn, row[-1]))
            yield step
        last = (page[-1][2], page[-1][0])


def _where(since: float | None, include_replays: bool) -> tuple[str, tuple]:
    clauses, args = [], []
    if since is not None:
        clauses.append("started_at >= ?")
        args.append(since)
    if not include_replays:
        clauses.append("replay_id IS NULL")
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", tuple(args)


def runs_by_id(conn: apsw.Connection, run_ids: list[str]) -> dict[str, dict]:
    """Rollups of these runs, for the exporters' root spans."""
    import msgspec

    from ..pricing import nanos_to_usd

    out: dict[str, dict] = {}
    for i in range(0, len(run_ids), 500):
        chunk = run_ids[i:i + 500]
        rows = conn.execute(f"SELECT run_id, tags, started_at, last_at, ended_at, status, calls, errors, cost_nusd, "
                            f"unpriced_calls FROM runs WHERE run_id IN ({','.join('?' * len(chunk))})", chunk)
        for run_id, tags, started, last, ended, status, calls, errors, cost, unpriced in rows:
            out[run_id] = {"run_id": run_id, "tags": msgspec.json.decode(tags), "started_ts": started,
                           "ended_ts": ended or last, "status": status, "calls": calls, "errors": errors,
                           "cost_usd": None if calls and unpriced == calls else nanos_to_usd(cost)}
    return out
