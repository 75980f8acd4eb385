"""/v1/messages to an `anthropic`-kind target: the client's Messages body forwarded as received.

Only `model` changes (the target's) and the gateway's tags are gone; every other field and block
(cache_control, thinking blocks with their signatures, server tools, documents, citations,
context_management, container) reaches Anthropic untouched, with the client's `anthropic-beta`
and `anthropic-version` headers. The answer goes back as it came: the message's bytes, or each
SSE event (name and data) unchanged, as it arrives.

So that records, prices and budget guards read one format (every record's `response` is a
chat.completion), the call's result holds the chat.completion translation of the message, and
a stream yields, after each upstream event (prefixed `RAW`, which no JSON reader accepts: the
writer and the budget guard skip it), the OpenAI chunks it translates to, which the budget
guard counts and the writer assembles; the /v1/messages pass-through format relays only the
RAW events, without the prefix.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ..errors import ModeluxError, UpstreamError
from . import anthropic_out as tr
from ._http import NETWORK_ERRORS
from ._openai_shapes import decode_json, encode_json
from ._sse import iter_sse, prefetch, stream_closer
from .anthropic import AnthropicProvider
from .base import ChatResult, ChatStream

RAW = b"\x00anthropic-event\x00"  # then the event name, a newline, and the data as it came
CLIENT_HEADERS = ("anthropic-beta", "anthropic-version")


def is_anthropic(provider: Any) -> bool:
    return isinstance(provider, AnthropicProvider)


def headers_for(provider: AnthropicProvider, client: dict[str, str], stream: bool = False) -> dict[str, str]:
    """The provider's own headers (its key, never the client's) plus the client's version and betas;
    betas the config sets too are kept, the client's added to them."""
    h = provider._headers()
    if client.get("anthropic-version"):
        h["anthropic-version"] = client["anthropic-version"]
    if client.get("anthropic-beta"):
        mine = [b.strip() for b in h.get("anthropic-beta", "").split(",") if b.strip()]
        theirs = [b.strip() for b in client["anthropic-beta"].split(",") if b.strip() and b.strip() not in mine]
        h["anthropic-beta"] = ",".join(mine + theirs)
    if stream:
        h["accept"] = "text/event-stream"
    return h


async def create_message(provider: AnthropicProvider, body: bytes, headers: dict[str, str], model: str,
                 timeout_s: float) -> tuple[ChatResult, bytes]:
    """The call's result (its body the chat.completion the record keeps) and the upstream's message bytes."""
    raw = await provider.complete(provider.url, body, headers, timeout_s)
    answer = decode_json(raw)
    if not isinstance(answer, dict):
        raise UpstreamError(f"{provider.name}: upstream answered with invalid JSON", status=502, category="5xx")
    chat, usage = tr.response_to_openai(answer, model)
    return ChatResult(200, encode_json(chat), usage=usage, raw_usage=answer.get("usage")), raw


async def stream_message(provider: AnthropicProvider, body: bytes, headers: dict[str, str], model: str,
                 timeout_s: float) -> ChatStream:
    resp = await provider.open_stream(provider.url, body, headers, timeout_s)
    translator = tr.StreamTranslator(model, provider.name)
    chunks = _events(provider, resp, translator)
    # up to the first event before answering: an error event at the start can still fall back
    events = await prefetch(chunks)
    return ChatStream(events=events, raw_usage=translator.raw_usage, close=stream_closer(resp, chunks))


async def _events(provider: AnthropicProvider, resp, translator: tr.StreamTranslator) -> AsyncIterator[bytes]:
    try:
        async for ev in iter_sse(resp.content):
            chunks = translator.feed_sse(ev.event, ev.data)  # an `error` event raises: the proxy answers it
            yield RAW + (ev.event or "message").encode() + b"\n" + ev.data.encode()
            for chunk in chunks:
                yield chunk
        for chunk in translator.finish_chunks():  # raises when the stream ended before message_stop
            yield chunk
    except NETWORK_ERRORS as exc:
        raise provider.transport_error(exc) from exc
    finally:
        resp.close()


def raw_event(payload: bytes) -> tuple[bytes, bytes] | None:
    """(event name, data) of a relayed upstream event; None for the synthetic chat chunks."""
    if not payload.startswith(RAW):
        return None
    name, _, data = payload[len(RAW):].partition(b"\n")
    return name, data


