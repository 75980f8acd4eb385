"""POST /v1/messages: the Anthropic Messages format in, routed through the same aliases.

To an `anthropic`-kind target the body is forwarded as received (pass-through,
providers/anthropic_passthrough.py, through the dispatcher's `forward` hook): nothing the client
sent is lost, prompt caching and extended thinking keep working, and the upstream's answer or
SSE events come back unchanged. To any other kind (first target or fallback) the body is
translated, as below, and the record's decision trace says what that translation dropped.

Otherwise the body is translated to an OpenAI chat body (providers/anthropic_in.py) and handed to
`Gateway.start_chat`, so guards, retries, fallback and records are the chat pipeline's own;
only the answer is rendered back in Anthropic's format (a message, or Anthropic SSE events).

What the record of a /v1/messages call holds: `endpoint` "messages", `request` the Anthropic
body as received (tags included, as for chat), `response` the OpenAI chat.completion the
provider's answer was translated from (assembled from the chunks for streams) — the same
shape as every other call's response, so search, the TUI and replay diffs read one format. A
passed-through answer is stored the same way (its chat.completion translation); the
Anthropic usage as reported (cache reads, 5m/1h cache writes) is in the trace's `raw_usage`,
and `decision.format` says per target whether it was passed through or translated.

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
from functools import partial
from typing import Any

import msgspec
from litestar import Request, Response, post

from ..core.tags import TagError, parse_tags, pop_body_tags
from ..errors import AllTargetsFailed, BadRequest, ModelNotFound, ModeluxError, UpstreamError
from ..providers import anthropic_passthrough as passthrough
from ..providers.anthropic_in import (
    ERROR_TYPE,
    OpenAIChunksToAnthropicEvents,
    anthropic_request_to_openai,
    openai_error_to_anthropic,
    openai_response_to_anthropic,
)
from ..providers.anthropic_in import _tags as tags_in_metadata
from .errors import JSON
from .gateway import ChatOutcome, ClientGone, Gateway, StreamFormat, until_disconnect
from .limits import read_body
from .reply import Reply

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def anthropic_error_type(status: int) -> str:
    return ERROR_TYPE.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


def error_reply(e: ModeluxError, headers: dict[str, str] | None = None, attempts: list[dict] | None = None) -> Reply:
    """A ModeluxError as Anthropic's error body; an upstream's own message is kept."""
    if isinstance(e, UpstreamError) and e.body is not None and e.category is None:
        body = openai_error_to_anthropic(e.status, e.body)  # a passed-through 4xx: its message, its status
    else:
        body = {"type": "error", "error": {"type": anthropic_error_type(e.status), "message": e.message}}
    if e.code:
        body["error"]["code"] = e.code
    if attempts and isinstance(e, AllTargetsFailed):
        body["error"]["attempts"] = attempts
    return Reply(e.status, headers or {}, _encode(body))


def error_response(e: ModeluxError, headers: dict[str, str] | None = None,
                   attempts: list[dict] | None = None) -> Response:
    return error_reply(e, headers, attempts).response()


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


def _prepare(gw: Gateway, raw: bytes, headers: Any) -> tuple[dict, dict[str, str], passthrough.Passthrough]:
    """The OpenAI chat body, the call's tags and its pass-through; BadRequest naming what cannot be
    translated when no anthropic provider could take the body as is."""
    body = gw.decode(raw)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required: an @alias, provider/model, or a model name", param="model")
    try:
        body_tags = pop_body_tags(body)
    except TagError as e:
        raise BadRequest(str(e), param="mlx:tags") from None
    tags = _tags(body_tags, tags_in_metadata(body.get("metadata")), headers)
    try:
        openai_body, _ = anthropic_request_to_openai(body)
        deferred = None
    except BadRequest as e:
        if not any(passthrough.is_anthropic(p) for p in gw.rt.snapshot.providers.values()):
            raise
        # an anthropic target may serve what we cannot translate (server tools, documents, container, ...)
        openai_body, deferred = {"model": model, "messages": [], "stream": bool(body.get("stream"))}, e
    return openai_body, tags, passthrough.Passthrough(body, headers, deferred)


class PassthroughSSE(StreamFormat):
    """An anthropic upstream's events, relayed as they came; the synthetic chat chunks dropped."""

    def payload(self, payload: bytes) -> bytes | None:
        ev = passthrough.raw_event(payload)
        return None if ev is None else b"event: " + ev[0] + b"\ndata: " + ev[1] + b"\n\n"

    def fail(self, status: int, message: str, type_: str, code: str | None) -> bytes:
        err = {"type": "error", "error": {"type": anthropic_error_type(status), "message": message}}
        return b"event: error\ndata: " + _encode(err) + b"\n\n"


