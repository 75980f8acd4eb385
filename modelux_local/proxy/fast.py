"""The hot routes as a bare ASGI app in front of Litestar.

The POST routes calls go through — /v1/chat/completions, /v1/embeddings, /v1/messages and
/v1/responses (Gateway.fast_routes) — are served here straight from the ASGI scope:
Litestar's per-request machinery (request and response objects, handler signature, header
encoding, a task group per streamed response) cost ~0.25 ms of CPU per call on one core, as
much as everything the gateway does for a call (scripts/bench, bench/thread_cpu.py). Every
other request, and these paths with another method, go to the Litestar app unchanged; the
Litestar routes for these paths stay for the OpenAPI schema and answer the same (both call
the same handlers and send the same Reply).

What Litestar did for these routes is done here: the bearer token (--allow-remote), the body
limit while reading, errors in the route's shape (Anthropic's on /v1/messages), a clean 500
for a bug of ours, and a client that disconnects mid-stream stops the stream (the call is
recorded as client_closed).
"""
from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import ModeluxError, Unauthorized
from ..runtime import Runtime
from .errors import error_body
from .gateway import ClientGone, Gateway, until_disconnect
from .limits import ClientLeft, body_limit, read_asgi_body
from .reply import JSON, SSE, Reply

log = logging.getLogger("modelux.proxy")
Handler = Callable[..., Awaitable[Reply]]
_JSON_TYPE = (b"content-type", JSON.encode())
_SSE_TYPE = (b"content-type", f"{SSE}; charset=utf-8".encode())


class FastRoutes:
    def __init__(self, app: Any, gw: Gateway, rt: Runtime, token: str | None):
        self.app, self.rt, self.token = app, rt, token
        self.routes = gw.fast_routes
        self.state = getattr(app, "state", None)  # what callers read off the Litestar app (gateway, runtime)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            route = self.routes.get(scope["path"])
            if route is not None:
                return await self._serve(*route, scope, receive, send)
        await self.app(scope, receive, send)

    async def _serve(self, handler: Handler, on_error: Callable[[ModeluxError], Reply], scope: dict,
                     receive: Callable, send: Callable) -> None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            if self.token is not None:
                check_token(headers, self.token)
            raw = await read_asgi_body(receive, headers.get("content-length"), body_limit(self.rt.configs.server.limits))
            reply = await handler(raw, headers, receive=receive)
        except ClientLeft:
            return
        except ModeluxError as e:  # before the handler: a token, a body limit (in the route's error shape)
            reply = on_error(e)
        except Exception as e:  # a bug of ours: a clean 500 in the OpenAI shape, as Litestar's handler gives
            log.exception("unexpected error")
            reply = Reply(500, {}, error_body(f"internal error: {type(e).__name__}", "server_error", "internal_error"))
        await send_reply(reply, send, receive)

def check_token(headers: Any, token: str) -> None:
    """--allow-remote: every request but /healthz carries MODELUX_TOKEN as its bearer token (or,
    as anthropic-style clients send it, its x-api-key)."""
    given = headers.get("authorization", "").removeprefix("Bearer ").strip() or headers.get("x-api-key", "")
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise Unauthorized("this server requires MODELUX_TOKEN as the bearer token (the client's api_key)")


async def send_reply(reply: Reply, send: Callable, receive: Callable) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()]
    if reply.stream is None:
        headers += (_JSON_TYPE, (b"content-length", str(len(reply.body)).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})
        return
    headers.append(_SSE_TYPE)
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    stream = reply.stream

    async def pump() -> None:
        async for chunk in stream:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

    try:
        await until_disconnect(receive, pump())  # a client gone mid-stream cancels the relay
    except ClientGone:
        return
    finally:
        await stream.aclose()
    await send({"type": "http.response.body", "body": b""})
