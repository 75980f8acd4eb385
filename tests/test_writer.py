"""The single writer: a full queue makes producers wait (nothing dropped); close drains it."""
from __future__ import annotations

import asyncio
import time

import apsw

from modelux_local.core.records import CallRecord
from modelux_local.core.usage import Usage
from modelux_local.storage import Writer


def record(i: int) -> CallRecord:
    return CallRecord(call_id=f"call_{i:05d}", run_id=f"run_{i % 7}", tags={"run_id": f"run_{i % 7}"}, endpoint="chat",
                      started_at=time.time(), alias="@x", config="c", config_version="v", provider="p", model="m",
                      status="ok", http_status=200, usage=Usage(10, 5), latency_ms=1.0, ttft_ms=None, stream=False,
                      attempts=[], decision={}, error=None, request=b'{"model": "@x"}', response=b"{}")


async def test_full_queue_backpressure_loses_nothing(tmp_path):
    """With the writer stuck on a slow disk, a queue of 4 admits about 4 records: the other
    producers wait (their submit does not finish) until the writer makes room, and none is lost."""
    import threading

    w = Writer(tmp_path / "m.db", maxsize=4)
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
    for i in range(41, 400):
        if i < 300:
            await w.submit(record(i))
        else:
            w.submit_nowait(record(i))  # past a full queue: the overflow, never dropped
    await asyncio.to_thread(w.close)
    db = apsw.Connection(str(tmp_path / "m.db"))
    assert db.execute("SELECT count(*) FROM calls").fetchone()[0] == 400
    assert db.execute("SELECT sum(calls), sum(input_tokens) FROM runs").fetchone() == (400, 4000)
    assert max(batches) <= 512 and sum(batches) == 400


async def test_a_bad_record_does_not_sink_its_batch(tmp_path):
    w = Writer(tmp_path / "m.db")
    w.start()
    bad = record(1)
    bad.request = object()  # not storable
    for r in (record(0), bad, record(2)):
        await w.submit(r)
    await asyncio.to_thread(w.close)
    db = apsw.Connection(str(tmp_path / "m.db"))
    assert [r[0] for r in db.execute("SELECT call_id FROM calls ORDER BY call_id")] == ["call_00000", "call_00002"]
