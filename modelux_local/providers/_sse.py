"""Stream plumbing shared by the HTTP providers.

Both SSE readers split raw reads into lines themselves (`_Lines`) instead of using aiohttp's
`StreamReader.readline`, because aiohttp refuses a line longer than its buffer high-water mark
(128 KiB), and a tool call's arguments or a local server's big chunk can exceed that.

- `SSEData`: the openai kind's hot path. The payload bytes of the `data:` lines of each read,
  never decoded, until `data: [DONE]`; `iter_sse_data` yields them one at a time.
- `iter_sse`: whole events (`event:` name, `data:` lines joined), decoded, for the translating
  kinds.
- `prefetch` / `stream_closer`: how a translated stream is opened and dropped.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

_NO_LINES: tuple[bytes, ...] = ()


class _Lines:
    """Cuts a byte stream into lines (without their `\n`) across reads of any size."""

    __slots__ = ("_tail",)

    def __init__(self) -> None:
        self._tail = bytearray()  # amortised appends while a long line arrives in many small reads

    def feed(self, chunk: bytes) -> list[bytes] | tuple[bytes, ...]:
        """The lines this read completes; the unfinished last one waits for more bytes."""
        tail = self._tail
        if b"\n" not in chunk:
            tail += chunk
            return _NO_LINES
        if tail:
            tail += chunk
            lines = bytes(tail).split(b"\n")
            tail.clear()
        else:
            lines = chunk.split(b"\n")  # the usual case: a read holds whole events
        last = lines.pop()
        if last:
            tail += last
        return lines

    def rest(self) -> bytes:
        """What came after the last newline (a last line the server did not terminate)."""
        return bytes(self._tail)


class StreamIncomplete(Exception):
    """The upstream closed the stream cleanly but before its terminator (or mid-line)."""


class SSEData:
    """The openai kind's splitter: `feed(read)` gives the payloads of the `data:` lines that read
    completes (stripped bytes, never decoded), as one list, so a stream is handled per upstream read
    and not per event. After `data: [DONE]`, `done` is set and the rest of the read is ignored.

    One payload per data line, not per event: an OpenAI-compatible server sends each chunk's JSON
    on a single line. Blank separators, `event:`/`id:` lines, `:` comments and empty payloads are
    skipped. `finish()` at the end of the body raises StreamIncomplete unless `[DONE]` came (or is
    the unterminated last line): a cut stream must not pass for a finished one.
    """

    __slots__ = ("_lines", "done")

    def __init__(self) -> None:
        self._lines = _Lines()
        self.done = False

    def feed(self, chunk: bytes) -> list[bytes]:
        lines = self._lines.feed(chunk)
        if not lines:
            return []
        out = [line[5:].strip() for line in lines if line.startswith(b"data:")]
        if b"[DONE]" in out or b"" in out:  # rare: the end, or an empty payload
            if b"[DONE]" in out:
                del out[out.index(b"[DONE]"):]
                self.done = True
            out = [p for p in out if p]
        return out

    def finish(self) -> None:
        """At the end of the body: fine after [DONE] (also an unterminated last line), else StreamIncomplete."""
        if self.done:
            return
        rest = self._lines.rest().strip()
        if rest == b"data: [DONE]" or rest == b"data:[DONE]":
            self.done = True
            return  # a last line without its newline, but complete
        raise StreamIncomplete("the stream was cut inside an event" if rest else "the stream ended without data: [DONE]")


async def iter_sse_data(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The payload of each `data:` line, one at a time, until `data: [DONE]` (see SSEData)."""
    sse = SSEData()
    async for chunk in content.iter_any():
        for payload in sse.feed(chunk):
            yield payload
        if sse.done:
            return
    sse.finish()


@dataclass(slots=True)
class SSEEvent:
    event: str   # "" when the server sent no `event:` line (Gemini)
    data: str


async def iter_sse(content: aiohttp.StreamReader) -> AsyncIterator[SSEEvent]:
    """Yields one SSEEvent per blank-line-terminated event; comments and `id:`/`retry:` skipped."""
    lines = _Lines()
    event, data = "", []
    async for chunk in content.iter_any():
        for raw in lines.feed(chunk):
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
    rest = lines.rest()
    if rest.strip():  # a last line without its newline
        field, _, value = rest.decode("utf-8").strip().partition(":")
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
