"""The provider seam: every provider speaks OpenAI Chat Completions shapes to the proxy.

A provider gets an OpenAI-format body (tags stripped, `model` set to the target's model)
and returns OpenAI-format bytes. Translating providers (Anthropic, Gemini) convert both
ways inside; the openai kind forwards raw bytes. Failures raise `UpstreamError` with a
routing category, so retry and fallback decisions stay in routing/.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..core.usage import Usage
from ..errors import UpstreamError


@dataclass(slots=True)
class ChatRequest:
    body: dict[str, Any]      # OpenAI chat body; `model` already the upstream model name
    model: str
    stream: bool
    timeout_s: float
    raw: bytes | None = None  # the encoded body when no change was needed (forward as is)
    stream_timeout_s: float | None = None  # the target's deadline for a whole stream
    started: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class ChatResult:
    status: int
    body: bytes                        # OpenAI chat.completion (or embeddings) JSON
    usage: Usage | None = None         # filled by translating providers; else parsed by the proxy
    raw_usage: Any = None              # the usage exactly as the provider reported it


@dataclass(slots=True)
class ChatStream:
    """An open upstream stream whose status was already 200.

    `events` yields the JSON payload of each OpenAI `chat.completion.chunk` (bytes, without the
    `data: ` prefix and without `[DONE]`). Providers always request/emit the final usage chunk
    (`choices: []`, `usage: {...}`); the proxy hides it from clients that did not ask for it.
    """

    events: AsyncIterator[bytes]
    raw_usage: list[Any] = field(default_factory=list)  # provider-reported usage, appended as seen
    close: Any = None  # plain (sync) callable that drops the upstream request; must not await


def with_deadline(stream: ChatStream, req: ChatRequest, provider: str) -> ChatStream:
    """Ends `stream` with a timeout error once `req.stream_timeout_s` has passed since the
    request started: a trickling upstream (each chunk inside timeout_s) cannot hold a call for ever."""
    if req.stream_timeout_s:
        stream.events = _until(stream.events, req.started + req.stream_timeout_s, req.stream_timeout_s, provider)
    return stream


async def _until(events: AsyncIterator[bytes], deadline: float, limit_s: float, provider: str) -> AsyncIterator[bytes]:
    it = events.__aiter__()
    while True:
        left = deadline - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError
            chunk = await asyncio.wait_for(it.__anext__(), left)  # cancels the read (and its connection) on time
        except StopAsyncIteration:
            return
        except TimeoutError:
            await _aclose(it)
            raise UpstreamError(f"{provider}: stream timed out: still streaming after stream_timeout_s = {limit_s:g} s",
                                status=504, category="timeout") from None
        yield chunk


async def _aclose(it: Any) -> None:
    close = getattr(it, "aclose", None)
    if close is not None:
        try:
            await close()
        except Exception:  # already finished by the cancellation
            pass


class Provider(Protocol):
    name: str       # the provider's name in config, e.g. "anthropic"
    kind: str       # openai | anthropic | gemini | mock

    async def chat(self, req: ChatRequest) -> ChatResult: ...

    async def chat_stream(self, req: ChatRequest) -> ChatStream: ...

    async def embeddings(self, body: dict[str, Any], model: str, timeout_s: float) -> ChatResult: ...

    async def aclose(self) -> None: ...
