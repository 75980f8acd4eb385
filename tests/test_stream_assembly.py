"""Rebuilding a streamed chat completion (storage/assemble.py): the typed one-decode path and the
lenient path for odd chunks give the same message: content, reasoning, tool calls by index,
several choices, usage, and the first id/model."""
from __future__ import annotations

import json

from modelux_local.storage.assemble import _fold, _lenient, assemble_stream


def chunk(**kw) -> bytes:
    return json.dumps({"id": "c-1", "object": "chat.completion.chunk", "created": 7, "model": "m", **kw}).encode()


EVENTS = [
    chunk(choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]),
    chunk(choices=[{"index": 0, "delta": {"reasoning_content": "think "}}]),
    chunk(choices=[{"index": 0, "delta": {"reasoning_content": "more"}}, {"index": 1, "delta": {"content": "other"}}]),
    chunk(choices=[{"index": 0, "delta": {"content": "Hel"}}]),
    chunk(choices=[{"index": 0, "delta": {"content": "lo"}}]),
    chunk(choices=[{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "t-a", "type": "function", "function": {"name": "get_", "arguments": "{\"ci"}},
        {"index": 1, "id": "t-b", "type": "function", "function": {"name": "now", "arguments": ""}}]}}]),
    chunk(choices=[{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"name": "weather", "arguments": "ty\":1}"}}]}}]),
    chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "tool_calls"}, {"index": 1, "delta": {}, "finish_reason": "stop"}]),
    chunk(choices=[], usage={"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}),
]

WANT = {
    "object": "chat.completion", "id": "c-1", "created": 7, "model": "m",
    "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    "choices": [
        {"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Hello", "reasoning_content": "think more", "tool_calls": [
                {"id": "t-a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":1}"}},
                {"id": "t-b", "type": "function", "function": {"name": "now", "arguments": ""}}]}},
        {"index": 1, "finish_reason": "stop", "message": {"role": "assistant", "content": "other"}},
    ],
}


def test_typed_and_lenient_paths_rebuild_the_same_completion():
    assert assemble_stream(EVENTS) == WANT
    assert _fold([_lenient(e) for e in EVENTS]) == WANT  # the lenient path, chunk by chunk


def test_an_odd_chunk_sends_the_stream_through_the_lenient_path_and_is_skipped():
    odd = [*EVENTS[:4], b"not json", b"[1, 2]", chunk(choices=[{"index": 0, "delta": {"content": 5}}]), *EVENTS[4:]]
    assert assemble_stream(odd) == WANT


def test_nothing_but_a_usage_chunk():
    got = assemble_stream([chunk(choices=[], usage={"total_tokens": 1})])
    assert got["choices"] == [] and got["usage"] == {"total_tokens": 1}
