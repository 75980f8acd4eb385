"""Management API read routes under /mlx/v1 (runs list, analytics, search)."""
from __future__ import annotations


def routes(rt, gateway) -> list:
    return []
