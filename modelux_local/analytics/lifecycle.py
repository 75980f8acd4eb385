"""Background jobs of the run lifecycle: idle completion, aborts made by the CLI, the guard's
memory after a restart, and the per-agent history the cost-anomaly check compares against.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgspec

from ..storage import runs as run_rows
from .anomalies import AnomalyWatcher, agent_stats
from .budgets import ABORTED, EXCEEDED, BudgetGuard
from .events import complete_idle, prune_outbox

log = logging.getLogger("modelux.runs")

# A restarted server reloads the budget state (calls, tokens, cost, first-call time, aborted or
# not, warned or not) of runs that had a call in this window; older runs start from zero.
SEED_WINDOW_S = 24 * 3600
ABORT_POLL_S = 0.5
HISTORY_REFRESH_S = 60.0
HISTORY_MIN_GAP_S = 1.0
_dec = msgspec.json.Decoder()


class Signals:
    """Wake-ups that any thread may send: new events in the outbox, runs completed."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None  # set by the first background task
        self.outbox = asyncio.Event()
        self.history = asyncio.Event()

    def _set(self, ev: asyncio.Event) -> None:
        if self.loop is not None:
            try:
                self.loop.call_soon_threadsafe(ev.set)
            except RuntimeError:  # loop closed at shutdown: the next start polls the outbox anyway
                pass

    def events(self) -> None:
        self._set(self.outbox)

    def completed(self) -> None:
        self._set(self.history)



async def seed(rt: Any, guard: BudgetGuard, started: float) -> None:
    """Refills the guard's per-run state from the database, in the background after start.
    Calls made since `started` are already counted live, so only earlier ones are added."""
    t0 = time.perf_counter()
    try:
        runs, sums, warned = await asyncio.to_thread(
            lambda: run_rows.budget_seed(rt.reader.conn(), started - SEED_WINDOW_S, started))
    except Exception:
        log.exception("loading the budget state of recent runs failed: budgets count from zero")
        return
    by_run = {r[0]: r[1:] for r in sums}
    for run_id, status, reason, code, started_at, last_at in runs:
        st = guard.state(run_id, last_at)
        st.started = min(st.started, started_at)
        if (s := by_run.get(run_id)) is not None:
            st.calls += s[0]
            st.tokens += s[1] or 0
            st.cost += s[2] or 0
        st.warned = st.warned or run_id in warned
        if status == "aborted" and st.blocked is None:
            st.blocked = (code or ABORTED, _blocked_message(run_id, code, reason))
    log.info("budget state of %d recent runs loaded in %.0f ms", len(runs), (time.perf_counter() - t0) * 1000)


def _blocked_message(run_id: str, code: str | None, reason: str | None) -> str:
    if code == EXCEEDED:
        return reason or f"run {run_id!r} exceeded its budget"
    return f"run {run_id!r} was aborted" + (f": {reason}" if reason else "")


async def poll_aborts(rt: Any, guard: BudgetGuard) -> None:
    """Aborts written by another process (the CLI) reach this server's guard within ~ABORT_POLL_S."""
    seq = await asyncio.to_thread(lambda: run_rows.newest_abort_seq(rt.reader.conn()))
    while True:
        await asyncio.sleep(ABORT_POLL_S)
        try:
            rows = await asyncio.to_thread(lambda: run_rows.aborts_since(rt.reader.conn(), seq))
        except Exception:
            log.exception("reading aborts failed")
            continue
        for seq, run_id, reason, code in rows:
            st = guard.state(run_id)
            if st.blocked is None:
                st.blocked = (code, _blocked_message(run_id, code, reason))
                log.warning("run %s aborted from outside the server: %s", run_id, reason or "(no reason)")


async def expire_idle(rt: Any, guard: BudgetGuard, signals: Signals) -> None:
    """Marks runs completed after `[runs] idle_timeout_s` without a call; fires `run.completed`.
    Also, hourly, drops outbox events older than 30 days that have nothing left to deliver."""
    pruned_at = 0.0
    while True:
        idle = rt.configs.server.runs.idle_timeout_s
        await asyncio.sleep(max(0.2, min(idle / 4, 15.0)))
        busy = {r for r, st in list(guard.runs.items()) if st.inflight > 0}
        try:
            done = await rt.writer.run(
                lambda conn: complete_idle(conn, rt.reader, rt.configs.server.webhooks, idle, busy.__contains__))
        except Exception:
            log.exception("completing idle runs failed")
            continue
        if done:
            signals.events()
            signals.completed()
        guard.prune(time.time() - SEED_WINDOW_S)
        if time.time() - pruned_at > 3600:
            pruned_at = time.time()
            try:
                await rt.writer.run(prune_outbox)
            except Exception:
                log.exception("pruning the outbox failed")


async def refresh_history(rt: Any, watcher: AnomalyWatcher, wake: asyncio.Event) -> None:
    """Per-agent history for the cost check: at start, when runs complete, and every minute."""
    while True:
        wake.clear()
        try:
            watcher.history = await asyncio.to_thread(lambda: agent_stats(rt.reader.conn()))
        except Exception:
            log.exception("refreshing agent history failed")
        try:
            await asyncio.wait_for(wake.wait(), HISTORY_REFRESH_S)
        except TimeoutError:
            pass
        await asyncio.sleep(HISTORY_MIN_GAP_S)  # many runs completing at once cost one refresh
