"""The Litestar app: routes for the OpenAI wire API and the management API, errors in one place."""
from __future__ import annotations

import asyncio
import os
import time
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig

from .. import __version__
from ..errors import ModeluxError, NotFound
from ..export import live as live_otlp
from ..runtime import Runtime
from . import control, management, messages, replay_routes, responses
from .errors import JSON, error_response, on_http_exception, on_unexpected
from .fast import FastRoutes, check_token
from .gateway import Gateway
from .limits import read_body


def _json(obj: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(obj), status_code=status, media_type=JSON)


def on_modelux_error(request: Request, e: ModeluxError) -> Response:
    if request.url.path.startswith("/v1/messages"):  # Anthropic clients get Anthropic's error shape
        return messages.error_response(e)
    return error_response(e)


def asgi_app(rt: Runtime) -> FastRoutes:
    """What the server serves: the hot routes (proxy/fast.py) in front of the Litestar app."""
    app = create_app(rt)
    return FastRoutes(app, app.state.gateway, rt, os.environ.get("MODELUX_TOKEN") or None)


def create_app(rt: Runtime, *, manage_lifecycle: bool = True, openapi: bool = False) -> Litestar:
    """`openapi`: build the OpenAPI schema (served at /schema/openapi.json); off when serving,
    used by the schema tests."""
    gw = Gateway(rt)
    token = os.environ.get("MODELUX_TOKEN") or None
    otlp = live_otlp.install(rt)  # [export.otlp]: the live exporter, an addon (export/live.py)

    @post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        reply = await gw.chat(await read_body(request, rt.configs.server.limits), request.headers,
                              receive=request.receive)
        return reply.response()

    @post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        reply = await gw.embeddings(await read_body(request, rt.configs.server.limits), request.headers,
                                    receive=request.receive)
        return reply.response()

    @get("/v1/models")
    async def models() -> Response:
        snap = rt.snapshot
        now = int(time.time())
        seen: dict[str, str] = {a: "modelux-alias" for a in snap.router.aliases()}
        for rc, _ in snap.router.configs.values():
            for alias in rc.aliases.values():
                for t in alias.targets:
                    seen.setdefault(f"{t.provider}/{t.model}", t.provider)
        return _json({"object": "list", "data": [{"id": k, "object": "model", "created": now, "owned_by": v}
                                                 for k, v in seen.items()]})

    @get("/healthz")
    async def healthz() -> Response:
        st = rt.writer.status()
        out = {"status": st["state"], "version": __version__, "config": rt.snapshot.configs.source,
               "queue": st["queued"], "write_failures": st["write_failures"], "storage": st}
        if st["reason"]:
            out["reason"] = f"storage: {st['reason']}"
        if otlp is not None:  # live OTLP export: lag and last error
            out["otlp"] = otlp.status()
        return _json(out)

    async def read_after_writes(read, key: str, what: str) -> Response:
        """Waits for the calls queued so far to be written (read-your-writes), then reads off the loop."""
        await rt.writer.barrier()
        found = await asyncio.to_thread(read, key)
        if found is None:
            raise NotFound(f"no {what} {key!r}")
        return _json(found)

    @get("/mlx/v1/runs/{run_id:path}")  # a path parameter: run ids may contain `/`
    async def get_run(run_id: str) -> Response:
        min_history = rt.configs.server.anomalies.cost_min_history  # `expected` judges as the cost check does
        return await read_after_writes(lambda k: rt.reader.get_run(k, min_history=min_history), run_id.removeprefix("/"), "run")

    @get("/mlx/v1/calls/{call_id:str}")
    async def get_call(call_id: str) -> Response:
        return await read_after_writes(rt.reader.get_call, call_id, "call")

    @get("/mlx/v1/config")
    async def config_status() -> Response:
        cs = rt.snapshot.configs
        return _json({"source": cs.source, "default": cs.default_name, "versions": cs.versions,
                      "reload": rt.reload_status.as_dict(),
                      "aliases": {n: sorted(rc.aliases) for n, rc in cs.routing.items()}})

    def before_request(request: Request) -> None:
        if token is not None and request.url.path != "/healthz":
            check_token(request.headers, token)

    @asynccontextmanager
    async def lifespan(_app: Litestar):
        if manage_lifecycle:
            await rt.start()
        try:
            yield
        finally:
            if manage_lifecycle:
                await rt.stop()

    from ..analytics import attach

    attach(rt)
    extra = [h for m in (management, control, replay_routes, messages, responses) for h in m.routes(rt, gw)]
    app = Litestar(
        route_handlers=[chat_completions, embeddings, models, healthz, get_run, get_call, config_status, *extra],
        exception_handlers={ModeluxError: on_modelux_error, HTTPException: on_http_exception, Exception: on_unexpected},
        before_request=before_request if token else None,
        lifespan=[lifespan],
        request_max_body_size=None,  # read_body enforces [limits] max_body_mb while reading, and follows reloads
        openapi_config=OpenAPIConfig(title="modelux-local", version=__version__) if openapi else None,
        logging_config=None,
        debug=False,
    )
    app.state.gateway = gw
    app.state.runtime = rt
    return app
