"""Plumbing shared by the translating providers (Anthropic, Gemini).

- `iter_sse`: a Server-Sent Events parser over an aiohttp response body. It splits on raw
  chunks itself instead of `StreamReader.readline`, because aiohttp refuses lines longer than
  its buffer high-water mark (128 KiB) and a tool call's arguments can exceed that.
- `client_timeout`: one total deadline for plain calls; for streams a connect deadline plus a
  per-read gap deadline (which also bounds the time to the first byte), never a total one.
- `transport_error`: the only way these providers build UpstreamError for network failures.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, AsyncIterator

import aiohttp

from ..errors import UpstreamError


@dataclass(slots=True)
class SSEEvent:
    event: str   # "" when the server sent no `event:` line (Gemini)
    data: str


async def iter_sse(content: aiohttp.StreamReader) -> AsyncIterator[SSEEvent]:
    """Yields one SSEEvent per blank-line-terminated event; comments and `id:`/`retry:` skipped."""
    buf = bytearray()  # amortised appends while a long line arrives in many small reads
    event, data = "", []
    async for chunk in content.iter_any():
        buf += chunk
        if b"\n" not in chunk:
            continue
        lines = buf.split(b"\n")
        buf = bytearray(lines.pop())  # the unfinished tail waits for more bytes
        for raw in lines:
            line = raw[:-1] if raw.endswith(b"\r") else raw
            if not line:
                if data:
                    yield SSEEvent(event, "\n".join(data))
                event, data = "", []
                continue
            field, _, value = line.decode("utf-8").partition(":")
            if value.startswith(" "):
                value = value[1:]
            if field == "data":
                data.append(value)
            elif field == "event":
                event = value
    if buf.strip():  # a last line without its newline
        field, _, value = buf.decode("utf-8").strip().partition(":")
        if field == "data":
            data.append(value.lstrip(" "))
    if data:  # a last event without its blank line: lenient, like browsers
        yield SSEEvent(event, "\n".join(data))


def client_timeout(timeout_s: float, *, stream: bool) -> aiohttp.ClientTimeout:
    if stream:
        # sock_read bounds every wait for bytes, the response headers included: so it is the
        # time-to-first-byte deadline and then the longest silence allowed between chunks.
        return aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s)
    return aiohttp.ClientTimeout(total=timeout_s)


def new_session(max_connections: int) -> aiohttp.ClientSession:
    """Called lazily inside the running loop: a session is bound to the loop that made it."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=max_connections))


def transport_error(exc: BaseException, provider: str) -> UpstreamError:
    """Network-level failures: timeouts and connection problems, both retryable by routing."""
    if isinstance(exc, asyncio.TimeoutError):  # aiohttp's ServerTimeoutError is one too
        return UpstreamError(f"{provider}: upstream timed out", status=None, category="timeout")
    detail = type(exc).__name__
    return UpstreamError(f"{provider}: connection failed ({detail}: {exc})", status=None, category="connect")


async def prefetch(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Pulls the first chunk now (so early upstream errors raise in the caller), then the rest."""
    try:
        first = [await chunks.__anext__()]
    except StopAsyncIteration:
        first = []

    async def events() -> AsyncIterator[bytes]:
        for chunk in first:
            yield chunk
        async for chunk in chunks:
            yield chunk
    return events()


def stream_closer(resp: aiohttp.ClientResponse, chunks: Any):
    async def close() -> None:
        resp.close()  # drops the connection: the upstream stops generating (and billing)
        try:
            await chunks.aclose()
        except RuntimeError:
            pass  # still being iterated by a task the caller is cancelling: its finally closes up
    return close
