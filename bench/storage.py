"""storage: what realistic agent runs cost on disk, how fast the writer stores them, what retention gives back.

Runs of 20-60 steps resend their growing history (a system prompt, the task, then per step an
assistant tool call and a tool result of 1-20 KB of text) as an SDK would send it. They go
through the real writer thread (storage.Writer with the search index hook, as a server runs
it) into a fresh database. Reported: raw bytes per call (request + response as sent and
received) against the bytes stored (the body columns plus the `messages` table; and the
whole file, which also holds the search index), the writer's calls/s, zstd against zlib on
these bodies, and the file after a retention pass over half of the runs.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import time
import zlib

from bench._harness import Context

DESCRIPTION = "bytes per call raw vs stored, writer calls/s, zstd vs zlib, size after retention"

WORDS = ("the of and to in is for on that with as by this are from be at an it or was which have not "
         "data file error value function return request response table column index query result user "
         "agent model token budget config alias provider stream chunk latency cost run step tool call "
         "search report summary revenue quarter growth customer order invoice shipment warehouse").split()


def add_arguments(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("storage")
    g.add_argument("--storage-runs", type=int, help="runs to write (default 100, ~1 GB raw held in memory; --quick: 40)")


def _text(rng: random.Random, size: int) -> str:
    out, n = [], 0
    while n < size:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14)))
        if rng.random() < 0.3:
            line = f"{rng.randint(1, 99999)}\t{line}\t{rng.random():.6f}"
        out.append(line)
        n += len(line) + 1
    return "\n".join(out)[:size]


def make_runs(n_runs: int, seed: int = 7) -> list[list[tuple[bytes, bytes]]]:
    """Per run, (request body, response body) per step, bodies as the OpenAI SDK sends/receives them."""
    rng = random.Random(seed)
    system = "You are a careful research agent. " + _text(rng, 1500)
    runs = []
    for r in range(n_runs):
        msgs = [{"role": "system", "content": system},
                {"role": "user", "content": f"Task {r}: " + _text(rng, 300)}]
        steps = []
        for s in range(rng.randint(20, 60)):
            req = json.dumps({"messages": msgs, "model": "@agent", "temperature": 0.2,
                              "tools": [{"type": "function", "function": {"name": "search", "parameters": {
                                  "type": "object", "properties": {"q": {"type": "string"}}}}}],
                              "mlx:tags": {"run_id": f"run-{r}", "agent": "research"}}).encode()
            call = {"id": f"call_{r}_{s}", "type": "function",
                    "function": {"name": "search", "arguments": json.dumps({"q": _text(rng, 80)})}}
            resp = json.dumps({"id": f"chatcmpl-{r}-{s}", "object": "chat.completion", "created": 1700000000 + s,
                               "model": "gpt-4o-mini", "choices": [{"index": 0, "finish_reason": "tool_calls",
                               "message": {"role": "assistant", "content": None, "tool_calls": [call]}}],
                               "usage": {"prompt_tokens": len(req) // 4, "completion_tokens": 40,
                                         "total_tokens": len(req) // 4 + 40}}).encode()
            steps.append((req, resp))
            msgs = msgs + [{"role": "assistant", "content": None, "tool_calls": [call]},
                           {"role": "tool", "tool_call_id": call["id"], "content": _text(rng, rng.randint(1000, 20000))}]
        runs.append(steps)
    return runs


def _records(runs, t0: float):
    from modelux_local.core.records import CallRecord

    out = []
    for r, steps in enumerate(runs):
        for s, (req, resp) in enumerate(steps):
            out.append(CallRecord(
                call_id=f"c-{r}-{s}", run_id=f"run-{r}", tags={"run_id": f"run-{r}", "agent": "research"},
                endpoint="chat", started_at=t0 + r * 60 + s, alias="@agent", config="bench", config_version="v1",
                provider="up", model="gpt-4o-mini", status="ok", http_status=200, usage=None, latency_ms=120.0,
                ttft_ms=None, stream=False, attempts=[{"provider": "up", "status": "ok", "latency_ms": 120.0}],
                decision={"alias": "@agent"}, error=None, request=req, response=resp))
    return out


def _codecs(runs) -> dict:
    """zstd (level 3) against zlib (level 6) on distinct messages and whole responses."""
    import zstandard

    from modelux_local.storage.bodies import message_spans

    seen, samples = set(), []
    for steps in runs[:40]:
        for req, resp in steps:
            for s, e in message_spans(req) or []:
                if req[s:e] not in seen:
                    seen.add(req[s:e])
                    samples.append(req[s:e])
            samples.append(resp)
    raw = sum(map(len, samples))
    out = {"samples": len(samples), "raw_bytes": raw}
    zd = zstandard.ZstdDecompressor()
    for name, fn, back in (("zstd-3", zstandard.ZstdCompressor(level=3).compress, zd.decompress),
                           ("zlib-1", lambda b: zlib.compress(b, 1), zlib.decompress),
                           ("zlib-6", lambda b: zlib.compress(b, 6), zlib.decompress)):
        t = time.perf_counter()
        packed = [fn(b) for b in samples]
        dt = time.perf_counter() - t
        t = time.perf_counter()
        for b in packed:
            back(b)
        dd = time.perf_counter() - t
        out[name] = {"ratio": round(raw / sum(map(len, packed)), 2), "mb_per_s": round(raw / dt / 1e6, 1),
                     "decompress_mb_per_s": round(raw / dd / 1e6, 1)}
    return out


def _write(db, recs, index: bool) -> float:
    from modelux_local.storage import Writer
    from modelux_local.storage.search import PendingIndex

    w = Writer(db, maxsize=len(recs) + 10)
    if index:  # as the server indexes: 64 calls at a time, the rest when the writer goes quiet or stops
        w.after_batch.append(PendingIndex().add)
    w.start()
    t = time.perf_counter()
    for rec in recs:
        w.submit_nowait(rec)
    w.close(timeout=600)
    return time.perf_counter() - t


def _sizes(db) -> dict:
    from modelux_local.storage.db import connect

    conn = connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    bodies = conn.execute("SELECT coalesce(sum(length(request)) + sum(length(response)), 0) FROM calls").fetchone()[0]
    msgs = conn.execute("SELECT coalesce(sum(length(body) + length(hash) + 16), 0), count(*) FROM messages").fetchone()
    try:
        fts = conn.execute("SELECT sum(pgsize) FROM dbstat WHERE name LIKE 'calls_fts%'").fetchone()[0] or 0
    except Exception:  # dbstat not compiled in
        fts = None
    out = {"file": os.path.getsize(db), "bodies": bodies + msgs[0], "messages": msgs[1], "fts": fts}
    conn.close()
    return out


async def run(ctx: Context) -> dict:
    from modelux_local.storage.db import open_db
    from modelux_local.storage.retention import prune

    n_runs = ctx.args.storage_runs or (40 if ctx.quick else 100)
    ctx.log(f"storage: generating {n_runs} runs ...")
    runs = make_runs(n_runs)
    calls = sum(len(s) for s in runs)
    raw = sum(len(a) + len(b) for s in runs for a, b in s)
    now = time.time()
    t0 = now - 10 * 86400  # the first half of the runs are older than keep_days = 5
    recs = _records(runs, t0)
    half = sum(len(s) for s in runs[: len(runs) // 2])
    for rec in recs[half:]:
        rec.started_at += 6 * 86400
    figures: dict = {"runs": n_runs, "calls": calls, "raw_bytes_per_call": round(raw / calls)}
    ctx.log(f"storage: {calls} calls, {raw / 1e6:.1f} MB raw; writing through the writer (search index on) ...")
    db = ctx.workdir / "store.db"
    dt = _write(db, recs, index=True)
    s = _sizes(db)
    figures |= {"writer_calls_per_s": round(calls / dt), "writer_raw_mb_per_s": round(raw / dt / 1e6, 1),
                "stored_body_bytes_per_call": round(s["bodies"] / calls),
                "file_bytes_per_call": round(s["file"] / calls),
                "fts_bytes_per_call": None if s["fts"] is None else round(s["fts"] / calls),
                "distinct_messages": s["messages"],
                "raw_over_stored_bodies": round(raw / s["bodies"], 1), "raw_over_file": round(raw / s["file"], 1)}
    # the writer alone (no search index), on small calls too: the ceiling of the store itself
    db2 = ctx.workdir / "noindex.db"
    dt2 = _write(db2, _records(runs, t0), index=False)
    figures["writer_no_index_calls_per_s"] = round(calls / dt2)
    small = _records([[(b'{"model":"@fast","messages":[{"role":"user","content":"hi %d"}]}' % i,
                        b'{"choices":[{"message":{"role":"assistant","content":"hello"}}],"usage":'
                        b'{"prompt_tokens":9,"completion_tokens":2}}') for i in range(20)] for _ in range(
        1000 if ctx.quick else 5000)], t0)
    dt3 = _write(ctx.workdir / "small.db", small, index=True)
    figures["writer_small_calls_per_s"] = round(len(small) / dt3)

    ctx.log("storage: retention pass (keep_days 5: the older half of the runs) ...")
    conn = open_db(db)
    t = time.perf_counter()
    pruned = prune(conn, keep_days=5, now=now)
    conn.close()
    after = _sizes(db)
    figures |= {"retention": pruned, "retention_s": round(time.perf_counter() - t, 2),
                "file_mb_before_retention": round(s["file"] / 1e6, 2),
                "file_mb_after_retention": round(after["file"] / 1e6, 2)}
    figures["codecs"] = _codecs(runs)
    return figures


def render(f: dict) -> str:
    c = f["codecs"]
    return "\n".join([
        f"storage — {f['runs']} agent runs of 20-60 steps, {f['calls']} calls, tool results 1-20 KB",
        f"  raw request+response per call   {f['raw_bytes_per_call']:>10,} B",
        f"  stored bodies per call          {f['stored_body_bytes_per_call']:>10,} B   (raw / stored {f['raw_over_stored_bodies']}x;"
        f" {f['distinct_messages']:,} distinct messages)",
        f"  whole file per call             {f['file_bytes_per_call']:>10,} B   (raw / file {f['raw_over_file']}x; search "
        f"index {f['fts_bytes_per_call'] if f['fts_bytes_per_call'] is not None else '?'} B/call of it)",
        f"  writer, these runs              {f['writer_calls_per_s']:>10,} calls/s ({f['writer_raw_mb_per_s']} MB/s raw) "
        f"with the search index; {f['writer_no_index_calls_per_s']:,} without",
        f"  writer, small calls             {f['writer_small_calls_per_s']:>10,} calls/s (with the search index)",
        f"  retention keep_days=5           {f['file_mb_before_retention']} MB -> {f['file_mb_after_retention']} MB "
        f"({f['retention']['calls']} call bodies, {f['retention']['messages']} messages pruned, "
        f"{f['retention']['pages']} pages given back, {f['retention_s']}s)",
        f"  codecs on {c['samples']:,} distinct messages and responses: " + "; ".join(
            f"{k} {c[k]['ratio']}x at {c[k]['mb_per_s']} MB/s (decompress {c[k]['decompress_mb_per_s']})"
            for k in ("zstd-3", "zlib-1", "zlib-6")),
    ])
