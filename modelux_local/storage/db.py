"""Opening the database: WAL, sqlite-vec loaded, migrations applied."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from pathlib import Path

import apsw

from .migrations import MIGRATIONS

_migrate_lock = threading.Lock()


def connect(path: Path | str, *, readonly: bool = False) -> apsw.Connection:
    path = Path(path)
    if not readonly:
        path.parent.mkdir(parents=True, exist_ok=True)
    flags = apsw.SQLITE_OPEN_READONLY if readonly else apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
    conn = apsw.Connection(str(path), flags=flags)
    conn.set_busy_timeout(10_000)
    _load_vec(conn)
    if not readonly:
        if not conn.execute("PRAGMA page_count").fetchone()[0]:  # a new file: only now can it get this
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")       # (retention.py gives pages back with it)
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def _load_vec(conn: apsw.Connection) -> None:
    try:
        import sqlite_vec

        conn.enable_load_extension(True)
        conn.load_extension(sqlite_vec.loadable_path())
        conn.enable_load_extension(False)
    except Exception:  # vectors are optional for the proxy; semantic search reports it
        pass


def migrate(conn: apsw.Connection) -> int:
    """Applies pending migrations in order; returns the schema version."""
    with _migrate_lock:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")
        done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
        for version, sql in MIGRATIONS:
            if version in done:
                continue
            with conn:
                conn.execute(sql)
                conn.execute("INSERT INTO schema_migrations VALUES (?, ?)", (version, time.time()))
        return max([v for v, _ in MIGRATIONS] + [0])


def open_db(path: Path | str) -> apsw.Connection:
    """A writing connection: migrated, and with incremental auto-vacuum (storage/retention.py)."""
    from .retention import ensure_incremental_vacuum

    conn = connect(path)
    ensure_incremental_vacuum(conn)
    migrate(conn)
    return conn


@contextmanager
def immediate(conn: apsw.Connection):
    """A write transaction that takes the write lock up front (BEGIN IMMEDIATE), so another process's
    commit can neither slip between our reads and writes nor fail our upgrade to a writer with
    SQLITE_BUSY. Inside a transaction already (the writer's batch), a savepoint."""
    if conn.in_transaction:
        with conn:
            yield
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
