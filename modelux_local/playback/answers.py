"""A recorded answer served in the shape the request asks for, as the providers' own outcome objects.

A non-streamed request gets a `ChatResult` (the recorded body, or the recorded stream assembled);
a streamed one a `ChatStream` of OpenAI chunk payloads (the recorded chunks, or chunks cut from the
recorded body), so the gateway's relay and record code treat it exactly like an upstream's. The
final usage chunk is always there, as providers always emit it; the relay hides it from clients
that did not ask for it.
"""
from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from ..providers.base import ChatResult, ChatStream
from ..storage.assemble import assemble_stream
from .format import Entry

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()
_WORDS = re.compile(r"\s*\S+|\s+$")


def as_result(entry: Entry) -> ChatResult:
    body = entry.response if entry.events is None else _enc.encode(assemble_stream(entry.events))
    return ChatResult(200, body or b"{}")


def as_stream(entry: Entry) -> ChatStream:
    events = entry.events if entry.events is not None else chunks_of(_dec.decode(entry.response or b"{}"))
    return ChatStream(_replay(events))


async def _replay(events: list[bytes]) -> AsyncIterator[bytes]:
    for e in events:
        yield e


def chunks_of(body: dict[str, Any]) -> list[bytes]:
    """A chat.completion as the chunk payloads a provider would have streamed (a word a chunk)."""
    head = {"id": body.get("id", ""), "object": "chat.completion.chunk", "created": body.get("created", 0),
            "model": body.get("model", "")}
    if body.get("system_fingerprint"):
        head["system_fingerprint"] = body["system_fingerprint"]

    def chunk(index: int, delta: dict, finish: str | None = None) -> bytes:
        return _enc.encode({**head, "choices": [{"index": index, "delta": delta, "finish_reason": finish}]})

    out: list[bytes] = []
    for c in body.get("choices") or []:
        i, msg = c.get("index", 0), c.get("message") or {}
        calls = msg.get("tool_calls") or []
        out.append(chunk(i, {"role": msg.get("role", "assistant"), "content": None if calls and not msg.get("content")
                             else ""}))
        out += [chunk(i, {"content": w}) for w in _WORDS.findall(msg.get("content") or "")]
        for j, tc in enumerate(calls):
            fn = tc.get("function") or {}
            out.append(chunk(i, {"tool_calls": [{"index": j, "id": tc.get("id"), "type": tc.get("type", "function"),
                                                 "function": {"name": fn.get("name", ""), "arguments": ""}}]}))
            if fn.get("arguments"):
                out.append(chunk(i, {"tool_calls": [{"index": j, "function": {"arguments": fn["arguments"]}}]}))
        out.append(chunk(i, {}, c.get("finish_reason") or "stop"))
    if body.get("usage"):
        out.append(_enc.encode({**head, "choices": [], "usage": body["usage"]}))
    return out
