"""The runs filter (`/`): one rule, applied on screen to loaded rows and in SQL to the database.

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

def filter_sql(query: str) -> tuple[str, list]:
    """The same rule as `matches`, as a WHERE clause over the runs table and its arguments."""
    clauses, args = [], []
    for word in query.split():
        if "=" in word:
            k, _, v = word.partition("=")
            clauses.append("json_extract(tags, ?) = ?")
            args += ['$."' + k.replace('"', '') + '"', v]
        else:
            clauses.append("(lower(run_id || ' ' || coalesce(agent, '') || ' ' || status || ' ' || tags || ' ' || "
                           "anomalies) LIKE ?)")
            args.append(f"%{word.lower()}%")
    return " AND ".join(clauses), args
