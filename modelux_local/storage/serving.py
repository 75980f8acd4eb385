"""The serving state that `config promote` / `rollback` leave in the database.

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


