"""The single writer: a full queue makes producers wait (nothing dropped); close drains it; a
failing disk (here SQLite's own "database or disk is full" through PRAGMA max_page_count on the
writer's connections) degrades it, sheds bodies before records, and it recovers by itself."""
from __future__ import annotations

import asyncio
import base64
import os
import time

import apsw
import pytest

from modelux_local.core.records import CallRecord
from modelux_local.core.usage import Usage
from modelux_local.errors import StorageUnavailable
from modelux_local.storage import Writer
from modelux_local.storage.bodies import decode_body


def record(i: int) -> CallRecord:
    return CallRecord(call_id=f"call_{i:05d}", run_id=f"run_{i % 7}", tags={"run_id": f"run_{i % 7}"}, endpoint="chat",
                      started_at=time.time(), alias="@x", config="c", config_version="v", provider="p", model="m",
                      status="ok", http_status=200, usage=Usage(10, 5), latency_ms=1.0, ttft_ms=None, stream=False,
                      attempts=[], decision={}, error=None, request=b'{"model": "@x"}', response=b"{}")


@pytest.mark.parametrize("bound", ["maxsize", "backlog"])
async def test_full_queue_backpressure_loses_nothing(tmp_path, bound):
    """With the writer stuck on a slow disk, a queue of 4 admits about 4 records: the other
    producers wait (their submit does not finish) until the writer makes room, and none is lost.
    `backlog` (BACKLOG, 1,024 by default) makes healthy producers wait long before the queue's
    bounds, so a SIGKILL loses at most that many plus the batch being written."""
    import threading

    w = Writer(tmp_path / "m.db", maxsize=4) if bound == "maxsize" else Writer(tmp_path / "m.db")
    if bound == "backlog":
        w.backlog = 4
    disk_free = threading.Event()
    batches = []
    w.after_batch.append(lambda conn, recs: (batches.append(len(recs)), disk_free.wait(20)))
    w.start()
    await w.submit(record(0))
    deadline = time.monotonic() + 10
    while not batches:  # the writer holds record 0's batch, stuck until disk_free
        assert time.monotonic() < deadline, "the writer never took a batch"
        await asyncio.sleep(0.01)
    producers = [asyncio.ensure_future(w.submit(record(i))) for i in range(1, 41)]
    await asyncio.sleep(0.5)
    done = sum(p.done() for p in producers)
    assert done <= 4, f"{done} of 40 submits finished while the writer was stuck: the queue does not push back"
    disk_free.set()
    await asyncio.wait_for(asyncio.gather(*producers), 20)
    await w.barrier()
    for i in range(41, 300):
        await w.submit(record(i))
    await w.barrier()
    for i in range(300, 305):  # producers that cannot wait get a little slack past the bound
        w.submit_nowait(record(i))
    await asyncio.to_thread(w.close)
    db = apsw.Connection(str(tmp_path / "m.db"))
    assert db.execute("SELECT count(*) FROM calls").fetchone()[0] == 305
    assert db.execute("SELECT sum(calls), sum(input_tokens) FROM runs").fetchone() == (305, 3050)
    assert max(batches) <= 512 and sum(batches) == 305
    assert w.status()["records_dropped"] == 0


async def test_a_bad_record_does_not_sink_its_batch(tmp_path):
    w = Writer(tmp_path / "m.db")
    w.start()
    bad = record(1)
    bad.attempts = [object()]  # not storable
    for r in (record(0), bad, record(2)):
        await w.submit(r)
    await asyncio.to_thread(w.close)
    db = apsw.Connection(str(tmp_path / "m.db"))
    assert [r[0] for r in db.execute("SELECT call_id FROM calls ORDER BY call_id")] == ["call_00000", "call_00002"]


class FullDisk:
    """SQLite's "database or disk is full" on every connection opened while `on`: a hook sets
    max_page_count to the file's current size, so apsw raises FullError through the real path."""

    def __init__(self):
        self.on = False

    def __call__(self, conn: apsw.Connection) -> None:
        if self.on:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {max(pages, 1)}")


@pytest.fixture
def full_disk():
    hook = FullDisk()
    apsw.connection_hooks.append(hook)
    yield hook
    apsw.connection_hooks.remove(hook)


