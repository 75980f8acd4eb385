"""The background search job: catches the FTS index up, then embeds calls for `--semantic`.

Runs as a task of the server (registered by proxy/management.routes), never on a request:
it reads pending text from calls_fts on its own connection, asks the `@embedder` alias
(resolved with the current config's router, sent with the provider's `embeddings(...)`),
and hands the vectors to the single writer. `search_state.embedded_upto` is its
high-water mark (calls_fts rowids), so a restart resumes where it stopped.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgspec

from ..core.records import CallRecord
from ..core.usage import usage_from_openai
from ..errors import AllTargetsFailed, ModeluxError, StorageUnavailable
from .search import catch_up, ensure_vector_table, pack

log = logging.getLogger("modelux.search")

EMBEDDER_ALIAS = "@embedder"
BATCH = 32
MAX_CHARS = 4_000          # of prompt + response per call: the gist, within any embedder's input limit
IDLE_S = 1.0               # poll interval once caught up
RETRY_S = 30.0             # after the embedder failed or is not configured


class Embedder:
    """The `@embedder` alias as a callable: texts -> (model label, vectors). Works with any router.

    `on_call(plan, target, result, n_texts, started, latency_ms)` hears of each successful upstream
    call, so the server can record what indexing costs (see `record_call`)."""

    def __init__(self, router: Any, providers: dict[str, Any], on_call: Any = None):
        self.router, self.providers, self.on_call = router, providers, on_call

    async def embed(self, texts: list[str]) -> tuple[str, list[list[float]]]:
        plan = self.router.resolve(EMBEDDER_ALIAS, {})  # ModelNotFound when the config has no @embedder
        errors = []
        for t in plan.targets:
            provider = self.providers.get(t.provider)
            if provider is None:
                continue
            started, t0 = time.time(), time.perf_counter()
            try:
                result = await provider.embeddings({"model": t.model, "input": texts}, t.model, t.timeout_s)
            except ModeluxError as e:
                errors.append(f"{t.label}: {e.message}")
                continue
            if self.on_call is not None:
                self.on_call(plan, t, result, len(texts), started, (time.perf_counter() - t0) * 1000)
            data = msgspec.json.decode(result.body).get("data") or []
            vectors = [d["embedding"] for d in sorted(data, key=lambda d: d.get("index", 0))]
            if len(vectors) != len(texts):
                errors.append(f"{t.label}: {len(vectors)} vectors for {len(texts)} inputs")
                continue
            return t.label, vectors
        raise AllTargetsFailed(f"{EMBEDDER_ALIAS} failed: " + ("; ".join(errors) or "no usable target"))


def embedding_text(prompt: str | None, response: str | None) -> str:
    return f"{prompt or ''}\n{response or ''}".strip()[:MAX_CHARS]


def _pending(conn, after: int, limit: int) -> list[tuple]:
    return conn.execute(
        "SELECT f.rowid, f.prompt, f.response, c.run_id, c.started_at FROM calls_fts AS f "
        "JOIN calls AS c ON c.rowid = f.rowid WHERE f.rowid > ? ORDER BY f.rowid LIMIT ?", (after, limit)).fetchall()


def _high_water(conn) -> int:
    row = conn.execute("SELECT value FROM search_state WHERE key = 'embedded_upto'").fetchone()
    return int(row[0]) if row else 0


def store_vectors(conn, model: str, rows: list[tuple], vectors: list[list[float]], upto: int) -> None:
    """On the writer thread: the vectors, and the new high-water mark, in one transaction."""
    if vectors:
        table = ensure_vector_table(conn, len(vectors[0]))
        conn.execute(f"DELETE FROM {table} WHERE rowid IN ({','.join('?' * len(rows))})", [r[0] for r in rows])
        conn.executemany(f"INSERT INTO {table}(rowid, embedding, model, run_id, started_at) VALUES (?, ?, ?, ?, ?)",
                         [(rowid, pack(v), model, run_id or "", started)
                          for (rowid, run_id, started), v in zip(rows, vectors)])
    conn.execute("INSERT OR REPLACE INTO search_state(key, value) VALUES ('embedded_upto', ?)", (upto,))


async def embed_once(rt) -> int:
    """Embeds the next batch of calls; returns how many calls it consumed (0: caught up)."""
    conn = rt.reader.conn
    after = await asyncio.to_thread(lambda: _high_water(conn()))
    pending = await asyncio.to_thread(lambda: _pending(conn(), after, BATCH))
    if not pending:
        return 0
    snap = rt.snapshot
    work = [(r[0], r[3], r[4], embedding_text(r[1], r[2])) for r in pending]
    work = [w for w in work if w[3]]
    model, vectors = "", []
    if work:
        embedder = Embedder(snap.router, snap.providers, on_call=lambda *a: rt.writer.submit_nowait(record_call(snap, *a)))
        model, vectors = await embedder.embed([w[3] for w in work])
    upto = pending[-1][0]
    rows = [(rowid, run_id, started) for rowid, run_id, started, _ in work]
    await rt.writer.run(lambda c: store_vectors(c, model, rows, vectors, upto))
    return len(pending)


INTERNAL_TAGS = {"modelux": "semantic-index"}


def record_call(snap: Any, plan: Any, target: Any, result: Any, n_texts: int, started: float,
                latency_ms: float) -> CallRecord:
    """The indexing job's own embeddings call as a recorded call (no run, tagged modelux=semantic-index),
    so what semantic search costs is in the database like any other spend. Request and response are
    stored as summaries: the texts are already stored with their calls, and a summary has no text
    for the index to pick up (so these calls are never embedded in turn)."""
    raw = result.raw_usage if isinstance(result.raw_usage, dict) else None
    if raw is None:
        try:
            raw = msgspec.json.decode(result.body).get("usage")
        except (msgspec.DecodeError, AttributeError):
            raw = None
    usage = result.usage or usage_from_openai(raw)
    summary = {"model": target.model, "input_count": n_texts, "purpose": "semantic search index"}
    return CallRecord(
        call_id=f"call_{time.time_ns():x}idx", run_id=None, tags=dict(INTERNAL_TAGS), endpoint="embeddings",
        started_at=started, alias=plan.alias, config=plan.config, config_version=plan.config_version,
        provider=target.provider, model=target.model, status="ok", http_status=200, usage=usage,
        latency_ms=latency_ms, ttft_ms=None, stream=False, attempts=[], decision={"served_by": target.label},
        error=None, request=msgspec.json.encode(summary),
        response=msgspec.json.encode({"object": "list", "data_count": n_texts, "usage": raw}),
        raw_usage=raw, price_book=snap.prices, plan=plan)


def job(rt):
    """The coroutine factory for rt.background."""

    async def run() -> None:
        # in slices, so a large backlog never holds the writer (and the calls queued behind it) for long
        while True:
            try:
                if not await rt.writer.run(lambda c: catch_up(c, max_rows=2_000)):
                    break
            except StorageUnavailable:  # a failing disk: the index catches up once it recovers
                await asyncio.sleep(RETRY_S)
        warned = False
        while True:
            try:
                n = await embed_once(rt)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - a broken embedder must not stop the server
                if not warned:
                    log.warning("semantic search: embedding paused (%s); retrying every %.0fs", e, RETRY_S)
                    warned = True
                await asyncio.sleep(RETRY_S)
                continue
            warned = False
            if n == 0:
                await asyncio.sleep(IDLE_S)

    return run
