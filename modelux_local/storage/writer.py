"""The single writer: one thread, a bounded queue, batched transactions.

Producers on the event loop never wait on SQLite: `submit` is a put into a queue. When the
queue is full the producer awaits room (in a worker thread), so nothing is ever dropped.
`barrier()` resolves once everything submitted before it is committed (read-your-writes
for the management API). `close()` drains the queue.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable

import apsw

from ..core.records import CallRecord
from .db import open_db
from .record_rows import write_calls

log = logging.getLogger("modelux.writer")

_STOP = object()
BATCH_MAX = 512
Hook = Callable[[apsw.Connection, list[CallRecord]], None]


class Writer:
    def __init__(self, path: Path | str, maxsize: int = 10_000):
        self.path = Path(path)
        self._q: queue.Queue = queue.Queue(maxsize=maxsize)
        self._overflow: collections.deque = collections.deque()
        self._thread = threading.Thread(target=self._run, name="modelux-writer", daemon=True)
        self._conn: apsw.Connection | None = None
        self.after_batch: list[Hook] = []  # run inside the batch's transaction (rollups, anomalies)
        self.written = 0
        self.failed_batches = 0
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._error:
            raise self._error

    # -- producers ------------------------------------------------------------------------

    async def submit(self, item: Any) -> None:
        try:
            self._q.put_nowait(item)
        except queue.Full:
            await asyncio.get_running_loop().run_in_executor(None, self._q.put, item)

    def submit_nowait(self, item: Any) -> None:
        """For code that must not await (a cancelled stream's cleanup): never drops the item.

        When the queue is full the item goes to an unbounded overflow that the writer drains
        with every batch (and on close), so it can neither block nor arrive after the stop.
        """
        try:
            self._q.put_nowait(item)
        except queue.Full:
            self._overflow.append(item)

    async def barrier(self) -> None:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        await self.submit(_Barrier(lambda: loop.call_soon_threadsafe(_resolve, fut)))
        await fut

    def execute(self, fn: Callable[[apsw.Connection], Any]) -> None:
        """Queues an arbitrary write (config versions, outcomes...) in order with the calls."""
        self._q.put(_Job(fn))

    async def run(self, fn: Callable[[apsw.Connection], Any]) -> Any:
        """Runs `fn` on the writer thread and returns its result."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def job(conn):
            try:
                r = fn(conn)
                loop.call_soon_threadsafe(_resolve, fut, r)
            except BaseException as e:  # noqa: BLE001 - handed back to the caller
                loop.call_soon_threadsafe(_fail, fut, e)

        await self.submit(_Job(job, own_errors=True))
        return await fut

    def close(self, timeout: float = 30.0) -> None:
        if self._thread.is_alive():
            self._q.put(_STOP)
            self._thread.join(timeout)

    @property
    def pending(self) -> int:
        return self._q.qsize() + len(self._overflow)

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._conn = open_db(self.path)
        except BaseException as e:  # noqa: BLE001
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        stop = False
        while not stop:
            items = [self._q.get()]
            while len(items) < BATCH_MAX:
                try:
                    items.append(self._q.get_nowait())
                except queue.Empty:
                    break
            while self._overflow:
                items.append(self._overflow.popleft())
            stop = any(i is _STOP for i in items)
            self._write(items)
        self._conn.close()

    def _write(self, items: list) -> None:
        calls = [i for i in items if isinstance(i, CallRecord)]
        barriers = [i for i in items if isinstance(i, _Barrier)]
        conn = self._conn
        t0 = time.perf_counter()
        try:
            with conn:
                if calls:
                    write_calls(conn, calls)
                    for hook in self.after_batch:
                        hook(conn, calls)
                for i in items:
                    if isinstance(i, _Job) and not i.own_errors:
                        i.fn(conn)
            self.written += len(calls)
        except Exception:
            self.failed_batches += 1
            log.exception("writing a batch of %d records failed; retrying one by one", len(calls))
            self._write_one_by_one(calls)
        for i in items:  # jobs with their own error channel run outside the batch transaction
            if isinstance(i, _Job) and i.own_errors:
                with conn:
                    i.fn(conn)
        for b in barriers:
            b.done()
        if calls and (dt := time.perf_counter() - t0) > 1.0:
            log.warning("slow write: %d calls in %.2fs", len(calls), dt)

    def _write_one_by_one(self, calls: list[CallRecord]) -> None:
        for c in calls:
            try:
                with self._conn:
                    write_calls(self._conn, [c])
                    for hook in self.after_batch:
                        hook(self._conn, [c])
                self.written += 1
            except Exception:
                log.exception("call %s could not be stored", c.call_id)


class _Barrier:
    def __init__(self, done: Callable[[], None]):
        self.done = done


class _Job:
    def __init__(self, fn: Callable[[apsw.Connection], Any], own_errors: bool = False):
        self.fn = fn
        self.own_errors = own_errors


def _resolve(fut: asyncio.Future, value: Any = None) -> None:
    if not fut.done():
        fut.set_result(value)


def _fail(fut: asyncio.Future, e: BaseException) -> None:
    if not fut.done():
        fut.set_exception(e)
