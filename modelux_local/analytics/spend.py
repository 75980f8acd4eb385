"""Spend arithmetic for the budget guard, done on the event loop without SQLite or genai-prices.

Rates come as plain nano-dollars per token (pricing.Rates.*_nanos); a call's prompt is estimated from its
size; a stream's output from the content streamed so far. These are estimates for *admission*
and *cut-off*: the writer still prices every stored call exactly.
"""
from __future__ import annotations

from typing import Any

import msgspec

from ..core.usage import Usage, usage_from_openai, usage_of_body

# Output tokens reserved for a call that sets neither max_tokens nor max_completion_tokens.
DEFAULT_MAX_OUTPUT_TOKENS = 4096
# Prompt tokens are estimated as characters / 3 (English averages ~4 characters per token, so
# this errs high, as a reservation should) plus a few tokens of framing per message.
CHARS_PER_TOKEN_PROMPT = 3
CHARS_PER_TOKEN_OUTPUT = 4
IMAGE_PART_CHARS = 3000  # an image part counts like ~1000 tokens

_enc = msgspec.json.Encoder()


def _content_chars(c: Any) -> int:
    if isinstance(c, str):
        return len(c)
    n = 0
    if isinstance(c, list):
        for part in c:
            if isinstance(part, dict):
                t = part.get("text")
                if isinstance(t, str):
                    n += len(t)
                elif part.get("type") in ("image_url", "image", "input_audio", "file"):
                    n += IMAGE_PART_CHARS
                else:
                    n += len(_enc.encode(part))
            elif isinstance(part, str):
                n += len(part)
    return n


def prompt_tokens_estimate(body: dict) -> int:
    """Generous prompt size from the request: messages, tool definitions, system, embedding input."""
    chars = 0
    msgs = body.get("messages")
    if isinstance(msgs, list):
        for m in msgs:
            if isinstance(m, dict):
                chars += 16 + _content_chars(m.get("content"))
                if m.get("tool_calls"):
                    chars += len(_enc.encode(m["tool_calls"]))
    for key in ("tools", "functions"):
        if body.get(key):
            chars += len(_enc.encode(body[key]))
    if body.get("system"):  # Anthropic Messages format
        chars += _content_chars(body["system"])
    inp = body.get("input")  # embeddings
    if isinstance(inp, str):
        chars += len(inp)
    elif isinstance(inp, list):
        chars += sum(len(x) if isinstance(x, str) else 4 * len(x) if isinstance(x, list) else 0 for x in inp)
    return -(-chars // CHARS_PER_TOKEN_PROMPT)


def max_output_tokens(body: dict, endpoint: str) -> int:
    if endpoint == "embeddings":
        return 0
    cap = body.get("max_completion_tokens") or body.get("max_tokens")
    if not isinstance(cap, int) or cap <= 0:
        cap = DEFAULT_MAX_OUTPUT_TOKENS
    n = body.get("n")
    return cap * (n if isinstance(n, int) and n > 1 else 1)


# -- reading usage and content back ---------------------------------------------------------


class _Fn(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCall(msgspec.Struct):
    function: _Fn | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(msgspec.Struct):
    delta: _Delta | None = None


class _Chunk(msgspec.Struct):
    choices: list[_Choice] | None = None
    usage: dict | None = None


_chunk = msgspec.json.Decoder(_Chunk).decode


def chunk_output_chars(payload: bytes) -> int:
    """Characters of generated output in one streamed chunk (content, reasoning, tool arguments)."""
    try:
        ch = _chunk(payload)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return 0
    n = 0
    for c in ch.choices or ():
        d = c.delta
        if d is None:
            continue
        if d.content:
            n += len(d.content)
        if d.reasoning_content:
            n += len(d.reasoning_content)
        for tc in d.tool_calls or ():
            if tc.function is not None:
                n += len(tc.function.arguments or "") + len(tc.function.name or "")
    return n


def stream_usage(events: list[bytes] | None) -> Usage | None:
    """The usage object of a stream's final chunk, if it got that far."""
    for payload in reversed(events or ()):
        if b'"usage"' not in payload:
            continue
        try:
            u = _chunk(payload).usage
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
        if u:
            return usage_from_openai(u)
    return None


def body_usage(body: bytes | None) -> Usage | None:
    return usage_of_body(body)[1]


def output_tokens_for_chars(chars: int) -> int:
    return -(-chars // CHARS_PER_TOKEN_OUTPUT)
