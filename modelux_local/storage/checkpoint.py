"""WAL checkpoints off the writer's commits: SQLite's autocheckpoint copied the WAL back into the
file inside a commit every ~1000 pages and stalled calls 15-20 ms; the writer turns it off and
pokes this thread (from its WAL hook) once the log has grown past CHECKPOINT_PAGES."""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import apsw

from .db import connect

log = logging.getLogger("modelux.writer")
CHECKPOINT_PAGES = 1000         # SQLite's own autocheckpoint threshold, applied off the writer's commits
CHECKPOINT_NICE = 10


class Checkpointer:
    """Copies the WAL back into the database file (a PASSIVE checkpoint: it never waits for
    readers or the writer) on its own thread and connection, at the writer's low priority."""

    def __init__(self, path: Path):
        self.path = path
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="modelux-checkpoint", daemon=True)
        self.done = 0
        self.failures = 0

    def start(self) -> None:
        self._thread.start()

    def poke(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        _lower_priority()
        conn: apsw.Connection | None = None
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stopping:
                break
            try:
                conn = conn or connect(self.path)
                conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
                self.done += 1
            except apsw.Error as e:  # the WAL only grows meanwhile; the writer reports a failing disk itself
                self.failures += 1
                if self.failures % 100 == 1:
                    log.warning("checkpointing the WAL failed (%d times so far): %s", self.failures, e)
        if conn is not None:
            conn.close()


def _lower_priority() -> None:
    """The checkpointer's copying runs in the event loop's idle time (Linux: a thread's own nice).
    Not the writer's: at a lower priority it fell behind under saturation (scripts/soak: 5,916
    answered calls queued and lost to a SIGKILL against the 512 bound) for ~10% more req/s."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), CHECKPOINT_NICE)
    except (AttributeError, OSError):  # not Linux, or not allowed: the default priority is correct, only slower
        pass
