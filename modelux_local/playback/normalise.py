"""A request's playback key: what of its body decides the answer, with volatile parts removed.

Pure functions over decoded JSON. One `EndpointRule` per endpoint says which top-level keys never
change the answer (tags, stream flags, end-user ids) and which keys hold generated ids (tool-call
ids, response ids) that get numbered by first appearance, so a run replayed with new ids, a new
`run_id` or streaming switched on still matches. A new endpoint is one entry in `RULES`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

_canonical = msgspec.json.Encoder(order="sorted").encode


@dataclass(frozen=True, slots=True)
class EndpointRule:
    drop: frozenset[str]      # top-level keys that never change the answer
    ids: frozenset[str]       # keys (at any depth) whose string values are generated ids
    history: str              # the key holding the conversation: a miss names its first differing item


_VOLATILE = frozenset({"mlx:tags", "stream", "stream_options", "user", "metadata", "safety_identifier",
                       "prompt_cache_key"})

RULES: dict[str, EndpointRule] = {
    "chat": EndpointRule(_VOLATILE, frozenset({"id", "tool_call_id"}), "messages"),
    "embeddings": EndpointRule(frozenset({"mlx:tags", "user"}), frozenset(), "input"),
    # the Anthropic body as the client sent it; metadata.user_id and tags are not part of the question
    "messages": EndpointRule(_VOLATILE, frozenset({"id", "tool_use_id"}), "messages"),
    # OpenAI Responses: item ids, function call ids and the previous response are all generated
    "responses": EndpointRule(_VOLATILE | {"store"}, frozenset({"id", "call_id", "previous_response_id"}), "input"),
}


class UnknownEndpoint(ValueError):
    pass


def rule_for(endpoint: str) -> EndpointRule:
    try:
        return RULES[endpoint]
    except KeyError:
        raise UnknownEndpoint(f"no playback rule for endpoint {endpoint!r} (known: {', '.join(RULES)})") from None


def normalise(endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    """The body without volatile keys, generated ids replaced by `<id:N>` in order of first appearance."""
    rule = rule_for(endpoint)
    numbers: dict[str, str] = {}

    def walk(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: (_number(v, numbers) if k in rule.ids and isinstance(v, str) else walk(v)) for k, v in x.items()}
        if isinstance(x, list):
            return [walk(v) for v in x]
        return x

    return walk({k: v for k, v in body.items() if k not in rule.drop})


def _number(value: Any, numbers: dict[str, str]) -> Any:
    if not isinstance(value, str):
        return value
    n = numbers.get(value)
    if n is None:
        n = numbers[value] = f"<id:{len(numbers) + 1}>"
    return n


def key_of(endpoint: str, normalised: dict[str, Any]) -> bytes:
    """The match key: the endpoint and the normalised body, encoded with sorted keys."""
    return endpoint.encode() + b"\x00" + _canonical(normalised)


def differences(endpoint: str, asked: dict[str, Any], recorded: dict[str, Any]) -> list[str]:
    """What differs between two normalised requests, first the conversation then the parameters."""
    rule = rule_for(endpoint)
    out: list[str] = []
    a, r = asked.get(rule.history), recorded.get(rule.history)
    if a != r:
        if isinstance(a, list) and isinstance(r, list):
            i = next((i for i, (x, y) in enumerate(zip(a, r)) if x != y), min(len(a), len(r)))
            if i < min(len(a), len(r)):
                out.append(f"{rule.history}[{i}]: {_short(a[i])} (recorded: {_short(r[i])})")
            else:
                out.append(f"{rule.history}: {len(a)} items (recorded: {len(r)})")
        else:
            out.append(f"{rule.history}: {_short(a)} (recorded: {_short(r)})")
    for k in sorted((set(asked) | set(recorded)) - {rule.history}):
        if asked.get(k) != recorded.get(k):
            va = _short(asked[k]) if k in asked else "absent"
            vr = _short(recorded[k]) if k in recorded else "absent"
            out.append(f"{k}: {va} (recorded: {vr})")
    return out


def similarity(endpoint: str, asked: dict[str, Any], recorded: dict[str, Any]) -> tuple:
    """Sort key for the nearest recorded request: same model, longest common history, most equal keys."""
    rule = rule_for(endpoint)
    a, r = asked.get(rule.history), recorded.get(rule.history)
    prefix = 0
    if isinstance(a, list) and isinstance(r, list):
        for x, y in zip(a, r):
            if x != y:
                break
            prefix += 1
    equal = sum(1 for k in set(asked) & set(recorded) if asked[k] == recorded[k])
    return (asked.get("model") == recorded.get("model"), prefix, equal)


def _short(x: Any, limit: int = 120) -> str:
    text = _canonical(x).decode()
    return text if len(text) <= limit else text[:limit - 1] + "…"
