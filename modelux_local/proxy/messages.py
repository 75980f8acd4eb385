"""POST /v1/messages: the Anthropic Messages format in, routed through the same aliases.

The body is translated to an OpenAI chat body (providers/anthropic_in.py) and handed to
`Gateway.start_chat`, so guards, retries, fallback and records are the chat pipeline's own;
only the answer is rendered back in Anthropic's format (a message, or Anthropic SSE events).

What the record of a /v1/messages call holds: `endpoint` "messages", `request` the Anthropic
body as received (tags included, as for chat), `response` the OpenAI chat.completion the
provider's answer was translated from (assembled from the chunks for streams) — the same
shape as every other call's response, so search, the TUI and replay diffs read one format.

Tags, merged (later wins): the `x-mlx-tags` / `x-mlx-run-id` headers, then `metadata`
(string values other than `user_id`, and `metadata["mlx:tags"]`), then the body's `mlx:tags`
(what the anthropic SDK sends with `extra_body={"mlx:tags": ...}`). None are forwarded;
`metadata.user_id` is forwarded as the OpenAI `user` (Anthropic's metadata.user_id).

Errors answer in Anthropic's shape `{"type": "error", "error": {"type", "message"}}`, with
the status the chat endpoint would use; `error.code` (e.g. "run_budget_exceeded",
"model_not_found") and, for a 502, `error.attempts` are extra keys the SDK ignores.
"""
from __future__ import annotations

import math
import time
from typing import Any

import msgspec
from litestar import Request, Response, post
from litestar.response import Stream

from ..core.tags import TagError, parse_tags, pop_body_tags
from ..errors import AllTargetsFailed, BadRequest, ModeluxError, UpstreamError
from ..providers.anthropic_in import (ERROR_TYPE, OpenAIChunksToAnthropicEvents, anthropic_request_to_openai,
                                      openai_error_to_anthropic, openai_response_to_anthropic)
from .errors import JSON
from .gateway import ChatOutcome, ClientGone, Gateway, StreamFormat, until_disconnect
from .limits import read_body

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def anthropic_error_type(status: int) -> str:
    return ERROR_TYPE.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


def error_response(e: ModeluxError, headers: dict[str, str] | None = None,
                   attempts: list[dict] | None = None) -> Response:
    """A ModeluxError as Anthropic's error body; an upstream's own message is kept."""
    if isinstance(e, UpstreamError) and e.body is not None and e.category is None:
        body = openai_error_to_anthropic(e.status, e.body)  # a passed-through 4xx: its message, its status
    else:
        body = {"type": "error", "error": {"type": anthropic_error_type(e.status), "message": e.message}}
    if e.code:
        body["error"]["code"] = e.code
    if attempts and isinstance(e, AllTargetsFailed):
        body["error"]["attempts"] = attempts
    return Response(_encode(body), status_code=e.status, media_type=JSON, headers=headers)


class AnthropicSSE(StreamFormat):
    """OpenAI chunk payloads -> Anthropic SSE events (message_start ... message_stop)."""

    def __init__(self, model: str):
        self.events = OpenAIChunksToAnthropicEvents(model)

    def payload(self, payload: bytes) -> bytes | None:
        try:
            chunk = _decode(payload)
        except msgspec.DecodeError:
            return None
        return b"".join(self.events.feed(chunk)) if isinstance(chunk, dict) else None

    def fail(self, status: int, message: str, type_: str, code: str | None) -> bytes:
        return self.events.error(status, {"error": {"message": message}})

    def end(self, ok: bool) -> bytes:
        return b"".join(self.events.finish()) if ok else b""  # after an error event, nothing follows


def _tags(body_tags: Any, metadata_tags: dict[str, str], headers: Any) -> dict[str, str]:
    merged = body_tags
    if metadata_tags and (body_tags is None or isinstance(body_tags, dict)):
        merged = {**metadata_tags, **(body_tags or {})}
    try:
        return parse_tags(merged, headers.get("x-mlx-tags"), headers.get("x-mlx-run-id"))
    except TagError as e:
        raise BadRequest(str(e), param="mlx:tags") from None


def _translate(gw: Gateway, raw: bytes, headers: Any) -> tuple[dict, dict[str, str]]:
    """The OpenAI chat body and the call's tags, or BadRequest naming what cannot be translated."""
    body = gw.decode(raw)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required: an @alias, provider/model, or a model name", param="model")
    try:
        body_tags = pop_body_tags(body)
    except TagError as e:
        raise BadRequest(str(e), param="mlx:tags") from None
    openai_body, metadata_tags = anthropic_request_to_openai(body)
    return openai_body, _tags(body_tags, metadata_tags, headers)


def render(out: ChatOutcome) -> Response:
    if out.error is not None:
        return error_response(out.error, out.headers, out.attempts)
    model = out.target.model
    if out.result is not None:
        answer = openai_response_to_anthropic(_decode(out.result.body), model)
        return Response(_encode(answer), status_code=200, media_type=JSON, headers=out.headers)
    return Stream(out.stream(AnthropicSSE(model)), status_code=200, media_type="text/event-stream",
                  headers={**_SSE_HEADERS, **out.headers})


def estimate_input_tokens(body: dict[str, Any]) -> int:
    """About 4 characters a token over the text a model would read (system, messages, tools)."""
    chars = 0
    for key in ("system", "messages", "tools"):
        if body.get(key):
            chars += len(_encode(body[key]))
    return max(1, math.ceil(chars / 4))


def routes(rt, gw: Gateway) -> list:
    @post("/v1/messages", status_code=200)
    async def messages(request: Request) -> Response:
        clock = (time.time(), time.perf_counter())
        raw = await read_body(request, gw.rt.configs.server.limits)
        try:
            openai_body, tags = _translate(gw, raw, request.headers)
            out = await until_disconnect(request.receive, gw.start_chat(openai_body, raw, tags, "messages",
                                                                        clock=clock,
                                                                        cache=request.headers.get("x-mlx-cache")))
        except ModeluxError as e:
            return error_response(e)
        except ClientGone:
            return Response(b"", status_code=499)  # nobody reads it; the call is recorded as client_closed
        return render(out)

    @post("/v1/messages/count_tokens", status_code=200)
    async def count_tokens(request: Request) -> Response:
        """An estimate (no provider is called): enough to size a prompt against a context window."""
        try:
            body = gw.decode(await read_body(request, gw.rt.configs.server.limits))
            if not isinstance(body.get("messages"), list):
                raise BadRequest("messages: a list of messages is required", param="messages")
        except ModeluxError as e:
            return error_response(e)
        return Response(_encode({"input_tokens": estimate_input_tokens(body)}), status_code=200, media_type=JSON)

    return [messages, count_tokens]
