"""Rollups, budgets, anomalies and the webhook outbox: what watches runs while they happen.

`attach(rt, gateway)` wires this room into a running server: guards on the gateway,
hooks on the writer, background tasks on the runtime.
"""
from __future__ import annotations


def attach(rt, gateway) -> None:
    """Filled in by the runs/budgets work (issue 4)."""
    return None
