"""`responses = "native"` on an openai-kind provider: /v1/responses forwarded to the upstream's own.

The upstream's Response (or its SSE events) goes back to the client as is. So that records,
prices and budget guards read one format, the call's result holds the chat.completion the
Response stands for, and a native stream also yields, after each text or
tool-argument delta event, the equivalent OpenAI chat chunk (payloads that start with
`SYNTHETIC`); the proxy's native stream format drops those, the writer assembles them into
the record's chat.completion like any stream's. Usage is priced from the Responses usage shape.
"""
from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from ..core.usage import usage_from_openai
from ..errors import UpstreamError
from ._http import NETWORK_ERRORS
from ._sse import iter_sse
from .base import ChatResult, ChatStream
from .openai import OpenAIProvider
from .responses_out import output_to_chat_message, response_to_chat, usage_to_chat

SYNTHETIC = b'{"object":"chat.completion.chunk"'
_TERMINAL = {"response.completed", "response.incomplete", "response.failed"}


def is_native(provider: Any) -> bool:
    return isinstance(provider, OpenAIProvider) and provider.cfg.responses == "native"


def _chunk(delta: dict[str, Any] | None = None, finish: str | None = None, usage: dict | None = None) -> bytes:
    body: dict[str, Any] = {"object": "chat.completion.chunk",
                            "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage is not None:
        body["usage"] = usage
    return msgspec.json.encode(body)


async def create(provider: OpenAIProvider, body: dict[str, Any], timeout_s: float) -> tuple[ChatResult, bytes]:
    """The call's result (its body the chat.completion the record keeps) and the upstream's Response bytes."""
    raw = await provider.complete(provider.base_url + "/responses", msgspec.json.encode(body), provider._headers(),
                                  timeout_s)
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise UpstreamError(f"{provider.name}: upstream answered with invalid JSON", status=502, category="5xx")
    usage = answer.get("usage")
    result = ChatResult(200, msgspec.json.encode(response_to_chat(answer)),
                        usage=usage_from_openai(usage_to_chat(usage)), raw_usage=usage)
    return result, raw


async def stream(provider: OpenAIProvider, body: dict[str, Any], timeout_s: float) -> ChatStream:
    resp = await provider.open_stream(provider.base_url + "/responses", msgspec.json.encode(body),
                                      provider._headers(), timeout_s)
    raw_usage: list[Any] = []
    return ChatStream(events=_events(provider, resp, raw_usage), raw_usage=raw_usage, close=resp.close)


async def _events(provider: OpenAIProvider, resp, raw_usage: list[Any]) -> AsyncIterator[bytes]:
    calls: dict[str, int] = {}  # function_call item id -> chat tool_calls index
    try:
        async for ev in iter_sse(resp.content):
            if ev.data == "[DONE]":
                break
            try:
                event = json.loads(ev.data)
            except ValueError:
                continue
            kind = event.get("type") if isinstance(event, dict) else None
            if kind == "error":  # the proxy answers it with its own error event
                raise UpstreamError(f"{provider.name}: stream error: {event.get('message')}", status=502,
                                    category="5xx")
            yield ev.data.encode()
            if kind == "response.output_text.delta":
                yield _chunk({"content": event.get("delta") or ""})
            elif kind == "response.output_item.added" and (event.get("item") or {}).get("type") == "function_call":
                item = event["item"]
                calls[item.get("id")] = len(calls)
                yield _chunk({"tool_calls": [{"index": calls[item.get("id")], "id": item.get("call_id"),
                                              "type": "function", "function": {"name": item.get("name"),
                                                                               "arguments": ""}}]})
            elif kind == "response.function_call_arguments.delta" and event.get("item_id") in calls:
                yield _chunk({"tool_calls": [{"index": calls[event["item_id"]],
                                              "function": {"arguments": event.get("delta") or ""}}]})
            elif kind in _TERMINAL:
                final = event.get("response") or {}
                usage = final.get("usage")
                if usage:
                    raw_usage.append(usage)
                msg = output_to_chat_message(final.get("output") or [])
                finish = "tool_calls" if msg and msg.get("tool_calls") else "stop"
                yield _chunk({}, finish)
                yield _chunk(None, usage=usage_to_chat(usage) or {})
    except NETWORK_ERRORS as exc:
        raise provider.transport_error(exc) from None
    finally:
        resp.close()
