"""Stored bodies: each distinct message once, compressed, and still the exact bytes for every reader
(API, export, replay, search); retention prunes bodies and keeps rollups; an older database migrates."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import apsw
import httpx

from modelux_local.replay.selection import load_run
from modelux_local.storage.bodies import MAGIC, decode_body
from modelux_local.storage.db import open_db
from modelux_local.storage.retention import prune

from .server import ServerProcess, write_config

FIXTURES = Path(__file__).parent / "fixtures"
CONFIG = {
    "modelux.toml": '[routing]\ndefault = "t"\n\n[providers.mock]\nkind = "mock"\n\n[storage]\nkeep_days = KEEP\n',
    "t.toml": '[aliases.executor]\ntargets = [{ provider = "mock", model = "mock-small" }]\n',
}


def _config(tmp_path: Path, keep_days: str) -> Path:
    return write_config(tmp_path / "config", {k: v.replace("KEEP", keep_days) for k, v in CONFIG.items()})


def _agent_bodies(run_id: str, steps: int, filler: int = 0) -> list[bytes]:
    """A growing conversation as raw bytes no JSON encoder would reproduce: odd spacing, escaped and
    raw non-ASCII, a key order with messages last."""
    history = ['{"role":"system",  "content":"Sie sind gr\\u00fcndlich. ' + "Kontext " * 150 + '"}']
    out = []
    for i in range(steps):
        noise = os.urandom(filler).hex()  # incompressible: so pruning it frees pages
        history.append('{ "content" : "Schritt %d: weiter — %s%s", "role":"user" }' % (i, "mehr " * 60, noise))
        out.append(('{"model": "@executor",\n "mlx:tags": {"run_id": "%s"},\n "messages": [%s]}'
                    % (run_id, ",\n  ".join(history))).encode())
        history.append('{"role":"assistant","content":"Antwort %d"}' % i)
    return out


def test_bodies_round_trip_byte_identical_through_api_export_and_replay(tmp_path):
    srv = ServerProcess(tmp_path / "data", _config(tmp_path, "30")).start()
    try:
        sent: dict[str, bytes] = {}
        with httpx.Client(timeout=10) as h:
            for body in _agent_bodies("rt-run", 6):
                r = h.post(srv.base_url + "/chat/completions", content=body, headers={"content-type": "application/json"})
                assert r.status_code == 200, r.text
                sent[r.headers["x-mlx-call-id"]] = body
        for call_id, body in sent.items():  # the management API: the same JSON as sent
            got = srv.get(f"/mlx/v1/calls/{call_id}").json()
            assert got["request"] == json.loads(body)
            assert got["response"]["choices"][0]["message"]["content"]
        lines = [json.loads(x) for x in srv.cli("export", "--jsonl", "-").stdout.splitlines()]
        exported = {x["call_id"]: x["request"] for x in lines if x.get("call_id") in sent}
        assert exported == {k: json.loads(v) for k, v in sent.items()}
    finally:
        srv.stop()

    conn = apsw.Connection(str(srv.db_path))
    rows = dict(conn.execute("SELECT call_id, request FROM calls WHERE run_id = 'rt-run'").fetchall())
    assert set(rows) == set(sent)
    for call_id, blob in rows.items():
        assert bytes(blob).startswith(MAGIC)                        # stored encoded ...
        assert decode_body(conn, blob) == sent[call_id]            # ... and read back byte for byte
    run = load_run(conn, "rt-run")                                  # what replay sends again
    assert {c.call_id: c.request for c in run.calls} == sent
    # each distinct message once: 1 system + 6 user + 5 assistant messages were sent (the last answer never)
    assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 12
    stored = conn.execute("SELECT sum(length(request)) FROM calls WHERE run_id = 'rt-run'").fetchone()[0] + \
        conn.execute("SELECT sum(length(body)) FROM messages").fetchone()[0]
    assert stored * 3 < sum(map(len, sent.values())), (stored, sum(map(len, sent.values())))


def test_search_indexes_each_message_of_a_run_once(tmp_path):
    srv = ServerProcess(tmp_path / "data", _config(tmp_path, "30")).start()
    try:
        with httpx.Client(timeout=10) as h:
            for body in _agent_bodies("search-run", 4):
                assert h.post(srv.base_url + "/chat/completions", content=body,
                              headers={"content-type": "application/json"}).status_code == 200
        hits = json.loads(srv.cli("logs", "search", "Schritt", "--run-id", "search-run", "--json").stdout)
        first = json.loads(srv.cli("logs", "search", "Kontext", "--run-id", "search-run", "--json").stdout)
    finally:
        srv.stop()
    assert len(hits["results"] if isinstance(hits, dict) else hits) == 4  # every step says something new
    first = first["results"] if isinstance(first, dict) else first
    assert len(first) == 1                                                 # the system prompt: its first call only


def _write_run(conn: apsw.Connection, run_id: str, started_at: float, bodies: list[bytes]) -> list[str]:
    from modelux_local.core.records import CallRecord
    from modelux_local.storage.record_rows import write_calls

    ids = []
    with conn:
        for i, body in enumerate(bodies):
            ids.append(f"{run_id}-{i}")
            write_calls(conn, [CallRecord(
                call_id=ids[-1], run_id=run_id, tags={"run_id": run_id}, endpoint="chat", started_at=started_at + i,
                alias="@executor", config="t", config_version="v1", provider="mock", model="mock-small", status="ok",
                http_status=200, usage=None, latency_ms=5.0, ttft_ms=None, stream=False, attempts=[], decision={},
                error=None, request=body,
                response=b'{"choices":[{"message":{"content":"ok"}}],"usage":{"prompt_tokens":7,"completion_tokens":3}}')])
    return ids


def test_retention_prunes_old_bodies_keeps_rollups_and_shared_messages(tmp_path):
    db = tmp_path / "modelux.db"
    conn = open_db(db)
    now = 1_800_000_000.0
    old_bodies = _agent_bodies("old", 5, filler=20_000)
    new_bodies = _agent_bodies("new", 3)   # shares the system message with the old run
    old = _write_run(conn, "old", now - 40 * 86400, old_bodies)
    new = _write_run(conn, "new", now - 86400, new_bodies)
    before = conn.execute("SELECT calls, input_tokens, output_tokens, cost_nusd FROM runs WHERE run_id = 'old'").fetchone()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size_before = db.stat().st_size

    done = prune(conn, keep_days=30, now=now)

    assert done["calls"] == len(old) and done["messages"] > 0
    assert conn.execute("SELECT count(*) FROM calls WHERE run_id = 'old' AND request IS NULL AND response IS NULL "
                        "AND input_tokens = 7").fetchone()[0] == len(old)   # rows and their figures stay
    assert conn.execute("SELECT calls, input_tokens, output_tokens, cost_nusd FROM runs WHERE run_id = 'old'"
                        ).fetchone() == before
    for call_id, body in zip(new, new_bodies):  # the kept run still reads whole, shared system message included
        blob = conn.execute("SELECT request FROM calls WHERE call_id = ?", (call_id,)).fetchone()[0]
        assert decode_body(conn, blob) == body
    # only the kept run's messages remain: system + 3 user + 2 assistant
    assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 6
    assert conn.execute("PRAGMA freelist_count").fetchone()[0] == 0    # incremental vacuum gave the pages back
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert db.stat().st_size < size_before
    # after the pass the writer's caches were reset: the old run's messages, sent again, are stored again
    again = _write_run(conn, "old-again", now, old_bodies[:2])
    assert [decode_body(conn, conn.execute("SELECT request FROM calls WHERE call_id = ?", (c,)).fetchone()[0])
            for c in again] == old_bodies[:2]


def _legacy_server(tmp_path: Path, keep_days: str) -> ServerProcess:
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(FIXTURES / "legacy-main.db", data / "modelux.db")
    return ServerProcess(data, _config(tmp_path, keep_days)).start()


def test_a_database_made_by_the_previous_version_migrates_and_reads(tmp_path):
    """tests/fixtures/legacy-main.db was written by main's storage code before bodies were encoded
    (raw bodies, auto_vacuum off, schema version 4); legacy-main.json holds the bodies it stored."""
    expected = json.loads((FIXTURES / "legacy-main.json").read_text())
    srv = _legacy_server(tmp_path, "0")   # keep everything: the fixture's calls are from 2025
    try:
        for call_id, bodies in expected.items():
            got = srv.get(f"/mlx/v1/calls/{call_id}").json()
            assert got["request"] == json.loads(bodies["request"])
            assert got["response"] == json.loads(bodies["response"])
        assert srv.get("/mlx/v1/runs/legacy-run").json()["calls"] == 4
        r = httpx.post(srv.base_url + "/chat/completions", content=_agent_bodies("after-upgrade", 1)[0],
                       headers={"content-type": "application/json"}, timeout=10)
        assert r.status_code == 200
        assert srv.get(f"/mlx/v1/calls/{r.headers['x-mlx-call-id']}").json()["request"]["messages"]
    finally:
        srv.stop()
    conn = apsw.Connection(str(srv.db_path))
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2        # switched once, by a VACUUM
    assert conn.execute("SELECT count(*) FROM schema_migrations WHERE version = 30").fetchone()[0] == 1
    legacy = conn.execute("SELECT request FROM calls WHERE call_id = 'legacy-call-2'").fetchone()[0]
    assert decode_body(conn, legacy) == expected["legacy-call-2"]["request"].encode()  # raw rows read as they are


def test_a_server_prunes_bodies_older_than_keep_days_at_start(tmp_path):
    srv = _legacy_server(tmp_path, "1")
    try:
        got = srv.get("/mlx/v1/calls/legacy-call-0").json()
        for _ in range(50):  # the first pass runs in the background right after start
            if got["request"] is None:
                break
            time.sleep(0.1)
            got = srv.get("/mlx/v1/calls/legacy-call-0").json()
        assert got["request"] is None and got["response"] is None
        assert got["input_tokens"] == 100 and got["status"] == "ok"       # the call's rollup stays
        assert srv.get("/mlx/v1/runs/legacy-run").json()["calls"] == 4
    finally:
        srv.stop()


def test_keep_days_must_be_a_non_negative_number(tmp_path):
    cfg = _config(tmp_path, "-1")
    r = ServerProcess(tmp_path / "data", cfg).cli("config", "check", str(cfg), check=False)
    assert r.returncode != 0
    assert "storage.keep_days" in (r.stderr + r.stdout) and ">= 0" in (r.stderr + r.stdout)


def test_the_readme_storage_example_is_valid_config(tmp_path):
    from modelux_local.config.loader import load_dir

    from .test_readme_examples import example

    block = example("storage-toml").text
    cfg = write_config(tmp_path / "c", {"modelux.toml": CONFIG["modelux.toml"].split("[storage]")[0] + block,
                                        "t.toml": CONFIG["t.toml"]})
    assert load_dir(cfg).server.storage.keep_days == 30


def test_a_batch_gives_the_same_run_rollups_as_one_call_at_a_time(tmp_path):
    """write_calls folds a batch's calls into one upsert per run: the rows must be what per-call upserts give."""
    from modelux_local.core.records import CallRecord
    from modelux_local.core.usage import Usage
    from modelux_local.storage.record_rows import write_calls

    def recs():
        out = []
        for i in range(12):
            run = f"fold-{i % 3}"
            tags = {"run_id": run, **({"agent": f"a{i}"} if i > 3 else {}), "step": str(i)}
            out.append(CallRecord(
                call_id=f"f-{i}", run_id=run, tags=tags, endpoint="chat", started_at=1_800_000_000.0 + (7 * i) % 11,
                alias="@executor", config="t", config_version="v1", provider="mock", model="mock-small",
                status="error" if i % 5 == 0 else "ok", http_status=200, latency_ms=10.0 + i, ttft_ms=None,
                usage=Usage(input_tokens=i, output_tokens=2 * i), stream=False, attempts=[{}] * (1 + i % 2),
                decision={}, error=None, request=b"{}", response=None))
        return out

    batch, single = open_db(tmp_path / "batch.db"), open_db(tmp_path / "single.db")
    with batch:
        write_calls(batch, recs())
    for r in recs():
        with single:
            write_calls(single, [r])
    q = "SELECT * FROM runs ORDER BY run_id"
    assert batch.execute(q).fetchall() == single.execute(q).fetchall()
    assert batch.execute("SELECT count(*), sum(calls) FROM runs").fetchone() == (3, 12)


