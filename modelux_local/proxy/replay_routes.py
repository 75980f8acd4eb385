"""Management API routes for configs, replays and promotion."""
from __future__ import annotations


def routes(rt, gateway) -> list:
    return []