async def wait_for(cond, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def big(i: int, kb: int = 4) -> CallRecord:
    r = record(i)
    # random padding: stored bodies are compressed, and these must really take pages on the disk
    r.request = b'{"model": "@x", "pad": "' + base64.b64encode(os.urandom(kb * 768)) + b'"}'
    r.usage = None  # the writer derives it from the body: stripping must keep it
    r.response = (b'{"usage": {"prompt_tokens": 10, "completion_tokens": 5}, "pad": "'
                  + base64.b64encode(os.urandom(kb * 768)) + b'"}')
    return r


async def test_full_disk_degrades_sheds_bodies_first_and_recovers_by_itself(tmp_path, full_disk):
    w = Writer(tmp_path / "m.db", maxsize=50, max_bytes=200 * 1024)
    w.start()
    for i in range(5):
        await w.submit(big(i))
    await w.barrier()
    # the disk fills up: the writer's connection is reopened with the limit (as after an I/O error)
    full_disk.on = True
    await w.run(full_disk)  # and the current one
    await w.submit(big(5))
    await wait_for(lambda: w.status()["state"] == "degraded")
    st = w.status()
    assert "FullError" in st["reason"] and "full" in st["reason"]
    # callers never wait on a failing disk, and management reads answer 503 at once
    t0 = time.perf_counter()
    for i in range(6, 106):
        await w.submit(big(i))
    assert time.perf_counter() - t0 < 2.0
    with pytest.raises(StorageUnavailable) as e:
        await w.barrier()
    assert e.value.status == 503
    with pytest.raises(StorageUnavailable):
        await w.run(lambda c: 1)
    st = w.status()
    # 101 x ~9 KB records cannot stay within 50 records and 200 KB: the oldest lost their bodies, then the
    # oldest records
    assert st["bodies_dropped"] > 0 and st["records_dropped"] > 0
    assert st["queued_bytes"] <= 200 * 1024 + 512 * 10 * 1024  # plus the batch being retried
    assert st["queued"] + st["records_dropped"] == 101  # 5..105: nothing unaccounted for
    queued = [e[0] for e in w._q]
    stripped = [r.decision.get("body_dropped") is not None for r in queued]
    assert stripped == sorted(stripped, reverse=True), "bodies are dropped oldest first"
    assert not stripped[-1], "the newest records keep their bodies"
    # space comes back: the writer notices by itself (no call needed)
    full_disk.on = False
    await wait_for(lambda: w.status()["state"] == "ok")
    await w.barrier()
    await asyncio.to_thread(w.close)
    db = apsw.Connection(str(tmp_path / "m.db"))
    ids = [r[0] for r in db.execute("SELECT call_id FROM calls ORDER BY call_id")]
    assert len(ids) == 106 - st["records_dropped"]
    dropped = 5 + st["records_dropped"]  # the oldest records after the first five went first
    assert ids == [f"call_{i:05d}" for i in [*range(5), *range(dropped, 106)]]
    tokens = db.execute("SELECT sum(input_tokens) FROM calls").fetchone()[0]
    empty = sum(not decode_body(db, req) for (req,) in db.execute("SELECT request FROM calls"))  # stored encoded
    assert empty >= st["bodies_dropped"] - st["records_dropped"]
    assert tokens == 10 * len(ids), "a record whose body was dropped keeps its usage (and cost)"
    assert db.execute("SELECT count(*) FROM calls WHERE decision LIKE '%body_dropped%'").fetchone()[0] == empty


async def test_close_ends_within_its_timeout_while_the_disk_stays_full(tmp_path, full_disk):
    w = Writer(tmp_path / "m.db")
    w.start()
    full_disk.on = True
    await w.run(full_disk)  # and the current one
    for i in range(50):
        await w.submit(record(i))
    await wait_for(lambda: w.status()["state"] == "degraded")
    t0 = time.perf_counter()
    await asyncio.to_thread(w.close, 3.0)
    assert time.perf_counter() - t0 < 4.0
    assert not w._thread.is_alive()


async def test_a_run_job_answers_after_its_commit(tmp_path):
    w = Writer(tmp_path / "m.db")
    w.start()
    assert await w.run(lambda c: c.execute("SELECT 41 + 1").fetchone()[0]) == 42
    with pytest.raises(ZeroDivisionError):
        await w.run(lambda c: 1 / 0)
    await asyncio.to_thread(w.close)


def streamed(i: int) -> CallRecord:
    r = record(i)
    r.stream, r.usage, r.response = True, None, None
    r.stream_events = [b'{"choices": [{"index": 0, "delta": {"content": "' + b"z" * 2048 + b'"}}]}'] * 4 + [
        b'{"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}']
    return r


async def test_streamed_records_shed_their_events_but_keep_their_usage(tmp_path, full_disk):
    w = Writer(tmp_path / "m.db", maxsize=1000, max_bytes=64 * 1024)
    w.start()
    await w.submit(big(0))
    await w.barrier()
    full_disk.on = True
    await w.run(full_disk)
    for i in range(1, 41):  # 40 x ~8.5 KB of stream events against a 64 KB bound
        w.submit_nowait(streamed(i))
    await wait_for(lambda: w.status()["state"] == "degraded")
    st = w.status()
    assert st["bodies_dropped"] >= 30 and st["records_dropped"] == 0 and st["queued_bytes"] <= 64 * 1024
    full_disk.on = False
    await wait_for(lambda: w.status()["state"] == "ok")
    await asyncio.to_thread(w.close)
    db = apsw.Connection(str(tmp_path / "m.db"))
    rows = [(tin, tout, len(decode_body(db, resp) or b""), dropped) for tin, tout, resp, dropped in db.execute(
        "SELECT input_tokens, output_tokens, response, decision LIKE '%body_dropped%' FROM calls WHERE stream = 1")]
    assert len(rows) == 40 and all(r[:2] == (7, 3) for r in rows), "usage survives the shedding"
    dropped = [r for r in rows if r[3]]
    assert len(dropped) == st["bodies_dropped"] and all((r[2] or 0) < 300 for r in dropped)
    assert any(r[2] > 8000 for r in rows if not r[3]), "the newest keep their assembled answer"


class CountingHook:
    """A hook with in-memory state (as the anomaly watcher has) whose own write fills the disk."""

    def __init__(self):
        self.counted, self.pad = 0, True

    def __call__(self, conn, recs):
        self.counted += len(recs)
        if self.pad:  # a real write past max_page_count: FullError after the counting
            conn.execute("CREATE TABLE IF NOT EXISTS pad (x BLOB)")
            conn.execute("INSERT INTO pad VALUES (zeroblob(200000))")

    def rollback(self, recs):
        self.counted -= len(recs)


async def test_hooks_are_told_of_a_rolled_back_batch_so_retries_do_not_count_twice(tmp_path, full_disk):
    w = Writer(tmp_path / "m.db")
    hook = CountingHook()
    w.after_batch.append(hook)
    w.start()
    full_disk.on = True
    await w.run(full_disk)
    for i in range(10):
        await w.submit(record(i))
    await wait_for(lambda: w.status()["write_failures"] >= 3)  # the same batch tried (and counted) 3+ times
    hook.pad = full_disk.on = False
    await wait_for(lambda: w.status()["state"] == "ok")
    await w.barrier()
    await asyncio.to_thread(w.close)
    stored = apsw.Connection(str(tmp_path / "m.db")).execute("SELECT count(*) FROM calls").fetchone()[0]
    assert stored == 10 and hook.counted == 10


async def test_the_anomaly_watcher_does_not_see_a_loop_in_a_retried_batch(tmp_path, full_disk):
    from modelux_local.analytics.anomalies import AnomalyWatcher, fingerprint
    from modelux_local.analytics.budgets import Pending
    from modelux_local.runtime import Runtime
    from modelux_local.settings import Paths

    rt = Runtime(Paths(tmp_path / "data", None))
    watcher = AnomalyWatcher(rt, Pending(), lambda: None)
    pad = CountingHook()
    rt.writer.after_batch += [watcher, pad]  # the failure comes after the watcher counted
    rt.writer.start()
    full_disk.on = True
    await rt.writer.run(full_disk)
    same = []
    for i in range(2):  # one request sent twice: below loop_repeats (5)
        r = record(i)
        r.run_id, r.tags = "looping", {"run_id": "looping"}
        r.request = b'{"model": "@x", "messages": [{"role": "user", "content": "same"}]}'
        r.attempts = [{"provider": "p", "model": "m", "status": "ok", "latency_ms": 1.0}]
        same.append(r)
        await rt.writer.submit(r)
    await wait_for(lambda: rt.writer.status()["write_failures"] >= 3)
    pad.pad = full_disk.on = False
    await wait_for(lambda: rt.writer.status()["state"] == "ok")
    await rt.writer.barrier()
    assert watcher._loops["looping"][fingerprint(same[0].request)] == 2
    rt.writer.close(5)
    db = apsw.Connection(str(rt.paths.db_path))
    assert db.execute("SELECT calls, anomalies FROM runs WHERE run_id = 'looping'").fetchone() == (2, "[]")


async def test_a_read_only_database_degrades_and_recovers_too(tmp_path):
    w = Writer(tmp_path / "m.db")
    w.start()
    await w.run(lambda c: c.execute("PRAGMA query_only = ON"))  # SQLite refuses writes: SQLITE_READONLY
    for i in range(3):
        await w.submit(record(i))
    await wait_for(lambda: w.status()["state"] == "degraded")
    assert "ReadOnlyError" in w.status()["reason"]
    with pytest.raises(StorageUnavailable):
        await w.barrier()
    # the writer reopens its connection while degraded (as after an I/O error): writable again
    await wait_for(lambda: w.status()["state"] == "ok")
    await w.barrier()
    await asyncio.to_thread(w.close)
    assert apsw.Connection(str(tmp_path / "m.db")).execute("SELECT count(*) FROM calls").fetchone()[0] == 3


async def test_records_arriving_one_by_one_share_transactions_and_a_barrier_does_not_wait(tmp_path, monkeypatch):
    """One call at a time must not cost one transaction (and one thread wake-up) per call: records
    that trickle in every 2 ms are grouped by the writer's linger. A barrier ends the linger: with
    the linger stretched to 2 s here, each barrier still resolves in a fraction of it."""
    from modelux_local.storage import writer as writer_mod

    monkeypatch.setattr(writer_mod, "LINGER_S", 2.0)
    w = Writer(tmp_path / "m.db")
    batches: list[int] = []
    w.after_batch.append(lambda conn, recs: batches.append(len(recs)))
    w.start()
    for i in range(30):
        w.submit_nowait(record(i))
        await asyncio.sleep(0.002)
    t = time.perf_counter()
    await w.barrier()
    slowest = time.perf_counter() - t
    assert sum(batches) == 30
    assert len(batches) <= 3, f"30 records arriving 2 ms apart took {len(batches)} transactions: {batches}"
    for i in range(30, 40):
        w.submit_nowait(record(i))
        await asyncio.sleep(0.005)  # the writer has woken for the record and lingers now
        t = time.perf_counter()
        await w.barrier()
        slowest = max(slowest, time.perf_counter() - t)
    assert sum(batches) == 40
    assert slowest < 1.0, f"a barrier took {slowest * 1000:.0f} ms: it waited for the linger"
    await asyncio.to_thread(w.close)


async def test_the_wal_is_copied_back_by_the_checkpointer_not_inside_the_writers_commits(tmp_path):
    """SQLite's autocheckpoint ran inside the writer's commits and stalled calls; the writer's
    connection has it off and a Checkpointer thread copies the WAL back once it passes
    `checkpoint_pages`. So the database file grows while the server runs, and the WAL stays bounded."""
    w = Writer(tmp_path / "m.db")
    w.checkpoint_pages = 20
    w.start()
    base = (tmp_path / "m.db").stat().st_size
    for i in range(400):
        rec = record(i)
        rec.request = os.urandom(900).hex().encode()  # ~1.8 KB each, incompressible
        w.submit_nowait(rec)
        if i % 50 == 49:
            await w.barrier()
    await w.barrier()
    deadline = time.monotonic() + 10
    while w._checkpointer.done == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert w._checkpointer.done >= 1 and w._checkpointer.failures == 0
    assert (tmp_path / "m.db").stat().st_size > base + 400_000, "nothing was copied back from the WAL"
    await asyncio.to_thread(w.close)
    db = apsw.Connection(str(tmp_path / "m.db"))
    assert db.execute("SELECT count(*) FROM calls").fetchone()[0] == 400


async def test_idle_work_runs_once_the_queue_goes_quiet_and_at_the_stop(tmp_path, monkeypatch):
    """An after_batch hook's addon may have `idle(conn)`: the writer runs it in a transaction of
    its own once its queue stayed empty IDLE_S after calls were written (not while calls keep
    coming, and not again until more are written), and once more at its stop."""
    from modelux_local.storage import writer as writer_mod

    class Deferring:
        def __init__(self):
            self.batches, self.idle_runs = 0, []

        def after_batch(self, conn, recs):
            self.batches += 1

        def idle(self, conn):
            self.idle_runs.append(conn.execute("SELECT count(*) FROM calls").fetchone()[0])

    monkeypatch.setattr(writer_mod, "IDLE_S", 0.3)
    d = Deferring()
    w = Writer(tmp_path / "m.db")
    w.after_batch.append(d.after_batch)
    w.start()
    for i in range(20):  # a call every 20 ms: never quiet for 0.3 s
        w.submit_nowait(record(i))
        await asyncio.sleep(0.02)
    assert d.idle_runs == [], "idle work ran while calls kept coming"
    await asyncio.sleep(0.9)
    assert d.idle_runs == [20], d.idle_runs  # once, after the quiet began, with every call stored
    await asyncio.sleep(0.6)
    assert d.idle_runs == [20], "idle work ran again with nothing written since"
    w.submit_nowait(record(20))
    await asyncio.to_thread(w.close)  # the stop comes before the quiet: the idle work runs at the stop
    assert d.idle_runs == [20, 21]
