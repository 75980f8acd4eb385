"""Management API routes that change runs: outcome, abort."""
from __future__ import annotations


def routes(rt, gateway) -> list:
    return []
