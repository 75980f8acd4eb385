"""Token usage, normalised to the OpenAI convention.

`input_tokens` counts every prompt token, cached ones included (OpenAI's `prompt_tokens`);
`cached_tokens` and `cache_write_tokens` are parts of it (`cache_write_1h_tokens`, Anthropic's
one-hour cache writes, a part of `cache_write_tokens`, priced at their own rate). `output_tokens` includes
`reasoning_tokens`. Translating providers (Anthropic, Gemini) fill this same shape, and put
cache writes under `prompt_tokens_details.cache_write_tokens` of the OpenAI usage object.
"""
from __future__ import annotations

from typing import Any

import msgspec


class Usage(msgspec.Struct, frozen=True):
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_1h_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def _int(d: Any, key: str) -> int:
    if isinstance(d, dict):
        v = d.get(key)
        if isinstance(v, int):
            return v
    return 0


def usage_from_openai(u: Any) -> Usage | None:
    """Reads an OpenAI `usage` object (chat or embeddings); None when absent."""
    if not isinstance(u, dict):
        return None
    pd = u.get("prompt_tokens_details")
    cd = u.get("completion_tokens_details")
    return Usage(
        input_tokens=_int(u, "prompt_tokens"),
        output_tokens=_int(u, "completion_tokens"),
        cached_tokens=_int(pd, "cached_tokens"),
        cache_write_tokens=_int(pd, "cache_write_tokens"),
        reasoning_tokens=_int(cd, "reasoning_tokens"),
        cache_write_1h_tokens=_int(pd, "cache_write_1h_tokens"),
    )


def usage_to_openai(u: Usage) -> dict:
    d: dict = {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.total_tokens,
    }
    if u.cached_tokens or u.cache_write_tokens:
        d["prompt_tokens_details"] = {"cached_tokens": u.cached_tokens}
        if u.cache_write_tokens:
            d["prompt_tokens_details"]["cache_write_tokens"] = u.cache_write_tokens
        if u.cache_write_1h_tokens:
            d["prompt_tokens_details"]["cache_write_1h_tokens"] = u.cache_write_1h_tokens
    if u.reasoning_tokens:
        d["completion_tokens_details"] = {"reasoning_tokens": u.reasoning_tokens}
    return d


class _WithUsage(msgspec.Struct):
    usage: dict | None = None


_decode_usage = msgspec.json.Decoder(_WithUsage).decode


def usage_of_body(body: bytes | None) -> tuple[Any, Usage | None]:
    """(raw usage object, Usage) of an OpenAI response body, decoding only its `usage` field."""
    if not body:
        return None, None
    try:
        raw = _decode_usage(body).usage
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None, None
    return raw, usage_from_openai(raw)


def cache_share(steps: list[dict]) -> tuple[int, int, float | None]:
    """(cached, input, share) over a run's steps: the share of input tokens read from the prompt cache."""
    cached = sum(s.get("cached_tokens") or 0 for s in steps)
    total = sum(s.get("input_tokens") or 0 for s in steps)
    return cached, total, (cached / total if total else None)
