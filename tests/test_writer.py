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
    w = Writer(tmp_path / "m.db", maxsize=4)
    slow = []
    w.after_batch.append(lambda conn, recs: (slow.append(len(recs)), time.sleep(0.01)))  # a slow disk
    w.start()
    t0 = time.perf_counter()
    await asyncio.gather(*(w.submit(record(i)) for i in range(300)))
    await w.barrier()
    assert time.perf_counter() - t0 > 0.02  # producers did wait for room
    for i in range(300, 400):
        w.submit_nowait(record(i))
    await asyncio.to_thread(w.close)
    db = apsw.Connection(str(tmp_path / "m.db"))
    assert db.execute("SELECT count(*) FROM calls").fetchone()[0] == 400
    assert db.execute("SELECT sum(calls), sum(input_tokens) FROM runs").fetchone() == (400, 4000)
    assert max(slow) <= 512 and sum(slow) == 400


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
