"""Opening the database: WAL, sqlite-vec loaded, migrations applied, owner-only files."""
from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import apsw

from .migrations import MIGRATIONS

_migrate_lock = threading.Lock()


def private_dir(d: Path) -> None:
    """Creates `d` for this user only (0700, whatever the umask). An existing one is tightened
    when it is ours: owned by this user and empty or holding our database (an upgrade from a
    version that made it 0755); a shared directory passed as --data-dir is left alone."""
    if not d.exists():
        d.mkdir(parents=True, mode=0o700, exist_ok=True)
        os.chmod(d, 0o700)
        return
    st = d.stat()
    if st.st_mode & 0o077 and st.st_uid == os.getuid() and ((d / "modelux.db").exists() or not any(d.iterdir())):
        os.chmod(d, 0o700)


def private_file(path: Path) -> None:
    """Creates `path` (if missing) or tightens it to 0600: the stored prompts are the user's own.
    SQLite gives -wal and -shm the mode of the database file, so they follow. Never opens an
    existing file: closing any descriptor of a database drops the POSIX locks this process's
    connections hold on it (SQLite's "posix advisory locks" caveat)."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass
    st = os.stat(path)
    if st.st_mode & 0o077 and st.st_uid == os.getuid():  # someone else's file: theirs to protect
        os.chmod(path, 0o600)


def make_private(path: Path) -> None:
    """The data dir 0700, the database and its -wal/-shm 0600 (before a writing connection opens)."""
    private_dir(path.parent)
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if p == path or p.exists():
            private_file(p)


def open_private(path: Path | str):
    """A file for writing that only this user can read (exports, logs), whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "wb")


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

    make_private(Path(path))
    conn = connect(path)
    ensure_incremental_vacuum(conn)
    migrate(conn)
    return conn


def check_writable(path: Path | str) -> None:
    """Opens (creating, migrating) the database and makes one real write; raises the storage error
    when it cannot, so `serve` refuses to start with a clear message instead of serving calls it
    cannot record."""
    conn = open_db(path)
    try:
        with conn:
            conn.execute("UPDATE schema_migrations SET applied_at = applied_at "
                         "WHERE version = (SELECT max(version) FROM schema_migrations)")
    finally:
        conn.close()


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
