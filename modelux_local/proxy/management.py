"""Management API read routes under /mlx/v1: the runs list, analytics per tag, search.

Each route waits for the writer's barrier first (read-your-writes: a call the client has
seen answered is in the list), then reads on a worker thread with the Reader's
per-thread connection. The search index addon (FTS rows written by the writer 64 calls at a
time, flushed before a search; the embedding job in the background) is registered here
because this module is the search room's one entry point into the server.
"""
from __future__ import annotations

import asyncio

import msgspec
from litestar import Request, Response, get

from ..calls import Addon, embedder
from ..errors import BadRequest
from ..storage.analytics_queries import DEFAULT_LIMIT, analytics, list_runs, make_filter
from ..storage.search import PendingIndex, full_text, search_filter, semantic

JSON = "application/json"


def _json(obj) -> Response:
    return Response(msgspec.json.encode(obj), media_type=JSON)


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in ("1", "true", "yes", "on")


def _int(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, got {raw!r}", param=name) from None


def _run_filter(request: Request):
    q = request.query_params
    return make_filter(since=q.get("since"), tags=q.getall("tag", []), status=q.get("status") or None,
                       include_replays=_flag(request, "include_replays"), tag_sep=":")


class SearchIndex(Addon):
    """Indexes the calls for full-text search as they are written (PendingIndex: 64 at a time,
    and when the writer goes quiet); embeds them in the background."""

    def __init__(self, rt):
        self.rt = rt
        self.pending = PendingIndex()

    def after_batch(self, conn, records) -> None:
        self.pending.add(conn, records)

    def rollback(self, records) -> None:
        self.pending.rollback(records)

    def idle(self, conn) -> None:
        self.pending.idle(conn)

    async def flush(self) -> None:
        """Everything submitted so far is stored and searchable once this returns."""
        await self.rt.writer.run(self.pending.flush_job)

    def jobs(self):
        return [embedder.job(self.rt)]


def routes(rt, gateway) -> list:
    index = rt.hooks.of(SearchIndex)
    if index is None:  # routes() may be called for more than one app
        index = SearchIndex(rt)
        rt.hooks.add(index)

    @get("/mlx/v1/runs")
    async def runs_list(request: Request) -> Response:
        flt = _run_filter(request)
        sort = request.query_params.get("sort") or "started"
        limit = _int(request, "limit", DEFAULT_LIMIT)
        await rt.writer.barrier()
        min_history = rt.configs.server.anomalies.cost_min_history
        return _json({"runs": await asyncio.to_thread(list_runs, rt.reader, flt, sort, limit, min_history)})

    @get("/mlx/v1/analytics")
    async def analytics_view(request: Request) -> Response:
        group_by = request.query_params.get("group_by") or ""
        flt = _run_filter(request)
        await rt.writer.barrier()
        return _json(await asyncio.to_thread(analytics, rt.reader, group_by, flt, _flag(request, "by_model")))

    @get("/mlx/v1/search")
    async def search(request: Request) -> Response:
        q = request.query_params
        query = q.get("q") or ""
        if not query.strip():
            raise BadRequest("q (the search query) is required", param="q")
        flt = search_filter(q.get("run_id"), q.getall("tag", []), q.get("since"), ":")
        limit = _int(request, "limit", 20)
        if not 1 <= limit <= 1000:
            raise BadRequest("limit must be between 1 and 1000", param="limit")
        await index.flush()  # after what was submitted before it: read-your-writes, indexed
        if _flag(request, "semantic"):
            model, vectors = await embedder.Embedder(rt.snapshot).embed([query])
            results = await asyncio.to_thread(lambda: semantic(rt.reader.conn(), vectors[0], model, flt, query, limit))
            return _json({"query": query, "semantic": True, "model": model, "results": results})
        results = await asyncio.to_thread(lambda: full_text(rt.reader.conn(), query, flt, limit))
        return _json({"query": query, "semantic": False, "results": results})

    return [runs_list, analytics_view, search]
