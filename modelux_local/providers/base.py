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


class ChatStream:
    """An open upstream stream whose status was already 200.

    Its chunks are the JSON payloads of OpenAI `chat.completion.chunk`s (bytes, without the
    `data: ` prefix and without `[DONE]`). Providers always request/emit the final usage chunk
    (`choices: []`, `usage: {...}`); the proxy hides it from clients that did not ask for it.

    `batches` yields them as lists, one list per upstream read where the provider can (the openai
    kind), so the relay works per read and not per chunk; `head` is a first batch read already
    (the provider read it before answering, so a dead stream still fails where routing can fall
    back). `events` is the same chunks one at a time (setting it replaces `batches`): a provider
    may give either. `ending` is set by a provider that knows the batch it just gave is the last
    (the read held `[DONE]`): the relay then sends the end of the stream with it, in one write.
    """

    __slots__ = ("batches", "head", "raw_usage", "close", "ending")

    def __init__(self, events: AsyncIterator[bytes] | None = None, raw_usage: list[Any] | None = None,
                 close: Any = None, *, batches: AsyncIterator[list[bytes]] | None = None,
                 head: list[bytes] | None = None):
        self.batches: AsyncIterator[list[bytes]] = batches if batches is not None else _one_each(events)
        self.head = head
        self.raw_usage: list[Any] = raw_usage if raw_usage is not None else []  # provider-reported usage, as seen
        self.close = close  # plain (sync) callable that drops the upstream request; must not await
        self.ending = False

    @property
    def events(self) -> AsyncIterator[bytes]:
        """The chunks one at a time (the head first); takes the head."""
        head, self.head = self.head, None
        return _each(head, self.batches)

    @events.setter
    def events(self, events: AsyncIterator[bytes]) -> None:
        self.batches, self.head = _one_each(events), None


async def _one_each(events: AsyncIterator[bytes] | None) -> AsyncIterator[list[bytes]]:
    if events is None:
        return
    async for e in events:
        yield [e]


async def _each(head: list[bytes] | None, batches: AsyncIterator[list[bytes]]) -> AsyncIterator[bytes]:
    for e in head or ():
        yield e
    async for batch in batches:
        for e in batch:
            yield e


def with_deadline(stream: ChatStream, req: ChatRequest, provider: str) -> ChatStream:
    """Ends `stream` with a timeout error once `req.stream_timeout_s` has passed since the
    request started: a trickling upstream (each chunk inside timeout_s) cannot hold a call for ever."""
    if req.stream_timeout_s:
        stream.batches = _until(stream.batches, req.started + req.stream_timeout_s, req.stream_timeout_s, provider)
    return stream


async def _until(batches: AsyncIterator[list[bytes]], deadline: float, limit_s: float,
                 provider: str) -> AsyncIterator[list[bytes]]:
    it = batches.__aiter__()
    while True:
        left = deadline - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError
            batch = await asyncio.wait_for(it.__anext__(), left)  # cancels the read (and its connection) on time
        except StopAsyncIteration:
            return
        except TimeoutError:
            await _aclose(it)
            raise UpstreamError(f"{provider}: stream timed out: still streaming after stream_timeout_s = {limit_s:g} s",
                                status=504, category="timeout") from None
        yield batch


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
