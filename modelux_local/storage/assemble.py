"""A streamed chat completion rebuilt from its chunks: what the writer stores, replay compares
and playback answers with.

The chunks are decoded into typed structs, all of a stream's in one call (a JSON array of them):
the writer does this for every streamed call, and dict decoding plus per-key look-ups were half
its CPU per stream. A chunk that does not fit the structs (a provider's odd types) sends the
stream through the lenient path, which takes any JSON object (one fold for both).
"""
from __future__ import annotations

from typing import Any

import msgspec

_UNSET: Any = msgspec.UNSET
_HEAD = ("id", "created", "model", "system_fingerprint")


class _Fn(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolDelta(msgspec.Struct):
    index: int | None = None
    id: str | None = None
    function: _Fn | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[_ToolDelta] | None = None


class _Choice(msgspec.Struct):
    index: int = 0
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Chunk(msgspec.Struct):
    id: Any = _UNSET
    created: Any = _UNSET
    model: Any = _UNSET
    system_fingerprint: Any = _UNSET
    usage: Any = None
    choices: list[_Choice] | None = None


_typed = msgspec.json.Decoder(list[_Chunk]).decode
_any = msgspec.json.Decoder().decode


def assemble_stream(events: list[bytes]) -> dict:
    """Rebuilds a chat.completion from streamed chunk payloads (content, reasoning, tool calls, usage)."""
    try:
        chunks = _typed(b"[" + b",".join(events) + b"]")
    except (msgspec.DecodeError, msgspec.ValidationError):
        chunks = [c for c in map(_lenient, events) if c is not None]
    return _fold(chunks)


def _fold(chunks: list[_Chunk]) -> dict:
    out: dict[str, Any] = {"object": "chat.completion", "choices": []}
    slots: dict[int, list] = {}  # index -> [content parts, reasoning parts, tool calls, finish_reason]
    for ch in chunks:
        for k in _HEAD:
            if k not in out and (v := getattr(ch, k)) is not _UNSET:
                out[k] = v
        if ch.usage:
            out["usage"] = ch.usage
        for c in ch.choices or ():
            s = slots.get(c.index)
            if s is None:
                s = slots[c.index] = [[], [], [], None]
            d = c.delta
            if d is not None:
                if d.content:
                    s[0].append(d.content)
                if d.reasoning_content:
                    s[1].append(d.reasoning_content)
                for tc in d.tool_calls or ():
                    _add_tool(s[2], tc)
            if c.finish_reason:
                s[3] = c.finish_reason
    out["choices"] = [_choice(i, *slots[i]) for i in sorted(slots)]
    return out


def _choice(i: int, content: list[str], reasoning: list[str], tools: list[dict], finish: str | None) -> dict:
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(content) if content else None}
    if reasoning:
        msg["reasoning_content"] = "".join(reasoning)
    if tools:
        msg["tool_calls"] = tools
    return {"index": i, "message": msg, "finish_reason": finish}


def _add_tool(calls: list[dict], tc: _ToolDelta) -> None:
    """A tool-call delta folded into its whole call."""
    j = len(calls) if tc.index is None else tc.index
    while len(calls) <= j:
        calls.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
    if tc.id:
        calls[j]["id"] = tc.id
    if tc.function is not None:
        calls[j]["function"]["name"] += tc.function.name or ""
        calls[j]["function"]["arguments"] += tc.function.arguments or ""


# The lenient path: a stream with a chunk the structs refuse (a provider's odd types) is decoded
# chunk by chunk, each field taken where it has the expected type and dropped where it does not;
# a chunk that is not a JSON object is skipped.

def _lenient(raw: bytes) -> _Chunk | None:
    try:
        ch = _any(raw)
    except msgspec.DecodeError:
        return None
    if not isinstance(ch, dict):
        return None
    return _Chunk(**{k: ch[k] for k in _HEAD if k in ch}, usage=ch.get("usage"),
                  choices=[_choice_of(c) for c in _list(ch.get("choices")) if isinstance(c, dict)])


def _choice_of(c: dict) -> _Choice:
    d = c.get("delta")
    delta = None
    if isinstance(d, dict):
        delta = _Delta(_str(d.get("content")), _str(d.get("reasoning_content")),
                       [_tool_of(tc) for tc in _list(d.get("tool_calls")) if isinstance(tc, dict)])
    i = c.get("index", 0)
    return _Choice(i if isinstance(i, int) else 0, delta, _str(c.get("finish_reason")))


def _tool_of(tc: dict) -> _ToolDelta:
    fn = tc.get("function")
    i = tc.get("index")
    return _ToolDelta(i if isinstance(i, int) else None, _str(tc.get("id")),
                      _Fn(_str(fn.get("name")), _str(fn.get("arguments"))) if isinstance(fn, dict) else None)


def _list(v: Any) -> list:
    return v if isinstance(v, list) else []


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) else None
