"""Budgets, run lifecycle, anomalies and the webhook outbox: what watches runs while they happen.

`attach(rt, gateway)` wires this room into a running server:
- the budget guard (`budgets.BudgetGuard`) on `gateway.guards`: in-memory checks before each call;
- the anomaly watcher (`anomalies.AnomalyWatcher`) on `rt.writer.after_batch`: it also writes what
  the guard decided (aborts, warnings) in the transaction of the call that caused it;
- background jobs on `rt.background`: webhook delivery, idle-run completion, aborts made by the
  CLI, the guard's state after a restart, per-agent history for cost outliers.
"""
from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from .budgets import BudgetGuard, Pending


def guard_of(gateway: Any) -> BudgetGuard | None:
    """The budget guard attached to a gateway (the management routes act on runs through it)."""
    return next((g for g in gateway.guards if isinstance(g, BudgetGuard)), None)


def attach(rt: Any, gateway: Any) -> BudgetGuard | None:
    if os.environ.get("MODELUX_ANALYTICS", "").lower() == "off":
        # a switch for measuring what this room costs (scripts/bench --only guards) and for
        # ruling it out when diagnosing: no budgets, aborts, anomalies, webhooks or idle completion
        return None
    from . import lifecycle
    from .anomalies import AnomalyWatcher
    from .webhooks import Deliverer

    signals = lifecycle.Signals()
    pending = Pending()
    guard = BudgetGuard(pending, signals)
    watcher = AnomalyWatcher(rt, pending, signals.events)
    deliverer = Deliverer(rt, signals.outbox)
    gateway.guards.append(guard)
    rt.writer.after_batch.append(watcher)
    started = time.time()

    async def deliver() -> None:
        signals.loop = asyncio.get_running_loop()
        await deliverer.run()

    rt.background += [
        deliver,
        lambda: lifecycle.seed(rt, guard, started),
        lambda: lifecycle.poll_aborts(rt, guard),
        lambda: lifecycle.expire_idle(rt, guard, signals),
        lambda: lifecycle.refresh_history(rt, watcher, signals.history),
    ]
    return guard
