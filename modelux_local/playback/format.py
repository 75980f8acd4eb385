"""The cassette file: JSON lines, a header naming the format version, then one recorded call a line.

    {"modelux_cassette": 1, "created_at": "2026-12-02T13:00:00Z", "selection": {...}}
    {"endpoint": "chat", "alias": "@planner", "answered_by": "mock/mock-large", "stream": false,
     "cost_usd": 0.000123, "request": {normalised body}, "response": {chat.completion}}
    {"endpoint": "chat", ..., "stream": true, ..., "events": [{chunk}, ...]}

Text, one call per line, request keys sorted: a prompt change shows in `git diff` as the lines of
the calls it changed. It holds request bodies (normalised) and answers only: never headers, keys
or tags. Writes are atomic (a temporary file renamed over the old one), so a crash while
recording leaves the previous complete cassette.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

VERSION = 1
_enc = msgspec.json.Encoder()
_sorted = msgspec.json.Encoder(order="sorted")
_dec = msgspec.json.Decoder()


class CassetteError(ValueError):
    """A cassette file that cannot be read: names the file and line."""


@dataclass(slots=True)
class Entry:
    endpoint: str
    alias: str | None
    request: dict[str, Any]           # normalised (playback.normalise)
    response: bytes | None = None     # the answer body as served (non-streamed, or assembled)
    events: list[bytes] | None = None  # streamed chunk payloads, when it was recorded streamed
    stream: bool = False
    answered_by: str | None = None    # provider/model that produced the answer
    cost_usd: float | None = None     # what it cost when recorded: what playing it back saves

    def to_line(self) -> bytes:
        d: dict[str, Any] = {"endpoint": self.endpoint, "alias": self.alias, "answered_by": self.answered_by,
                             "stream": self.stream, "cost_usd": self.cost_usd,
                             "request": msgspec.Raw(_sorted.encode(self.request))}
        if self.events is not None:
            d["events"] = [msgspec.Raw(compact(e)) for e in self.events]
        else:
            d["response"] = msgspec.Raw(compact(self.response or b"null"))
        return _enc.encode(d)


def compact(raw: bytes) -> bytes:
    """One JSON value without whitespace between tokens, key order kept: one line, and the same bytes
    when a loaded cassette is written again (so appending a call leaves the other lines untouched)."""
    return _enc.encode(_dec.decode(raw))


@dataclass(slots=True)
class Cassette:
    path: Path
    header: dict[str, Any]
    entries: list[Entry] = field(default_factory=list)

    def save(self) -> None:
        write_atomic(self.path, [_enc.encode(self.header)] + [e.to_line() for e in self.entries])


def new_header(selection: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"modelux_cassette": VERSION, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "selection": selection or {}}


def load(path: Path | str) -> Cassette:
    path = Path(path)
    try:
        lines = path.read_bytes().splitlines()
    except OSError as e:
        raise CassetteError(f"cannot read cassette {path}: {e.strerror or e}") from None
    if not lines:
        raise CassetteError(f"{path}: empty file, not a cassette (the first line names the format version)")
    header = _line(path, 1, lines[0])
    if header.get("modelux_cassette") != VERSION:
        raise CassetteError(f"{path}:1: not a modelux cassette of version {VERSION} "
                            f"(header modelux_cassette = {header.get('modelux_cassette')!r})")
    cas = Cassette(path, header)
    for n, raw in enumerate(lines[1:], start=2):
        if not raw.strip():
            continue
        d = _line(path, n, raw)
        try:
            cas.entries.append(_entry(d))
        except (KeyError, TypeError, ValueError) as e:
            raise CassetteError(f"{path}:{n}: not a recorded call ({e})") from None
    return cas


def _line(path: Path, n: int, raw: bytes) -> dict:
    try:
        d = _dec.decode(raw)
    except msgspec.DecodeError as e:
        raise CassetteError(f"{path}:{n}: not JSON ({e})") from None
    if not isinstance(d, dict):
        raise CassetteError(f"{path}:{n}: expected a JSON object")
    return d


def _entry(d: dict) -> Entry:
    if not isinstance(d["request"], dict):
        raise TypeError("request must be an object")
    events = d.get("events")
    if events is not None:
        if not isinstance(events, list):
            raise TypeError("events must be a list of chunks")
        events = [_enc.encode(e) for e in events]
    elif "response" not in d:
        raise KeyError("response or events")
    return Entry(endpoint=str(d["endpoint"]), alias=d.get("alias"), request=d["request"],
                 response=None if events is not None else _enc.encode(d["response"]), events=events,
                 stream=bool(d.get("stream")), answered_by=d.get("answered_by"), cost_usd=d.get("cost_usd"))


def write_atomic(path: Path, lines: list[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(b"\n".join(lines) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
