"""An agent's usual run: percentiles of cost, calls and duration over its recent completed runs.

A run belongs to its `agent` tag, or, without one, to the alias of its first call ("@planner"):
runs of an untagged agent are still compared with their own kind. The `cost` anomaly, the run
detail's `expected`, `runs --sort over_usual` and the TUI's meter all read this one history.
Percentiles are SQLite's percentile() (the linear interpolation of core.stats.percentile).
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import apsw

from ..core.stats import percentile
from ..pricing import nanos_to_usd

HISTORY_DAYS = 30          # which completed runs make up an agent's history
DEFAULT_MIN_HISTORY = 20   # [anomalies] cost_min_history: runs before a run is judged against them

# the alias of a run's first call: the agent of a run without an `agent` tag
_FIRST_ALIAS = ("(SELECT c.alias FROM calls AS c WHERE c.run_id = r.run_id AND c.alias IS NOT NULL "
                "ORDER BY c.started_at LIMIT 1)")
_KEY = f"coalesce(r.agent, {_FIRST_ALIAS})"


@dataclass(frozen=True, slots=True)
class AgentHistory:
    """One agent's completed runs in the window: counts and nano-dollars as stored, seconds."""

    agent: str
    runs: int
    cost_p50: float
    cost_p90: float
    cost_p95: float
    calls_p50: float
    calls_p90: float
    calls_p95: float
    duration_p50: float
    duration_p90: float


def run_agents(conn: apsw.Connection, run_ids: Iterable[str]) -> dict[str, str]:
    """run_id -> its agent (the `agent` tag, else its first call's alias); runs with neither are left out."""
    ids = list(dict.fromkeys(run_ids))
    out: dict[str, str] = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        marks = ",".join("?" * len(chunk))
        for run_id, agent in conn.execute(
                f"SELECT r.run_id, {_KEY} FROM runs AS r WHERE r.run_id IN ({marks})", chunk):
            if agent is not None:
                out[run_id] = agent
    return out


def agent_history(conn: apsw.Connection, *, agents: Iterable[str] | None = None, now: float | None = None,
                  first_alias: dict[str, str] | None = None) -> dict[str, AgentHistory]:
    """Per agent (all of them, or those named), the percentiles of its completed runs of the last
    HISTORY_DAYS. Aborted runs and replays are not history. Completed means marked so (the server
    marks idle runs): the cost check, which reads only that, and every view of `expected` then agree.

    Tagged runs are one grouped query on the index runs_agent. Untagged runs are grouped by their
    first alias, looked up once per run: `first_alias` (run_id -> alias), kept by the caller across
    calls, remembers them, since a run's first call never changes (a lookup costs ~20 µs a run)."""
    now = time.time() if now is None else now
    names = None if agents is None else sorted(set(agents))
    if names is not None and not names:
        return {}
    window = ("r.status = 'completed' AND r.started_at >= ? AND r.replay_id IS NULL",
              [now - HISTORY_DAYS * 86400])
    only = "r.agent IS NOT NULL" if names is None else f"r.agent IN ({','.join('?' * len(names))})"
    out = {row[0]: AgentHistory(*row) for row in conn.execute(
        "SELECT r.agent, count(*), percentile(r.cost_nusd, 50), percentile(r.cost_nusd, 90), "
        "percentile(r.cost_nusd, 95), percentile(r.calls, 50), percentile(r.calls, 90), percentile(r.calls, 95), "
        "percentile(coalesce(r.ended_at, r.last_at) - r.started_at, 50), "
        "percentile(coalesce(r.ended_at, r.last_at) - r.started_at, 90) "
        f"FROM runs AS r WHERE {window[0]} AND {only} GROUP BY r.agent", [*window[1], *(names or [])])}
    aliases = None if names is None else {n for n in names if n.startswith("@")}  # an alias keeps its @
    if aliases is not None and not aliases:
        return out
    untagged = conn.execute("SELECT r.run_id, r.cost_nusd, r.calls, coalesce(r.ended_at, r.last_at) - r.started_at "
                            f"FROM runs AS r WHERE {window[0]} AND r.agent IS NULL", window[1]).fetchall()
    known = {} if first_alias is None else first_alias
    known.update(run_agents(conn, [r[0] for r in untagged if r[0] not in known]))
    groups: dict[str, tuple[list, list, list]] = {}
    for run_id, cost, calls, duration in untagged:
        alias = known.get(run_id)
        if alias and alias not in out and (aliases is None or alias in aliases):
            for values, v in zip(groups.setdefault(alias, ([], [], [])), (cost, calls, duration)):
                values.append(v)
    for alias, (costs, calls, durations) in groups.items():
        costs.sort(), calls.sort(), durations.sort()
        out[alias] = AgentHistory(alias, len(costs), *(percentile(costs, q) for q in (50, 90, 95)),
                                  *(percentile(calls, q) for q in (50, 90, 95)),
                                  percentile(durations, 50), percentile(durations, 90))
    return out


def over_usual(h: AgentHistory, cost_nusd: float, calls: int) -> tuple[float, str] | None:
    """How far a run is along its agent's p90, by whichever of cost and calls is further: (ratio, which)."""
    shares = []
    if h.cost_p90 > 0:
        shares.append((cost_nusd / h.cost_p90, "cost"))
    if h.calls_p90 > 0:
        shares.append((calls / h.calls_p90, "calls"))
    return max(shares) if shares else None


def expected(h: AgentHistory | None, cost_nusd: float, calls: int,
             min_history: int = DEFAULT_MIN_HISTORY) -> dict | None:
    """The run detail's `expected`: its agent's usual run, and (with enough history to judge,
    `cost_min_history` runs) how far along its p90 the run is."""
    if h is None:
        return None
    judged = h.runs >= min_history
    ratio = over_usual(h, cost_nusd, calls) if judged else None
    return {
        "agent": h.agent, "history_runs": h.runs, "window_days": HISTORY_DAYS, "min_history": min_history,
        "judged": judged,
        "cost_usd": {"p50": nanos_to_usd(round(h.cost_p50)), "p90": nanos_to_usd(round(h.cost_p90))},
        "calls": {"p50": round(h.calls_p50, 2), "p90": round(h.calls_p90, 2)},
        "duration_ms": {"p50": round(h.duration_p50 * 1000, 1), "p90": round(h.duration_p90 * 1000, 1)},
        "over_usual": round(ratio[0], 3) if ratio else None,
        "over_usual_by": ratio[1] if ratio else None,
    }