def test_small_bodies_are_stored_raw_big_ones_compressed_and_every_older_form_still_reads(tmp_path):
    """Below MIN_COMPRESS a body skips zstd (the codec byte says so); above it, it is compressed;
    rows written when the threshold was lower (a small body compressed) and raw legacy rows still
    decode byte for byte."""
    from modelux_local.storage import bodies
    from modelux_local.storage.bodies import CODEC, CODEC_NONE, KIND_BODY, MIN_COMPRESS, BodyEncoder, compress

    conn = open_db(tmp_path / "b.db")
    enc = BodyEncoder(conn)
    small = b'{"id": "chatcmpl-1", "choices": [{"message": {"content": "h\\u00e9llo \xc3\xa9"}}], "usage": {}}' * 5
    big = json.dumps({"choices": [{"message": {"content": "weiter " * 400}}]}).encode()
    assert len(small) < MIN_COMPRESS <= len(big)
    stored_small, stored_big = enc.response(small), enc.response(big)
    assert stored_small == MAGIC + bytes((KIND_BODY, CODEC_NONE)) + small
    assert stored_big[:4] == MAGIC + bytes((KIND_BODY, CODEC)) and len(stored_big) < len(big) // 4
    small_request = enc.request(small, "run-s", 1.0)
    assert small_request == stored_small  # a short request is stored whole, the same way
    # a small body compressed, as the previous threshold (256 bytes) stored it
    old_small = MAGIC + bytes((KIND_BODY,)) + bytes((CODEC,)) + bodies._zc.compress(small)
    with conn:
        conn.executemany("INSERT INTO calls (call_id, started_at, endpoint, status, http_status, request, response) "
                         "VALUES (?, 0, 'chat', 'ok', 200, ?, ?)",
                         [("raw", small_request, stored_small), ("big", None, stored_big), ("old", old_small, old_small),
                          ("legacy", small, big)])
    got = {cid: (decode_body(conn, q), decode_body(conn, r))
           for cid, q, r in conn.execute("SELECT call_id, request, response FROM calls")}
    assert got == {"raw": (small, small), "big": (None, big), "old": (small, small), "legacy": (small, big)}
    assert compress(small)[0] == CODEC_NONE and compress(big)[0] == CODEC
