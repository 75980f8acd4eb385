"""Budgets, run lifecycle, anomalies and the webhook outbox: what watches runs while they happen.

`attach(rt)` registers this room's addons on `rt.hooks` (calls/hooks.py), in this order:
- the budget guard (`budgets.BudgetGuard`): `before` / `on_chunk` / `after`, in-memory, on the hot path;
- the anomaly watcher (`anomalies.AnomalyWatcher`): `after_batch` on the writer thread; it also
  writes what the guard decided (aborts, warnings) in the transaction of the call that caused it;
- `RunLifecycle`: background jobs only — webhook delivery, idle-run completion, aborts made by
  the CLI, the guard's state after a restart, per-agent history for cost outliers.
"""
from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from ..calls import Addon
from ..calls.hooks import Job
from .budgets import BudgetGuard, Pending


def guard_of(rt: Any) -> BudgetGuard | None:
    """The budget guard of a server (the management routes act on runs through it)."""
    return rt.hooks.of(BudgetGuard)


class RunLifecycle(Addon):
    """Runs' life outside the request path: webhooks, expiry, CLI aborts, restart state, history."""

    def __init__(self, rt: Any, guard: BudgetGuard, watcher: Any, signals: Any):
        self.rt, self.guard, self.watcher, self.signals = rt, guard, watcher, signals
        self.started = time.time()

    def jobs(self) -> list[Job]:
        from . import lifecycle
        from .webhooks import Deliverer

        rt, guard, signals = self.rt, self.guard, self.signals
        deliverer = Deliverer(rt, signals.outbox)

        async def deliver() -> None:
            signals.loop = asyncio.get_running_loop()
            await deliverer.run()

        return [
            deliver,
            lambda: lifecycle.seed(rt, guard, self.started),
            lambda: lifecycle.poll_aborts(rt, guard),
            lambda: lifecycle.expire_idle(rt, guard, signals),
            lambda: lifecycle.refresh_history(rt, self.watcher, signals.history),
        ]


def attach(rt: Any) -> BudgetGuard | None:
    if os.environ.get("MODELUX_ANALYTICS", "").lower() == "off":
        # a switch for measuring what this room costs (scripts/bench --only guards) and for
        # ruling it out when diagnosing: no budgets, aborts, anomalies, webhooks or idle completion
        return None
    existing = guard_of(rt)
    if existing is not None:  # create_app may be called more than once for a runtime
        return existing
    from . import lifecycle
    from .anomalies import AnomalyWatcher

    signals = lifecycle.Signals()
    pending = Pending()
    guard = BudgetGuard(pending, signals)
    watcher = AnomalyWatcher(rt, pending, signals.events)
    for addon in (guard, watcher, RunLifecycle(rt, guard, watcher, signals)):
        rt.hooks.add(addon)
    return guard
