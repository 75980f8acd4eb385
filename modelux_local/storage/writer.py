"""The single writer: one thread, a queue bounded in records and bytes, batched transactions.

Producers on the event loop never wait on SQLite: `submit` appends to an in-memory queue.
While the disk works, async producers wait past a backlog of BACKLOG records (backpressure: nothing
is dropped, and a crash loses at most that backlog and one batch). When storage fails (disk full, read-only, locked, I/O) the writer keeps the batch,
reports itself `degraded` (`status()`, shown by /healthz and the TUI) and retries with backoff
until a write succeeds, by itself. Meanwhile producers never wait, and the queue sheds to stay
within its bounds: first the bodies (request, response, stream events) of the oldest records,
then the oldest records themselves, both counted. Barriers and `run()` jobs fail with
StorageUnavailable (a 503) instead of waiting on a failing disk. `close()` returns within its
timeout whatever storage does.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw

from ..core.records import CallRecord
from ..core.usage import usage_of_body
from ..errors import StorageUnavailable
from .checkpoint import CHECKPOINT_PAGES, Checkpointer
from .db import open_db
from .record_rows import write_calls
from .redact import mask_record

log = logging.getLogger("modelux.writer")

BATCH_MAX = 512                 # records per transaction (also the SIGKILL loss bound, see README)
BATCH_BYTES = 8 << 20           # and bytes per transaction
QUEUE_RECORDS = 10_000
BACKLOG = 2 * BATCH_MAX         # past this many queued, healthy producers wait (the SIGKILL loss bound)
QUEUE_BYTES = 64 << 20
SLACK = 1.25                    # producers that cannot wait may exceed the bounds by this factor
LINGER_S = 0.010               # after the first record of a batch, wait this long for more (see _take)
IDLE_S = 0.05                   # the queue stayed empty this long after a batch: the hooks' idle work runs
JOB_TIMEOUT_S = 30.0            # barriers / run() give up after this (503), even if the thread hangs
DEGRADED_DRAIN_S = 5.0          # how long a stop keeps retrying a failing disk before it gives up
_RETRY_MIN_S, _RETRY_MAX_S = 0.05, 2.0

# errors of the storage itself, not of a record: keep the batch, report, retry
STORAGE_ERRORS = (apsw.FullError, apsw.ReadOnlyError, apsw.BusyError, apsw.LockedError, apsw.IOError,
                  apsw.CantOpenError, apsw.PermissionsError, apsw.ProtocolError, apsw.NoLFSError,
                  apsw.CorruptError, apsw.NotADBError, apsw.ConnectionClosedError, OSError)

Hook = Callable[[apsw.Connection, list[CallRecord]], None]


def storage_cause(e: BaseException | None) -> BaseException | None:
    """The storage error behind `e`, if any. SQLite rolls a transaction back by itself on a full
    disk, so the commit's "cannot rollback" SQLError hides the FullError in its context."""
    seen = 0
    while e is not None and seen < 5:
        if isinstance(e, STORAGE_ERRORS):
            return e
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None


_QUIET: list = []  # _take's answer when the queue stayed quiet (compared by identity)


def _size(item: Any) -> int:
    """Bytes an item holds in memory, roughly: its bodies plus a fixed overhead per object."""
    if not isinstance(item, CallRecord):
        return 256
    n = 1024 + len(item.request or b"") + len(item.response or b"")
    if item.stream_events:
        n += sum(len(e) + 40 for e in item.stream_events)
    return n


def _strip_bodies(rec: CallRecord) -> None:
    """Drops a queued record's bodies but keeps what pricing needs (its usage)."""
    if rec.stream_events is not None:
        keep = None if rec.usage is not None else next(
            (e for e in reversed(rec.stream_events) if b'"usage"' in e), None)
        rec.stream_events = [keep] if keep else None
    elif rec.usage is None and rec.response and rec.status == "ok":
        rec.raw_usage, rec.usage = usage_of_body(rec.response)
    rec.request = b""
    rec.response = None
    rec.decision["body_dropped"] = "storage was failing: the bodies were dropped to bound memory"


