"""The deferred full-text index (storage/search.PendingIndex) on a real writer and database file:
rows wait for 64 calls or a quiet writer, a search's flush job sees every call stored before it,
and a batch that fails takes its rows back without losing those of earlier batches."""
from __future__ import annotations

import asyncio
import time

import apsw

from modelux_local.core.records import CallRecord
from modelux_local.storage import Writer
from modelux_local.storage import writer as writer_mod
from modelux_local.storage.search import PendingIndex

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]


def record(i: int, word: str | None = None) -> CallRecord:
    word = word or f"{WORDS[i % len(WORDS)]}{i}"
    req = b'{"model":"@x","messages":[{"role":"user","content":"tell me about %s"}]}' % word.encode()
    return CallRecord(call_id=f"call_{i:05d}", run_id=None, tags={}, endpoint="chat", started_at=time.time(),
                      alias="@x", config="c", config_version="v", provider="p", model="m", status="ok",
                      http_status=200, usage=None, latency_ms=1.0, ttft_ms=None, stream=False, attempts=[],
                      decision={}, error=None, request=req,
                      response=b'{"choices":[{"message":{"role":"assistant","content":"answer %d"}}]}' % i)


def indexed(db) -> dict[str, str]:
    """call_id -> indexed prompt, joined on rowid (a row under the wrong rowid shows here)."""
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return dict(conn.execute("SELECT c.call_id, f.prompt FROM calls_fts AS f JOIN calls AS c ON c.rowid = f.rowid"))
    finally:
        conn.close()


async def test_rows_wait_for_64_calls_or_the_quiet_and_a_flush_job_sees_everything(tmp_path, monkeypatch):
    monkeypatch.setattr(writer_mod, "IDLE_S", 0.5)
    p = PendingIndex()
    w = Writer(tmp_path / "m.db")
    w.after_batch.append(p.add)
    w.start()
    for i in range(10):
        w.submit_nowait(record(i))
    await w.barrier()
    assert indexed(w.path) == {}, "10 calls were indexed in their own transaction: nothing deferred"
    assert len(p.rows) == 10
    assert await w.run(p.flush_job) == 10  # what the search route does first
    got = indexed(w.path)
    assert got == {f"call_{i:05d}": f"tell me about {WORDS[i % 8]}{i}" for i in range(10)}

    for i in range(10, 80):  # 70 more: 64 of them reach the index with the batch that filled the queue
        w.submit_nowait(record(i))
    await w.barrier()
    assert len(indexed(w.path)) >= 74 and len(indexed(w.path)) + len(p.rows) == 80
    deadline = time.monotonic() + 10
    while p.rows and time.monotonic() < deadline:  # the quiet writer indexes the rest by itself
        await asyncio.sleep(0.05)
    assert len(indexed(w.path)) == 80
    await asyncio.to_thread(w.close)


async def test_a_failed_batch_gives_its_rows_back_and_keeps_the_earlier_ones(tmp_path):
    """Calls 0-9 wait in the index; the next batch (10-79) fills it, so its transaction flushes
    0-9 with its own rows, then a later hook fails on call 42: the batch rolls back (the FTS rows
    with it) and the writer stores 10-79 again one by one, 42 failing alone, then stored without
    the hooks. In the end every call is stored, each indexed under its own rowid but 42."""
    p = PendingIndex()
    w = Writer(tmp_path / "m.db")
    w.after_batch.append(p.add)

    def picky(conn, recs):
        if any(r.call_id == "call_00042" for r in recs):
            raise ValueError("a hook that fails on one record")

    w.after_batch.append(picky)
    w.start()
    for i in range(10):
        w.submit_nowait(record(i))
    await w.barrier()
    assert len(p.rows) == 10
    for i in range(10, 80):
        w.submit_nowait(record(i))
    await w.barrier()
    await w.run(p.flush_job)
    got = indexed(w.path)
    want = {f"call_{i:05d}": f"tell me about {WORDS[i % 8]}{i}" for i in range(80) if i != 42}
    assert got == want
    conn = apsw.Connection(str(w.path), flags=apsw.SQLITE_OPEN_READONLY)
    assert conn.execute("SELECT count(*) FROM calls").fetchone()[0] == 80  # 42 too: a hook's bug loses no call
    conn.close()
    await asyncio.to_thread(w.close)


async def test_a_body_of_any_shape_is_stored_and_indexed_without_failing_its_batch(tmp_path):
    """A client's bad request is recorded with its error, so the index meets any JSON where a list
    belongs: it indexes what text it finds and fails neither the batch nor a later search
    (it once raised TypeError on `"messages": 5`, which lost the call and failed searches)."""
    p = PendingIndex()
    w = Writer(tmp_path / "m.db")
    w.after_batch.append(p.add)
    w.start()
    odd = []
    for i, (req, resp) in enumerate([
            (b'{"messages": 5, "system": "sys odd0"}', b'{"choices": 3}'),
            (b'{"messages": [{"content": "odd1", "tool_calls": 7}]}', b'{"choices": [{"message": {"tool_calls": [1, {"function": 2}]}}]}'),
            (b'{"messages": [{"content": "odd2", "tool_calls": [{"function": {"name": 1, "arguments": "argsodd2"}}]}]}', b'"x"'),
            (b'[1, 2]', b'null')]):
        r = record(100 + i)
        r.request, r.response = req, resp
        odd.append(r)
    for r in [record(1), *odd, record(2)]:
        w.submit_nowait(r)
    await w.barrier()
    assert await w.run(p.flush_job) == 6
    got = indexed(w.path)
    assert got["call_00001"] == "tell me about bravo1" and got["call_00002"] == "tell me about charlie2"
    assert got["call_00100"] == "sys odd0" and got["call_00101"] == "odd1"
    assert got["call_00102"] == "odd2\nargsodd2" and got["call_00103"] == ""
    await asyncio.to_thread(w.close)