def render(out: ChatOutcome, pt: passthrough.Passthrough | None = None) -> Reply:
    if out.error is not None:
        return error_reply(out.error, out.headers, out.attempts)
    model = out.target.model
    native = pt is not None and pt.native
    if out.result is not None:
        if native:
            return Reply(200, out.headers, pt.native_answer)
        answer = openai_response_to_anthropic(_decode(out.result.body), model)
        return Reply(200, out.headers, _encode(answer))
    fmt = PassthroughSSE() if native else AnthropicSSE(model)
    return Reply(200, {**_SSE_HEADERS, **out.headers}, stream=out.stream(fmt))


async def create_message(gw: Gateway, raw: bytes, headers: Any, receive: Any = None) -> Reply:
    """POST /v1/messages, served by proxy/fast.py (and by the Litestar route below for the schema)."""
    clock = (time.time(), time.perf_counter())
    try:
        openai_body, tags, pt = _prepare(gw, raw, headers)
        out = await until_disconnect(receive, gw.start_chat(openai_body, raw, tags, "messages", clock=clock,
                                                            forward=pt.forward, stamp=pt.stamp,
                                                            cache=headers.get("x-mlx-cache")))
    except ModeluxError as e:
        return error_reply(e)
    except ClientGone:
        return Reply(499, {})  # nobody reads it; the call is recorded as client_closed
    return render(out, pt)


def estimate_input_tokens(body: dict[str, Any]) -> int:
    """About 4 characters a token over the text a model would read (system, messages, tools)."""
    chars = 0
    for key in ("system", "messages", "tools"):
        if body.get(key):
            chars += len(_encode(body[key]))
    return max(1, math.ceil(chars / 4))


def routes(rt, gw: Gateway) -> list:
    gw.fast_routes["/v1/messages"] = (partial(create_message, gw), error_reply)

    @post("/v1/messages", status_code=200)
    async def messages(request: Request) -> Response:
        raw = await read_body(request, gw.rt.configs.server.limits)
        return (await create_message(gw, raw, request.headers, request.receive)).response()

    @post("/v1/messages/count_tokens", status_code=200)
    async def count_tokens(request: Request) -> Response:
        """The provider's own count when the model routes to an anthropic target (exact); otherwise an
        estimate, marked `x-mlx-token-count: estimate` (and why, in `x-mlx-estimate-reason`)."""
        try:
            body = gw.decode(await read_body(request, gw.rt.configs.server.limits))
            if not isinstance(body.get("messages"), list):
                raise BadRequest("messages: a list of messages is required", param="messages")
            body.pop("mlx:tags", None)
            tags = _tags(None, tags_in_metadata(body.get("metadata")), request.headers)
            exact = await _count_upstream(gw, body, tags, request.headers)
        except ModeluxError as e:
            return error_response(e)
        if isinstance(exact, bytes):
            return Response(exact, status_code=200, media_type=JSON, headers={"x-mlx-token-count": "exact"})
        return Response(_encode({"input_tokens": estimate_input_tokens(body)}), status_code=200, media_type=JSON,
                        headers={"x-mlx-token-count": "estimate", "x-mlx-estimate-reason": exact})

    return [messages, count_tokens]


async def _count_upstream(gw: Gateway, body: dict[str, Any], tags: dict[str, str], headers: Any) -> bytes | str:
    """The first anthropic target's count (its answer as is), or why there is none (a str).
    A 4xx from the provider is the client's error and is raised; a failed provider is skipped."""
    snap = gw.rt.snapshot
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return "no model"
    try:
        plan = snap.router.resolve(model, tags)
    except ModelNotFound:
        return "model not routed"
    client = {k: headers.get(k) for k in passthrough.CLIENT_HEADERS if headers.get(k)}
    why = "no anthropic target"
    for target in plan.targets:
        provider = snap.providers[target.provider]
        if not passthrough.is_anthropic(provider):
            continue
        data = _encode({**passthrough.untagged(body), "model": target.model})
        try:
            return await passthrough.count_tokens(provider, data, passthrough.headers_for(provider, client),
                                                  target.timeout_s)
        except UpstreamError as e:
            if e.category is None:
                raise
            why = f"{target.label} failed: {e.message}"
    return why