class Writer:
    def __init__(self, path: Path | str, maxsize: int = QUEUE_RECORDS, max_bytes: int = QUEUE_BYTES):
        self.path = Path(path)
        self.maxsize, self.max_bytes = maxsize, max_bytes
        self.backlog = BACKLOG
        self._q: collections.deque[list] = collections.deque()  # [item, size], oldest first
        self._bytes = 0
        self._inflight = 0  # taken by the thread, not yet written
        self._stripped = 0  # the first `_stripped` queued items hold no bodies any more
        self._idle = False   # the thread waits for a first item: only then does a record wake it
        self._urgent = False  # a barrier or a job someone awaits is queued: no lingering
        self._idle_due = False  # calls were written since the hooks' idle work last ran
        self._lock = threading.Lock()
        self._has_items = threading.Condition(self._lock)
        self._thread = threading.Thread(target=self._run, name="modelux-writer", daemon=True)
        self._conn: apsw.Connection | None = None
        self.after_batch: list[Hook] = []  # run inside the batch's transaction (rollups, anomalies)
        self.secrets: tuple[str, ...] = ()  # masked out of every record before it is stored
        self.written = 0
        self.failed_batches = 0           # write attempts that failed (storage or a bad record)
        self.bodies_dropped = 0
        self.records_dropped = 0
        self.degraded: str | None = None  # why storage is failing, while it is
        self.degraded_since: float | None = None
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._deadline = self._stop_at = float("inf")
        self._error: BaseException | None = None
        self.checkpoint_pages = CHECKPOINT_PAGES
        self._checkpointer = Checkpointer(self.path)

    def start(self) -> None:
        self._checkpointer.start()
        self._thread.start()
        self._ready.wait()
        if self._error:
            raise StorageUnavailable(f"cannot write the database {self.path}: {self._error} (check that the data "
                                     "dir is writable by you and has free space; --data-dir or MODELUX_HOME moves it)")

    # -- producers ------------------------------------------------------------------------

    def _full(self) -> bool:
        return len(self._q) >= self.maxsize or self._bytes >= self.max_bytes

    async def submit(self, item: Any) -> None:
        """Waits while BACKLOG records are queued (or the bounds are reached), so a writer that
        falls behind slows the calls down instead of growing what a SIGKILL would lose; never
        while storage is failing (then the queue grows to its bounds and sheds)."""
        delay = 0.001
        while ((len(self._q) >= self.backlog or self._full()) and self.degraded is None and self._thread.is_alive()
               and not self._stopping.is_set()):
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        self.submit_nowait(item)

    def submit_nowait(self, item: Any) -> None:
        """For code that must not await (a cancelled stream's cleanup): appends, then sheds past the bounds."""
        size = _size(item)
        urgent = isinstance(item, _Barrier) or (isinstance(item, _Job) and item.own_errors)
        with self._lock:
            self._q.append([item, size])
            self._bytes += size
            self._shed()
            if urgent:
                self._urgent = True
            # Waking the thread costs a futex call and a GIL hand-over on the loop's core: a record
            # wakes it only when it sleeps idle; one that lingers collects records until its timeout.
            if urgent or self._idle or len(self._q) >= BATCH_MAX:
                self._has_items.notify()

    def _shed(self) -> None:
        """Bodies of the oldest records first, then the oldest records; jobs and barriers are kept."""
        limit = 1.0 if self.degraded else SLACK
        max_n, max_b = self.maxsize * limit, self.max_bytes * limit
        if len(self._q) <= max_n and self._bytes <= max_b:
            return
        q = self._q
        while self._bytes > max_b and self._stripped < len(q):
            entry = q[self._stripped]
            self._stripped += 1
            if isinstance(entry[0], CallRecord) and not entry[0].decision.get("body_dropped"):
                _strip_bodies(entry[0])
                self._bytes += _size(entry[0]) - entry[1]
                entry[1] = _size(entry[0])
                self.bodies_dropped += 1
        i = 0
        while (len(q) > max_n or self._bytes > max_b) and i < len(q):
            if isinstance(q[i][0], CallRecord):
                _, size = q[i]
                del q[i]
                self._bytes -= size
                self._stripped = max(0, self._stripped - 1) if i < self._stripped else self._stripped
                self.records_dropped += 1
            else:
                i += 1
        if self.records_dropped and self.records_dropped % 1000 == 1:
            log.error("the writer queue is over its bounds (%s): %d records dropped so far",
                      self.degraded or "writing is slower than calls arrive", self.records_dropped)

    async def barrier(self) -> None:
        """Resolves once everything submitted before it is committed; StorageUnavailable if storage fails."""
        self._check_available()
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.submit_nowait(_Barrier(lambda: loop.call_soon_threadsafe(_resolve, fut),
                                    lambda e: loop.call_soon_threadsafe(_fail, fut, e)))
        await self._wait(fut)

    def execute(self, fn: Callable[[apsw.Connection], Any]) -> None:
        """Queues an arbitrary write (config versions, outcomes...) in order with the calls."""
        self.submit_nowait(_Job(fn))

    async def run(self, fn: Callable[[apsw.Connection], Any]) -> Any:
        """Runs `fn` in its own transaction on the writer thread and returns its result once
        committed; StorageUnavailable (503) when storage fails or the writer does not answer."""
        self._check_available()
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        j = _Job(fn, done=lambda r: loop.call_soon_threadsafe(_resolve, fut, r),
                 fail=lambda e: loop.call_soon_threadsafe(_fail, fut, e))
        self.submit_nowait(j)
        try:
            return await self._wait(fut)
        except StorageUnavailable:
            j.cancelled = True  # timed out: it must not run later, out of the caller's sight
            raise

    def _check_available(self) -> None:
        if self.degraded is not None:
            raise StorageUnavailable(f"storage is failing ({self.degraded}); calls are still served and queued")
        if not self._thread.is_alive() or self._stopping.is_set():
            raise StorageUnavailable("the storage writer is stopped")

    async def _wait(self, fut: asyncio.Future) -> Any:
        try:
            return await asyncio.wait_for(asyncio.shield(fut), JOB_TIMEOUT_S)
        except TimeoutError:
            raise StorageUnavailable(f"the storage writer did not answer within {JOB_TIMEOUT_S:.0f}s "
                                     f"({self.pending} records queued)") from None

    def close(self, timeout: float = 30.0) -> None:
        """Drains what it can within `timeout`, then returns whatever storage does."""
        self._stop_at = time.monotonic()
        self._deadline = self._stop_at + max(0.0, timeout - 0.5)
        with self._lock:
            self._stopping.set()
            self._has_items.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)
        # within what is left of `timeout` (a checkpoint cut short only leaves WAL for the next open)
        self._checkpointer.stop(max(0.1, self._stop_at + timeout - time.monotonic()))

    @property
    def pending(self) -> int:
        return len(self._q) + self._inflight

    def status(self) -> dict:
        """For /healthz and the TUI header."""
        return {"state": "degraded" if self.degraded else "ok", "reason": self.degraded,
                "since": self.degraded_since, "queued": self.pending, "queued_bytes": self._bytes,
                "written": self.written, "write_failures": self.failed_batches,
                "bodies_dropped": self.bodies_dropped, "records_dropped": self.records_dropped}

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._conn = self._open()
        except BaseException as e:  # noqa: BLE001
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        retry = _RETRY_MIN_S
        while True:
            items = self._take()
            if items is _QUIET:
                self._run_idle()
                continue
            if not items:
                break
            if self._write(items):
                self._inflight = 0
                retry = _RETRY_MIN_S
                continue
            self._put_back(items)
            if self._stopping.is_set():
                # a disk already failing at the stop is unlikely to heal in the drain time: give it a few seconds
                if time.monotonic() + retry > min(self._deadline, self._stop_at + DEGRADED_DRAIN_S):
                    break
                time.sleep(retry)
            else:
                self._stopping.wait(retry)  # a stop request ends the wait: drain until the deadline
            retry = min(retry * 2, _RETRY_MAX_S)
        if self._idle_due and not self.degraded:
            self._run_idle()
        if self._q:
            log.error("stopping with %d records not stored: storage failing (%s)", len(self._q), self.degraded)
            self._fail_waiters(list(self._q), StorageUnavailable("the storage writer stopped"))
        try:
            self._conn.close()
        except apsw.Error:
            pass

    def _take(self) -> list:
        """The next batch. After the first item arrives the thread lingers LINGER_S for more: one
        transaction, one wake-up and one commit per batch instead of per call (at one call at a
        time the per-call commit and wake-up cost as much CPU as the call itself), unless a
        barrier or an awaited job is queued or the batch is full. When the queue stays empty
        IDLE_S after calls were written, returns _QUIET instead: time for the hooks' idle work."""
        with self._lock:
            while not self._q and not self._stopping.is_set():
                self._idle = True
                if self._idle_due and not self.degraded:
                    self._has_items.wait(IDLE_S)
                    if not self._q and not self._stopping.is_set():
                        self._idle = False
                        return _QUIET
                else:
                    self._has_items.wait()
            self._idle = False
            if not (self._urgent or self._stopping.is_set() or self.degraded) and len(self._q) < BATCH_MAX:
                self._has_items.wait(LINGER_S)
            items, size = [], 0
            while self._q and len(items) < BATCH_MAX and (size < BATCH_BYTES or not items):
                item, n = self._q.popleft()
                self._bytes -= n
                size += n
                items.append(item)
            self._stripped = max(0, self._stripped - len(items))
            self._inflight = len(items)
            self._urgent = bool(self._q)  # a backlog (or an urgent item left behind) is taken without lingering
            return items

    def _put_back(self, items: list) -> None:
        """After a storage failure: the batch goes back to the head of the queue (jobs that
        answer a caller were already failed and are not retried)."""
        keep = [i for i in items if isinstance(i, CallRecord) or (isinstance(i, _Job) and not i.own_errors)]
        with self._lock:
            self._inflight = 0
            self._q.extendleft([i, _size(i)] for i in reversed(keep))
            self._bytes += sum(_size(i) for i in keep)
            self._stripped = 0
            self._shed()

    def _write(self, items: list) -> bool:
        """Writes a batch; False (degraded, `items` trimmed to what is left) when storage failed
        and the rest must be retried."""
        calls = [i for i in items if isinstance(i, CallRecord)]
        jobs = [i for i in items if isinstance(i, _Job) and not i.cancelled]
        t0 = time.perf_counter()
        try:
            if self.degraded and self.failed_batches % 4 == 0:
                self._reopen()  # a connection left half-way by an I/O error gets a fresh start
            for c in calls:
                mask_record(c, self.secrets)
            with self._conn:
                if calls:
                    write_calls(self._conn, calls)
                    for hook in self.after_batch:
                        hook(self._conn, calls)
                for j in jobs:
                    if not j.own_errors:
                        j.fn(self._conn)
            self.written += len(calls)
            self._idle_due = self._idle_due or bool(calls)
        except Exception as e:
            self._rollback_hooks(calls)
            if (cause := storage_cause(e)) is not None:
                return self._failed(items, cause)
            self.failed_batches += 1
            log.exception("writing a batch of %d records failed; retrying one by one", len(calls))
            if (cause := self._write_one_by_one(items)) is not None:
                return self._failed(items, cause)
        if self.degraded:
            log.warning("storage recovered after %.1fs (%s); %d records queued, %d bodies and %d records dropped "
                        "meanwhile", time.time() - (self.degraded_since or time.time()), self.degraded,
                        len(self._q), self.bodies_dropped, self.records_dropped)
            self.degraded = self.degraded_since = None
        for j in jobs:  # jobs that answer a caller run in their own transaction, after the batch
            if j.own_errors:
                self._run_job(j)
        for b in items:
            if isinstance(b, _Barrier):
                b.done()
        if calls and (dt := time.perf_counter() - t0) > 1.0:
            log.warning("slow write: %d calls in %.2fs", len(calls), dt)
        return True

    def _failed(self, items: list, e: BaseException) -> bool:
        self.failed_batches += 1
        self._degrade(e)
        self._fail_waiters(items, _unavailable(e))
        return False

    def _run_job(self, j: _Job) -> None:
        try:
            with self._conn:
                r = j.fn(self._conn)
        except BaseException as e:  # noqa: BLE001 - handed back to the caller
            cause = storage_cause(e)
            j.fail(_unavailable(cause) if cause is not None else e)
        else:
            j.done(r)

    def _write_one_by_one(self, items: list) -> BaseException | None:
        """After a batch failed on a bad record: each record (and queued write) alone, so one bad
        record loses only itself. On a storage error, `items` keeps what is not written yet."""
        todo = [i for i in items if isinstance(i, CallRecord) or (isinstance(i, _Job) and not i.own_errors)]
        for n, i in enumerate(todo):
            try:
                with self._conn:
                    if isinstance(i, CallRecord):
                        mask_record(i, self.secrets)
                        write_calls(self._conn, [i])
                        for hook in self.after_batch:
                            hook(self._conn, [i])
                        self.written += 1
                    elif not i.cancelled:
                        i.fn(self._conn)
            except Exception as e:
                if isinstance(i, CallRecord):
                    self._rollback_hooks([i])
                if (cause := storage_cause(e)) is not None:
                    done = {id(x) for x in todo[:n]}
                    items[:] = [x for x in items if id(x) not in done]
                    return cause
                if isinstance(i, CallRecord) and self._store_without_hooks(i):
                    log.exception("call %s stored without its after_batch hooks (one failed on it)", i.call_id)
                    continue
                log.exception("%s could not be stored", f"call {i.call_id}" if isinstance(i, CallRecord) else "a write")
        return None

    def _store_without_hooks(self, rec: CallRecord) -> bool:
        """A hook's bug (an anomaly check, the search index) must not lose the call it fails on:
        the call is stored alone, without them. False when even that fails."""
        try:
            with self._conn:
                write_calls(self._conn, [rec])
        except Exception:  # noqa: BLE001 - the caller logs the first error; a storage error shows at the next batch
            return False
        self.written += 1
        return True

    def _run_idle(self) -> None:
        """The `idle(conn)` work of the hooks' addons (the search index's deferred rows), in one
        transaction, once the queue went quiet after a batch. A failure is logged and told to the
        hooks like a failed batch (`rollback`); the work is due again after the next batch."""
        self._idle_due = False
        work = [w for hook in self.after_batch if (w := getattr(getattr(hook, "__self__", hook), "idle", None))]
        if not work:
            return
        try:
            with self._conn:
                for w in work:
                    w(self._conn)
        except Exception as e:  # noqa: BLE001
            self._rollback_hooks([])
            if storage_cause(e) is None:
                log.exception("the writer's idle work failed")
            else:
                log.warning("the writer's idle work failed: %s", e)

    def _rollback_hooks(self, calls: list[CallRecord]) -> None:
        """Hooks keep state in memory too (anomaly counters): a hook with `rollback(records)` is told
        that its writes for them were rolled back and will run again."""
        for hook in self.after_batch:  # a bound method (Addon.after_batch): its addon may define rollback
            if (undo := getattr(getattr(hook, "__self__", hook), "rollback", None)) is not None:
                try:
                    undo(calls)
                except Exception:
                    log.exception("rolling back %r failed", hook)

    def _degrade(self, e: BaseException) -> None:
        reason = f"{type(e).__name__}: {e}"
        if self.degraded is None:
            self.degraded_since = time.time()
            log.error("storage failing, the proxy keeps serving and retries: %s (%d records queued)", reason,
                      len(self._q))
        self.degraded = reason
        try:
            if self._conn is not None and self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except apsw.Error:
            pass

    def _reopen(self) -> None:
        try:
            self._conn.close()
        except apsw.Error:
            pass
        self._conn = self._open()

    def _open(self) -> apsw.Connection:
        """The writing connection. SQLite's autocheckpoint would copy the WAL back into the file
        inside a commit every ~1000 pages: on one core that stalled calls for 15-20 ms (their p99
        at one call at a time went from 5 to 19 ms, scripts/bench). The Checkpointer thread does
        it instead, told by the WAL hook when the log has grown past `checkpoint_pages`."""
        conn = open_db(self.path)
        conn.wal_autocheckpoint(0)

        def grown(_conn: apsw.Connection, _db: str, pages: int) -> int:
            if pages >= self.checkpoint_pages:
                self._checkpointer.poke()
            return apsw.SQLITE_OK

        conn.set_wal_hook(grown)
        return conn

    def _fail_waiters(self, items: list, e: BaseException) -> None:
        for i in items:
            i = i[0] if isinstance(i, list) else i
            if isinstance(i, _Barrier):
                i.fail(e)
            elif isinstance(i, _Job) and i.fail is not None:
                i.fail(e)


def _unavailable(e: BaseException) -> StorageUnavailable:
    return StorageUnavailable(f"storage is failing ({type(e).__name__}: {e}); calls are still served and queued")


class _Barrier:
    def __init__(self, done: Callable[[], None], fail: Callable[[BaseException], None]):
        self.done, self.fail = done, fail


class _Job:
    def __init__(self, fn: Callable[[apsw.Connection], Any], done: Callable[[Any], None] | None = None,
                 fail: Callable[[BaseException], None] | None = None):
        self.fn, self.done, self.fail = fn, done, fail
        self.own_errors = fail is not None  # answers a caller (run()): its own transaction, its own errors
        self.cancelled = False


def _resolve(fut: asyncio.Future, value: Any = None) -> None:
    if not fut.done():
        fut.set_result(value)


def _fail(fut: asyncio.Future, e: BaseException) -> None:
    if not fut.done():
        fut.set_exception(e)
