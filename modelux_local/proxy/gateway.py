"""The OpenAI wire format of the hot path: parse the request, call the dispatcher, render JSON or SSE.

The call itself (resolve, hooks, retries and fallback, the record) is modelux_local/calls/;
its package docstring follows a chat completion from the route to the writer and back.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec

from ..calls import CallContext, ChatOutcome, Dispatcher, Forward, Sink, StreamFormat, new_call_id
from ..core.tags import TagError, parse_tags, pop_body_tags
from ..errors import AllTargetsFailed, BadRequest
from ..runtime import Runtime
from .errors import error_body
from .limits import decode_request
from .reply import Reply, error_reply

__all__ = ["CallContext", "ChatOutcome", "Gateway", "OpenAISSE", "Reply", "StreamFormat", "error_reply", "new_call_id",
           "until_disconnect"]

_decode = msgspec.json.Decoder().decode
_DONE = b"data: [DONE]\n\n"
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
T = TypeVar("T")


class ClientGone(Exception):
    """The client closed the connection while its call was on the way (recorded as client_closed)."""


async def until_disconnect(receive: Callable[[], Awaitable[dict]] | None, work: Awaitable[T]) -> T:
    """Awaits `work`, cancelling it if the client disconnects first (the body was read already, so
    the next ASGI message is the disconnect). The cancellation reaches the upstream request, and
    the dispatcher records the call as client_closed. Raises ClientGone then."""
    if receive is None:
        return await work
    task = asyncio.current_task()
    gone = False

    async def watch() -> None:
        nonlocal gone
        if (await receive())["type"] == "http.disconnect":
            gone = True
            task.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if gone and task.uncancel() == 0:
            raise ClientGone() from None
        raise
    finally:
        watcher.cancel()


class Gateway:
    def __init__(self, rt: Runtime):
        self.rt = rt
        self.dispatcher = Dispatcher(rt.hooks, Sink(rt.writer.submit, rt.writer.submit_nowait))
        # POST routes proxy/fast.py serves without Litestar: path -> (handler(raw, headers, receive=)
        # -> Reply, how that route renders a ModeluxError raised before its handler runs).
        # /v1/messages and /v1/responses add themselves when their routes are made.
        self.fast_routes: dict[str, tuple[Callable[..., Awaitable[Reply]], Callable[[Any], Reply]]] = {
            "/v1/chat/completions": (self.chat, error_reply), "/v1/embeddings": (self.embeddings, error_reply)}

    # -- request parsing -------------------------------------------------------------------

    def decode(self, raw: bytes) -> dict:
        """The body as a JSON object within [limits] (size, nesting, `n`); BadRequest / BodyTooLarge otherwise."""
        return decode_request(raw, self.rt.configs.server.limits)

    def _parse(self, raw: bytes, headers: Any) -> tuple[dict, dict[str, str]]:
        body = self.decode(raw)
        try:
            tags = parse_tags(pop_body_tags(body), headers.get("x-mlx-tags"), headers.get("x-mlx-run-id"))
        except TagError as e:
            raise BadRequest(str(e), param="mlx:tags") from None
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("'model' is required: an @alias, provider/model, or a model name", param="model")
        return body, tags

    # -- chat completions ------------------------------------------------------------------

    async def chat(self, raw: bytes, headers: Any, endpoint: str = "chat", receive: Any = None) -> Reply:
        clock = (time.time(), time.perf_counter())
        body, tags = self._parse(raw, headers)
        try:
            out = await until_disconnect(receive, self.start_chat(body, raw, tags, endpoint, clock=clock,
                                                                  cache=headers.get("x-mlx-cache")))
        except ClientGone:
            return Reply(499, {})  # nobody reads it; the call is recorded as client_closed
        if out.error is not None:
            if isinstance(out.error, AllTargetsFailed):
                e = out.error
                return Reply(502, out.headers, error_body(e.message, e.type, e.code, None, attempts=out.attempts))
            return error_reply(out.error, out.headers)
        if out.result is not None:
            return Reply(200, out.headers, out.result.body)
        return Reply(200, {**_SSE_HEADERS, **out.headers}, stream=out.stream(OpenAISSE(out.wants_usage)))

    async def start_chat(self, body: dict, raw: bytes, tags: dict[str, str], endpoint: str = "chat", *,
                         clock: tuple[float, float] | None = None, forward: Forward | None = None,
                         cache: str | None = None, stamp: Callable[[Any], None] | None = None) -> ChatOutcome:
        """Routes an OpenAI chat body (tags already removed) through the serving config; the seam
        every wire format uses (/v1/chat/completions, /v1/messages, /v1/responses). See Dispatcher.start_chat."""
        return await self.dispatcher.start_chat(self.rt.snapshot, body, raw, tags, endpoint, clock=clock,
                                                forward=forward, cache=cache, stamp=stamp)

    # -- embeddings ------------------------------------------------------------------------

    async def embeddings(self, raw: bytes, headers: Any, receive: Any = None) -> Reply:
        clock = (time.time(), time.perf_counter())
        body, tags = self._parse(raw, headers)
        try:
            out = await until_disconnect(receive, self.dispatcher.embeddings(
                self.rt.snapshot, body, raw, tags, clock=clock, cache=headers.get("x-mlx-cache")))
        except ClientGone:
            return Reply(499, {})
        if out.error is not None:
            return error_reply(out.error, out.headers)
        return Reply(200, out.headers, out.result.body)


class OpenAISSE(StreamFormat):
    def __init__(self, wants_usage: bool):
        self.wants_usage = wants_usage

    def payload(self, payload: bytes) -> bytes | None:
        if not self.wants_usage:
            if _is_usage_only(payload):
                return None
            if b',"usage":null' in payload:  # present only because we asked for usage
                payload = payload.replace(b',"usage":null', b"")
        return b"data: " + payload + b"\n\n"

    def frame(self, payloads: list[bytes]) -> bytes:
        """One read's payloads as one piece of SSE: joined, then cleaned in one pass."""
        if self.wants_usage:
            return b"data: " + b"\n\ndata: ".join(payloads) + b"\n\n"
        payloads = [p for p in payloads if not _is_usage_only(p)]
        if not payloads:
            return b""
        out = b"data: " + b"\n\ndata: ".join(payloads) + b"\n\n"
        # present only because we asked for usage (no match can span two events: none holds a newline)
        return out.replace(b',"usage":null', b"") if b',"usage":null' in out else out

    def fail(self, status: int, message: str, type_: str, code: str | None) -> bytes:
        return b"data: " + error_body(message, type_, code) + b"\n\n"

    def end(self, ok: bool) -> bytes:
        return _DONE


def _is_usage_only(payload: bytes) -> bool:
    """The extra final chunk we asked for: `"choices": []` with a usage object."""
    if b'"usage"' not in payload or b'"usage":null' in payload:
        return False
    try:
        d = _decode(payload)
    except msgspec.DecodeError:
        return False
    return isinstance(d, dict) and not d.get("choices") and bool(d.get("usage"))