async def count_tokens(provider: AnthropicProvider, body: bytes, headers: dict[str, str], timeout_s: float) -> bytes:
    """The provider's own count (POST /v1/messages/count_tokens), its answer as it came."""
    return await provider.complete(provider.url + "/count_tokens", body, headers, timeout_s)


def _blocks(body: dict[str, Any]) -> list[dict[str, Any]]:
    out = [b for b in body.get("system") or [] if isinstance(b, dict)] if not isinstance(body.get("system"), str) else []
    out += [t for t in body.get("tools") or [] if isinstance(t, dict)]
    for m in body.get("messages") or []:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):
            out += [b for b in content if isinstance(b, dict)]
    return out


def translation_drops(body: dict[str, Any]) -> list[str]:
    """What the OpenAI translation of an Anthropic body loses (anthropic_in.py drops these silently)."""
    blocks = _blocks(body)
    dropped = []
    markers = sum(1 for b in blocks if "cache_control" in b) + int("cache_control" in body)
    if markers:
        dropped.append(f"cache_control ({markers} marker{'s' if markers > 1 else ''})")
    thinking = sum(1 for b in blocks if b.get("type") in ("thinking", "redacted_thinking"))
    if thinking:
        dropped.append(f"thinking blocks ({thinking}, with their signatures)")
    cited = sum(1 for b in blocks if b.get("citations"))
    if cited:
        dropped.append("citations")
    for key in ("service_tier",):
        if key in body:
            dropped.append(key)
    return dropped


# ---------------------------------------------------------------- one /v1/messages call (proxy and replay)

class Passthrough:
    """One /v1/messages call: its body as received (tags out) for anthropic targets, its OpenAI
    translation for the others, and per attempted target which of the two it got."""

    def __init__(self, body: dict[str, Any], headers: Any, deferred: ModeluxError | None):
        self.body = untagged(body)
        self.headers = {k: headers.get(k) for k in CLIENT_HEADERS if headers.get(k)}
        self.deferred = deferred  # why the body cannot be translated (only anthropic targets can serve it)
        self.native = False       # set per attempt: the last one is the one that answered
        self.native_answer = b""  # an anthropic upstream's message, as it came
        self.modes: list[dict[str, Any]] = []

    def forward(self, provider: Any, target: Any, stream: bool) -> Any:
        """Dispatcher.start_chat's `forward` hook: anthropic targets get the body itself."""
        self.native = is_anthropic(provider)
        if self.native:
            self._note(target, {"mode": "pass-through"})
            body = encode_json({**self.body, "model": target.model})
            headers = headers_for(provider, self.headers, stream)
            if stream:
                return stream_message(provider, body, headers, target.model, target.timeout_s)
            return self._create(provider, body, headers, target)
        if self.deferred is not None:
            self._note(target, {"mode": "refused", "reason": self.deferred.message})
            return _refuse(self.deferred)
        dropped = translation_drops(self.body) + (["header anthropic-beta"] if "anthropic-beta" in self.headers else [])
        note: dict[str, Any] = {"mode": "translated"}
        if dropped:
            how = "fallback" if self.modes else "routed"
            note["dropped"] = dropped
            note["note"] = f"{', '.join(dropped)} dropped: {how} to {provider.name} ({provider.kind})"
        self._note(target, note)
        return None

    def _note(self, target: Any, note: dict[str, Any]) -> None:
        if not any(m["target"] == target.label for m in self.modes):  # retries of a target: one line
            self.modes.append({"target": target.label, **note})

    async def _create(self, provider: Any, body: bytes, headers: dict[str, str], target: Any) -> Any:
        result, self.native_answer = await create_message(provider, body, headers, target.model, target.timeout_s)
        return result

    def stamp(self, rec: Any) -> None:
        if self.modes:
            rec.decision["format"] = {"in": "anthropic", "targets": self.modes, **({"headers": self.headers}
                                                                                 if self.headers else {})}


def untagged(body: dict[str, Any]) -> dict[str, Any]:
    """The body without the gateway's tags: `mlx:tags` (popped already) and metadata's tag values."""
    meta = body.get("metadata")
    if not isinstance(meta, dict):
        return body
    kept = {k: v for k, v in meta.items() if k == "user_id" or (k != "mlx:tags" and not isinstance(v, str))}
    out = {k: v for k, v in body.items() if k != "metadata"}
    if kept:
        out["metadata"] = kept
    return out


async def _refuse(e: ModeluxError) -> None:
    """A translated target for a body only an anthropic one can serve: a client error, not retried."""
    raise UpstreamError(e.message, status=e.status, category=None)
