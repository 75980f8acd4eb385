"""Read queries over runs at scale: the filtered runs list and analytics per tag value.

Both read the per-run rollups the writer keeps in `runs` (never re-summing calls), and
take latencies from the covering index calls(run_id, latency_ms), so that at 1M calls
in 50k runs `runs` stays in milliseconds and `analytics` in a fraction of a second.
Percentiles are exact: SQLite's percentile() over every call latency of the group,
the same linear interpolation as core.stats.percentile.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from ..core.durations import DurationError, since_timestamp
from ..errors import BadRequest
from ..pricing import nanos_to_usd
from .history import DEFAULT_MIN_HISTORY
from .queries import RUN_COLUMNS, Reader

SORTS = {"started": "started_at DESC", "cost": "cost_nusd DESC", "calls": "calls DESC",
         "over_usual": "started_at DESC"}  # over_usual: ordered after reading, by `expected.over_usual`
STATUSES = ("running", "completed", "aborted")
DEFAULT_LIMIT = 50
MAX_LIMIT = 10_000


@dataclass
class RunFilter:
    """The one runs filter: `runs` and the management API build it from flags, the TUI's `/` from
    its query text (`from_query`)."""

    since: float | None = None            # unix time: runs started at or after it
    tags: dict[str, str] = field(default_factory=dict)
    status: str | None = None
    include_replays: bool = False
    words: tuple[str, ...] = ()           # each a substring of id, agent, status, tags or flags

    @classmethod
    def from_query(cls, query: str) -> RunFilter:
        """The TUI's filter text: every word must match, `k=v` a tag exactly, anything else a substring
        of id, agent, status, tags and flags (tui/runfilter.py `matches`: the same rule on loaded rows)."""
        tags, words = {}, []
        for word in query.split():
            k, eq, v = word.partition("=")
            if eq:
                tags[k] = v
            else:
                words.append(word.lower())
        return cls(tags=tags, include_replays=True, words=tuple(words))

    def where(self, idle_timeout_s: float, now: float | None = None) -> tuple[str, list]:
        """SQL conditions on `runs` and their parameters."""
        conds: list[str] = []
        params: list = []
        if not self.include_replays:
            conds.append("replay_id IS NULL")
        if self.since is not None:
            conds.append("started_at >= ?")
            params.append(self.since)
        for k, v in self.tags.items():
            if k == "agent":  # a real, indexed column
                conds.append("agent = ?")
                params.append(v)
            else:
                conds.append("json_extract(tags, ?) = ?")
                params += [json_path(k), v]
        for word in self.words:
            conds.append("(lower(run_id || ' ' || coalesce(agent, '') || ' ' || status || ' ' || tags || ' ' || "
                         "anomalies) LIKE ?)")
            params.append(f"%{word}%")
        if self.status is not None:
            # a run idle past runs.idle_timeout_s reads as completed even before the
            # lifecycle job marks it (Reader.run_summary does the same)
            cutoff = (time.time() if now is None else now) - idle_timeout_s
            if self.status == "running":
                conds.append("status = 'running' AND last_at > ?")
                params.append(cutoff)
            elif self.status == "completed":
                conds.append("(status = 'completed' OR (status = 'running' AND last_at <= ?))")
                params.append(cutoff)
            else:
                conds.append("status = ?")
                params.append(self.status)
        return (" WHERE " + " AND ".join(conds)) if conds else "", params


def json_path(key: str) -> str:
    """A JSON path naming one top-level key, quoted so dots or spaces in tag keys stay literal."""
    return '$."' + key.replace('"', '\\"') + '"'


def parse_tag_filter(text: str, prefer: str = "=") -> tuple[str, str]:
    """`agent=planner` (CLI) or `agent:planner` (API); the preferred separator wins when both occur."""
    other = ":" if prefer == "=" else "="
    for sep in (prefer, other):
        k, found, v = text.partition(sep)
        if found and k:
            return k, v
    raise BadRequest(f"bad tag filter {text!r}: use key{prefer}value")


def make_filter(*, since: str | None = None, tags: list[str] | None = None, status: str | None = None,
                include_replays: bool = False, tag_sep: str = "=") -> RunFilter:
    """Validates user input (CLI flags or query parameters) into a RunFilter; BadRequest on bad input."""
    try:
        since_ts = since_timestamp(since)
    except DurationError as e:
        raise BadRequest(str(e), param="since") from None
    if status is not None and status not in STATUSES:
        raise BadRequest(f"unknown status {status!r}; one of {', '.join(STATUSES)}", param="status")
    parsed = dict(parse_tag_filter(t, tag_sep) for t in tags or [])
    return RunFilter(since_ts, parsed, status or None, include_replays)


def list_runs(reader: Reader, flt: RunFilter, sort: str = "started", limit: int = DEFAULT_LIMIT,
              min_history: int = DEFAULT_MIN_HISTORY) -> list[dict]:
    """Runs, each with its `expected` (its agent's usual run). `over_usual` sorts by how far past its
    agent's p90 a run is (runs that cannot be judged last) and, without a status filter, lists the
    running runs only: the question it answers is which run is off course now."""
    if sort not in SORTS:
        raise BadRequest(f"unknown sort {sort!r}; one of {', '.join(SORTS)}", param="sort")
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}", param="limit")
    if sort == "over_usual" and flt.status is None:
        flt = replace(flt, status="running")
    where, params = flt.where(reader.idle_timeout_s)
    conn = reader.conn()
    rows = conn.execute(f"SELECT {RUN_COLUMNS} FROM runs{where} ORDER BY {SORTS[sort]}, run_id LIMIT ?",
                        (*params, MAX_LIMIT if sort == "over_usual" else limit)).fetchall()
    expect = reader.expectations(rows, min_history)
    if sort == "over_usual":
        def ratio(r: tuple) -> float:
            e = expect.get(r[0])
            return -1.0 if e is None or e["over_usual"] is None else e["over_usual"]
        rows = sorted(rows, key=ratio, reverse=True)[:limit]
    return [{**reader.run_summary(r, reader.run_latencies(r[0])), "expected": expect.get(r[0])} for r in rows]


def analytics(reader: Reader, group_by: str, flt: RunFilter, by_model: bool = False) -> dict:
    """Runs grouped by the value of one tag: totals from the rollups, exact latency percentiles;
    `by_model`: each group's calls by provider/model too (where its money went).

    A run belongs to the group of its tag value (runs without the tag: value null). Calls
    outside any run (no run_id) are not counted: analytics is per run.
    """
    if not group_by:
        raise BadRequest("group_by is required (a tag key, e.g. agent)", param="group_by")
    where, params = flt.where(reader.idle_timeout_s)
    if group_by == "agent":
        value_sql, value_params = "agent", []
    else:
        value_sql, value_params = "json_extract(tags, ?)", [json_path(group_by)]
    conn = reader.conn()
    totals = conn.execute(
        f"SELECT {value_sql} AS v, count(*), sum(calls), sum(errors), sum(cost_nusd), sum(unpriced_calls), "
        f"sum(input_tokens), sum(output_tokens) FROM runs{where} GROUP BY v",
        (*value_params, *params)).fetchall()
    latency = {v: (p50, p95) for v, p50, p95 in conn.execute(
        f"SELECT g.v, percentile(c.latency_ms, 50), percentile(c.latency_ms, 95) "
        f"FROM (SELECT run_id, {value_sql} AS v FROM runs{where}) AS g "
        f"JOIN calls AS c INDEXED BY calls_run_latency ON c.run_id = g.run_id "
        f"WHERE c.latency_ms IS NOT NULL GROUP BY g.v",
        (*value_params, *params))}
    saved = _savings(conn, value_sql, value_params, where, params)
    groups = []
    for v, runs, calls, errors, cost, unpriced, tin, tout in totals:
        p50, p95 = latency.get(v, (None, None))
        played, hits, saved_nusd = saved.get(v, (0, 0, 0))
        groups.append({
            "value": None if v is None else str(v), "runs": runs, "calls": calls, "errors": errors,
            "cost_usd": None if calls and unpriced == calls else nanos_to_usd(cost),
            "unpriced_calls": unpriced, "input_tokens": tin, "output_tokens": tout,
            "p50_ms": _round(p50), "p95_ms": _round(p95),
            "error_rate": round(errors / calls, 6) if calls else 0.0,
            "played_back_calls": played, "cache_hits": hits, "saved_usd": nanos_to_usd(saved_nusd or 0),
        })
    if by_model:
        from .breakdown import spend_by_model

        models = spend_by_model(conn, group_by, flt, reader.idle_timeout_s)
        for g in groups:
            g["by_model"] = [line.as_dict() for line in models.get(g["value"], [])]
    groups.sort(key=lambda g: (-(g["cost_usd"] or 0), -g["calls"], g["value"] is None, g["value"] or ""))
    return {"group_by": group_by, "groups": groups, "percentiles": "exact"}


def _savings(conn, value_sql: str, value_params: list, where: str, params: list) -> dict:
    """Per group: calls answered from a cassette, from the dev cache, and the recorded cost they saved
    (playback room; the gateway puts it in the call's decision). Reads only those calls (partial index)."""
    return {v: (played or 0, hits or 0, nusd or 0) for v, played, hits, nusd in conn.execute(
        f"SELECT g.v, sum(c.provider = 'cassette'), sum(c.provider = 'cache'), "
        f"sum(json_extract(c.decision, '$.playback.saved_nusd')) "
        f"FROM calls AS c INDEXED BY calls_playback "
        f"JOIN (SELECT run_id, {value_sql} AS v FROM runs{where}) AS g ON g.run_id = c.run_id "
        f"WHERE c.provider IN ('cassette', 'cache') GROUP BY g.v", (*value_params, *params))}


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)
