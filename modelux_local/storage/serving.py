"""The serving state that `config promote` / `rollback` leave in the database, and its audit trail.

Read by the runtime (below the replay room) to pin promoted content on its router, so it
lives here rather than in replay/: dependencies run downward.
"""
from __future__ import annotations

import logging
import os
import time

import apsw

from ..config.loader import ConfigSet, parse_routing_text
from ..config.schema import RoutingConfig
from ..errors import ConfigError
from .db import immediate  # noqa: F401  (promotion's write transactions: serving.immediate)

log = logging.getLogger("modelux.config")


def read_serving(conn: apsw.Connection, cs: ConfigSet) -> tuple[dict[str, tuple[RoutingConfig, str]], int]:
    """(config name -> (config, version) pinned by promotion/rollback, last audit id applied)."""
    out: dict[str, tuple[RoutingConfig, str]] = {}
    for name, content, version in conn.execute(
            "SELECT s.name, v.content, v.content_version FROM serving s JOIN serving_versions v ON v.number = s.number"):
        try:
            out[name] = (parse_routing_text(name, content, cs.server), version)
        except ConfigError as e:  # cannot serve with today's providers: the file's content keeps serving
            log.warning("promoted content of @%s (version %s) cannot serve, the file serves instead: %s",
                        name, version, e.message)
            continue
    last = conn.execute("SELECT coalesce(max(id), 0) FROM config_audit").fetchone()[0]
    return out, last


def last_audit_id(conn: apsw.Connection) -> int:
    return conn.execute("SELECT coalesce(max(id), 0) FROM config_audit").fetchone()[0]


def ack(conn: apsw.Connection, audit_id: int) -> None:
    conn.execute("INSERT INTO serving_acks (pid, audit_id, at) VALUES (?, ?, ?) ON CONFLICT(pid) DO UPDATE SET "
                 "audit_id = excluded.audit_id, at = excluded.at", (os.getpid(), audit_id, time.time()))




# -- promotion and rollback (replay/promotion.py decides, these read and write) ------------------

AUDIT_COLUMNS = ("id", "at", "who", "action", "name", "from_number", "to_number", "from_version", "to_version",
                 "candidate", "replay_id", "figures", "reason", "forced")
VERSION_COLUMNS = ("number", "name", "content", "content_version", "source", "created_at")


def pinned(conn: apsw.Connection, name: str) -> tuple[int, str, str, str] | None:
    """(number, content, content_version, source) a promotion pinned `name` to, or None (its file serves)."""
    return conn.execute("SELECT v.number, v.content, v.content_version, v.source FROM serving s "
                        "JOIN serving_versions v ON v.number = s.number WHERE s.name = ?", (name,)).fetchone()


def new_version(conn: apsw.Connection, name: str, content: str, version: str, source: str) -> int:
    conn.execute("INSERT INTO serving_versions (name, content, content_version, source, created_at) "
                 "VALUES (?, ?, ?, ?, ?)", (name, content, version, source, time.time()))
    return conn.last_insert_rowid()


def set_serving(conn: apsw.Connection, name: str, number: int) -> None:
    conn.execute("INSERT INTO serving (name, number) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET number = "
                 "excluded.number", (name, number))


def unpin(conn: apsw.Connection, name: str) -> None:
    """The file serves `name` again."""
    conn.execute("DELETE FROM serving WHERE name = ?", (name,))


def version(conn: apsw.Connection, number: int) -> dict | None:
    """A serving_versions row as a dict of VERSION_COLUMNS, or None."""
    r = conn.execute(f"SELECT {', '.join(VERSION_COLUMNS)} FROM serving_versions WHERE number = ?",
                     (number,)).fetchone()
    return dict(zip(VERSION_COLUMNS, r)) if r is not None else None


def last_change(conn: apsw.Connection) -> tuple[str, int | None, int | None] | None:
    """(name, from_number, to_number) of the newest audit entry, or None."""
    return conn.execute("SELECT name, from_number, to_number FROM config_audit ORDER BY id DESC LIMIT 1").fetchone()


def add_audit(conn: apsw.Connection, *, who: str, action: str, name: str, from_number: int | None,
              to_number: int | None, from_version: str | None, to_version: str | None, candidate: str | None,
              replay_id: str | None, figures: str | None, reason: str | None, forced: bool) -> int:
    conn.execute("INSERT INTO config_audit (at, who, action, name, from_number, to_number, from_version, to_version, "
                 "candidate, replay_id, figures, reason, forced) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                 (time.time(), who, action, name, from_number, to_number, from_version, to_version,
                  candidate, replay_id, figures, reason, int(forced)))
    return conn.last_insert_rowid()


def audit_trail(conn: apsw.Connection, limit: int | None = None) -> list[dict]:
    """config_audit rows as dicts of AUDIT_COLUMNS (`figures` still JSON text): oldest first, or with
    `limit` the newest `limit`, newest first."""
    cols = ", ".join(AUDIT_COLUMNS)
    rows = (conn.execute(f"SELECT {cols} FROM config_audit ORDER BY id") if limit is None else
            conn.execute(f"SELECT {cols} FROM config_audit ORDER BY id DESC LIMIT ?", (limit,)))
    return [dict(zip(AUDIT_COLUMNS, r)) for r in rows]


def acks(conn: apsw.Connection) -> list[tuple[int, int]]:
    """(pid, audit id it applied) of each server that has acknowledged the serving state."""
    return conn.execute("SELECT pid, audit_id FROM serving_acks").fetchall()


def config_versions(conn: apsw.Connection, limit: int = 50) -> list[dict]:
    """The config contents servers have loaded, newest first."""
    rows = conn.execute("SELECT name, version, source, first_seen FROM config_versions "
                        "ORDER BY first_seen DESC, name LIMIT ?", (limit,)).fetchall()
    return [{"name": n, "version": v, "source": s, "first_seen": t} for n, v, s, t in rows]


def add_config_versions(conn: apsw.Connection, rows: list[tuple[str, str, str, str]], now: float) -> None:
    """(name, version, content, source) of loaded configs, each content kept once."""
    conn.executemany("INSERT OR IGNORE INTO config_versions (name, version, content, source, first_seen) "
                     "VALUES (?, ?, ?, ?, ?)", [(*r, now) for r in rows])
