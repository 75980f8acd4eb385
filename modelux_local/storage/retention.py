"""Retention: `[storage] keep_days` prunes old bodies, keeps every run and call rollup, and gives
the freed pages back (incremental auto-vacuum), so the file stops growing in steady state.

A pass, on the writer thread, in chunks so calls keep landing between them:
1. bodies (`calls.request`, `calls.response`) and the search index text of calls started
   before the cutoff are cleared; the call rows (tokens, cost, latency, decision) stay;
2. `messages` rows no kept call can reference are deleted: a stored call refreshes the
   last_at of the messages it references at most every `bodies.TOUCH_S`, so rows with
   last_at before cutoff - TOUCH_S are unreferenced;
3. `PRAGMA incremental_vacuum` truncates the free pages off the file.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import apsw

from .bodies import TOUCH_S

log = logging.getLogger("modelux.storage")

DAY = 86_400.0
CHUNK = 2_000          # calls (or message rows) per writer job
VACUUM_PAGES = 4_000   # pages (4 KB) given back per writer job
INTERVAL_S = 3_600.0


def ensure_incremental_vacuum(conn: apsw.Connection) -> None:
    """auto_vacuum=INCREMENTAL. A new database gets it before its first table; an older one
    once, by a VACUUM (which rewrites the file: it takes a while on a big database, so it says so)."""
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:
        return
    tables = conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    if tables:
        log.warning("switching the database to incremental vacuum (once; rewrites the file) ...")
        started = time.monotonic()
        try:
            conn.execute("VACUUM")
        except (apsw.BusyError, apsw.LockedError, apsw.FullError) as e:  # another process reads, or no room
            log.warning("could not switch the database to incremental vacuum (%s); retention still prunes, "
                        "the file shrinks once this succeeds at a later start", e)
            return
        log.warning("database switched to incremental vacuum in %.1fs", time.monotonic() - started)


def prune_chunk(conn: apsw.Connection, cutoff: float) -> dict[str, int]:
    """One bounded step of a pass; returns what it did (all zeros: the pass is complete)."""
    done = {"calls": 0, "messages": 0, "pages": 0}
    with conn:
        rowids = [r[0] for r in conn.execute(
            "UPDATE calls SET request = NULL, response = NULL WHERE rowid IN (SELECT rowid FROM calls "
            "WHERE started_at < ? AND (request IS NOT NULL OR response IS NOT NULL) LIMIT ?) RETURNING rowid",
            (cutoff, CHUNK))]
        if rowids:
            done["calls"] = len(rowids)
            conn.execute(f"DELETE FROM calls_fts WHERE rowid IN ({','.join('?' * len(rowids))})", rowids)
            return done
        conn.execute("DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE last_at < ? LIMIT ?)",
                     (cutoff - TOUCH_S, CHUNK))
        done["messages"] = conn.changes()
        if done["messages"]:
            return done
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    if free and conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:  # not yet switched: nothing to give back
        conn.execute(f"PRAGMA incremental_vacuum({VACUUM_PAGES})").fetchall()
        done["pages"] = free - conn.execute("PRAGMA freelist_count").fetchone()[0]  # 0 (no progress) ends the pass
    return done


def prune(conn: apsw.Connection, keep_days: float, now: float | None = None) -> dict[str, int]:
    """A whole pass at once (the CLI, tests, the bench); the server runs it chunk by chunk."""
    cutoff = (time.time() if now is None else now) - keep_days * DAY
    total = {"calls": 0, "messages": 0, "pages": 0}
    while any((step := prune_chunk(conn, cutoff)).values()):
        for k, v in step.items():
            total[k] += v
    _forget(conn)
    return total


def _forget(conn: apsw.Connection) -> None:
    from .record_rows import encoder_for

    encoder_for(conn).forget()


async def retention_loop(writer: Any, keep_days_of: Callable[[], float], interval_s: float = INTERVAL_S) -> None:
    """Background job of a server: a pass now and every `interval_s`, each chunk a writer job so
    the calls queued meanwhile are written between chunks. keep_days 0 keeps everything."""
    while True:
        keep_days = keep_days_of()
        if keep_days:
            cutoff = time.time() - keep_days * DAY
            total = {"calls": 0, "messages": 0, "pages": 0}
            while any((step := await writer.run(lambda c: prune_chunk(c, cutoff))).values()):
                for k, v in step.items():
                    total[k] += v
            await writer.run(_forget)
            if any(total.values()):
                log.info("retention (keep_days %s): pruned the bodies of %d calls, %d messages; gave back %d pages",
                         keep_days, total["calls"], total["messages"], total["pages"])
        await asyncio.sleep(interval_s)
