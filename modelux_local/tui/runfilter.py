"""The runs filter (`/`): one rule, applied on screen to loaded rows here and in SQL to the database
by storage/analytics_queries.py `RunFilter.from_query` (the filter of `runs` too).

Every word must match: `k=v` a tag exactly, anything else a substring of id, agent, status,
tags and flags.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .data import RunRow


def matches(run: RunRow, query: str) -> bool:
    """Every word must match: `k=v` a tag exactly, anything else a substring of id, agent, status, tags, flags."""
    hay = " ".join([run.run_id, run.agent or "", run.status, *run.tags.values(), *run.anomalies]).lower()
    for word in query.split():
        if "=" in word:
            k, _, v = word.partition("=")
            if run.tags.get(k) != v:
                return False
        elif word.lower() not in hay:
            return False
    return True
