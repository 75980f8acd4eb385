"""The semantic search indexer's calls: the `@embedder` alias through the same dispatcher as any call.

The background job (`job`, started by the search addon in proxy/management.py) catches the FTS
index up, then embeds calls in batches: it reads pending text with storage/embed_job.py's
queries, asks `@embedder` through a `Dispatcher` whose sink is the writer (so what indexing
costs is recorded like any other spend: no run, tag modelux=semantic-index), and hands the
vectors to the writer. Search queries embed through the same class with a sink that drops the
record (a query is not a call worth keeping).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec

from ..core.records import CallRecord
from ..core.usage import usage_from_openai
from ..errors import AllTargetsFailed
from ..storage.embed_job import BATCH, catch_up_slices, embedding_text, high_water, pending, store_vectors
from .context import Sink, Snapshot
from .dispatch import Dispatcher
from .hooks import Hooks

log = logging.getLogger("modelux.search")

EMBEDDER_ALIAS = "@embedder"
INTERNAL_TAGS = {"modelux": "semantic-index"}
IDLE_S = 1.0               # poll interval once caught up
RETRY_S = 30.0             # after the embedder failed or is not configured


async def _drop(_: CallRecord) -> None:
    return None


NOT_RECORDED = Sink(_drop, lambda _: None)


class Embedder:
    """The `@embedder` alias as a callable: texts -> (model label, vectors), for any snapshot."""

    def __init__(self, snapshot: Snapshot, sink: Sink = NOT_RECORDED):
        self.snapshot = snapshot
        self.dispatcher = Dispatcher(Hooks(), sink)  # internal calls: no run, so no budget hooks

    async def embed(self, texts: list[str]) -> tuple[str, list[list[float]]]:
        snap = self.snapshot
        plan = snap.router.resolve(EMBEDDER_ALIAS, {})  # ModelNotFound when the config has no @embedder
        # stored as summaries: the texts are already stored with their calls, and a summary has no
        # text for the index to pick up (so these calls are never embedded in turn)
        summary = msgspec.json.encode({"model": EMBEDDER_ALIAS, "input_count": len(texts),
                                       "purpose": "semantic search index"})
        out = await self.dispatcher.embeddings(snap, {"model": EMBEDDER_ALIAS, "input": texts}, summary,
                                               dict(INTERNAL_TAGS), plan=plan, stamp=_summarise(len(texts)))
        if out.error is not None:
            raise AllTargetsFailed(f"{EMBEDDER_ALIAS} failed: {out.error.message}")
        data = msgspec.json.decode(out.result.body).get("data") or []
        vectors = [d["embedding"] for d in sorted(data, key=lambda d: d.get("index", 0))]
        if len(vectors) != len(texts):
            raise AllTargetsFailed(f"{EMBEDDER_ALIAS} failed: {out.target.label}: {len(vectors)} vectors for "
                                   f"{len(texts)} inputs")
        return out.target.label, vectors


def _summarise(n_texts: int):
    def stamp(rec: CallRecord) -> None:
        if rec.status != "ok":
            return
        raw = rec.raw_usage if isinstance(rec.raw_usage, dict) else None
        if raw is None:
            try:
                raw = msgspec.json.decode(rec.response or b"{}").get("usage")
            except (msgspec.DecodeError, AttributeError):
                raw = None
        rec.usage = rec.usage or usage_from_openai(raw)
        rec.raw_usage = raw
        rec.response = msgspec.json.encode({"object": "list", "data_count": n_texts, "usage": raw})
    return stamp


async def embed_once(rt: Any) -> int:
    """Embeds the next batch of calls; returns how many calls it consumed (0: caught up)."""
    conn = rt.reader.conn
    after = await asyncio.to_thread(lambda: high_water(conn()))
    rows = await asyncio.to_thread(lambda: pending(conn(), after, BATCH))
    if not rows:
        return 0
    work = [(r[0], r[3], r[4], embedding_text(r[1], r[2])) for r in rows]
    work = [w for w in work if w[3]]
    model, vectors = "", []
    if work:
        sink = Sink(rt.writer.submit, rt.writer.submit_nowait)
        model, vectors = await Embedder(rt.snapshot, sink).embed([w[3] for w in work])
    upto = rows[-1][0]
    done = [(rowid, run_id, started) for rowid, run_id, started, _ in work]
    await rt.writer.run(lambda c: store_vectors(c, model, done, vectors, upto))
    return len(rows)


def job(rt: Any):
    """The coroutine factory of the search addon's background job."""

    async def run() -> None:
        await catch_up_slices(rt.writer)
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
