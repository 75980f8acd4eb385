"""Stream plumbing shared by the HTTP providers.

- `iter_sse`: a Server-Sent Events parser over an aiohttp response body. It splits on raw
  chunks itself instead of `StreamReader.readline`, because aiohttp refuses lines longer than
  its buffer high-water mark (128 KiB) and a tool call's arguments can exceed that.
- `prefetch` / `stream_closer`: how a translated stream is opened and dropped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, AsyncIterator

import aiohttp


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
