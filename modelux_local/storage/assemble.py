"""A streamed chat completion rebuilt from its chunks: what the writer stores, replay compares
and playback answers with.

The chunks are decoded into typed structs, all of a stream's in one call (a JSON array of them):
the writer does this for every streamed call, and dict decoding plus per-key look-ups were half
its CPU per stream. A chunk that does not fit the structs (a provider's odd types) sends the
stream through the generic path, which takes any JSON object.
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
        return _generic(events)
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
                if d.tool_calls:
                    _add_tools(s[2], [(tc.index, tc.id, (tc.function.name if tc.function else None),
                                       (tc.function.arguments if tc.function else None)) for tc in d.tool_calls])
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


def _add_tools(calls: list[dict], deltas: list[tuple]) -> None:
    """Tool-call deltas (index, id, name part, arguments part) folded into whole calls."""
    for j, tid, name, args in deltas:
        j = len(calls) if j is None else j
        while len(calls) <= j:
            calls.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
        if tid:
            calls[j]["id"] = tid
        calls[j]["function"]["name"] += name or ""
        calls[j]["function"]["arguments"] += args or ""


def _generic(events: list[bytes]) -> dict:
    """The same for chunks of any shape: undecodable ones and ones that are not objects are skipped."""
    out: dict[str, Any] = {"object": "chat.completion", "choices": []}
    slots: dict[Any, list] = {}
    for raw in events:
        try:
            ch = _any(raw)
        except msgspec.DecodeError:
            continue
        if not isinstance(ch, dict):
            continue
        for k in _HEAD:
            if k in ch and k not in out:
                out[k] = ch[k]
        if ch.get("usage"):
            out["usage"] = ch["usage"]
        for c in ch.get("choices") or []:
            if not isinstance(c, dict):
                continue
            i = c.get("index", 0)
            s = slots.get(i)
            if s is None:
                s = slots[i] = [[], [], [], None]
            d = c.get("delta") or {}
            if isinstance(d, dict):
                if isinstance(d.get("content"), str) and d["content"]:
                    s[0].append(d["content"])
                if isinstance(d.get("reasoning_content"), str) and d["reasoning_content"]:
                    s[1].append(d["reasoning_content"])
                tools = [tc for tc in d.get("tool_calls") or [] if isinstance(tc, dict)]
                if tools:
                    _add_tools(s[2], [(tc.get("index") if isinstance(tc.get("index"), int) else None, tc.get("id"),
                                       _str((tc.get("function") or {}), "name"),
                                       _str((tc.get("function") or {}), "arguments")) for tc in tools])
            if c.get("finish_reason"):
                s[3] = c["finish_reason"]
    out["choices"] = [_choice(i, *slots[i]) for i in sorted(slots, key=_order)]
    return out


def _str(d: Any, k: str) -> str | None:
    v = d.get(k) if isinstance(d, dict) else None
    return v if isinstance(v, str) else None


def _order(i: Any) -> tuple:
    return (0, i, "") if isinstance(i, int) else (1, 0, str(i))
