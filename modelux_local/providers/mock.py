"""The built-in `mock` provider: deterministic answers derived from the request, no network.

Same request -> same answer; a bigger model answers at greater length. Offers tool calls when
tools are given (until a tool result comes back), JSON when response_format asks for it,
and streams in chunks with the configured time-to-first-token and latency.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from ..config.schema import BUILTIN_MOCK_MODELS, LimitsSection, MockModel, ProviderConfig, mock_model_known
from ..core.usage import Usage, usage_to_openai
from ..errors import UpstreamError, category_for_status
from ._openai_shapes import bad_request, openai_error_body
from .base import ChatRequest, ChatResult, ChatStream, with_deadline

_WORDS = ("the plan covers data sources, checks each step, and reports what was found; results look "
          "consistent with the request and the next action is to verify details, compare options, "
          "summarise risks, and keep costs low while the agent finishes its task").replace(",", "").replace(";", "").split()
_WORD_RE = re.compile(r"[a-z0-9]+")


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def count_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4)) if text else 0


class MockProvider:
    def __init__(self, name: str, cfg: ProviderConfig, limits: LimitsSection | None = None):
        self.name = name
        self.kind = "mock"
        self.cfg = cfg
        self.limits = limits or LimitsSection()
        self._rng = random.Random(cfg.seed)

    def _model(self, model: str) -> MockModel:
        m = self.cfg.models.get(model)
        if m is None and not mock_model_known(self.cfg, model):  # a typo is not a model
            msg = f"mock: unknown model {model!r} (models of provider {self.name!r}: {', '.join(sorted({*self.cfg.models, *BUILTIN_MOCK_MODELS}))})"
            raise UpstreamError(f"{self.name}: HTTP 404: {msg}", status=404, category=None,
                                body=openai_error_body(msg, "invalid_request_error", code="model_not_found"))
        return m or MockModel()

    def _maybe_fail(self, m: MockModel) -> None:
        if m.error_rate and self._rng.random() < m.error_rate:
            msg = f"mock: injected error (error_rate={m.error_rate})"
            raise UpstreamError(f"{self.name}: HTTP {m.error_status}: {msg}", status=m.error_status,
                                category=category_for_status(m.error_status), body=openai_error_body(msg, "server_error"))

    # -- answers ---------------------------------------------------------------------------

    def _answer(self, body: dict, model: str) -> tuple[list[dict], Usage]:
        messages = body.get("messages") or []
        if not isinstance(messages, list) or not messages:
            raise UpstreamError("mock: 'messages' must be a non-empty list", status=400, category=None,
                                body=openai_error_body("'messages' must be a non-empty list", "invalid_request_error"))
        prompt = " ".join(_text_of(m.get("content")) for m in messages if isinstance(m, dict))
        seed = hashlib.sha256(json.dumps(messages, sort_keys=True, default=str).encode()).digest()
        in_tokens = count_tokens(prompt) + 4 * len(messages)
        tools = body.get("tools") or []
        last = messages[-1] if isinstance(messages[-1], dict) else {}
        n, cap = self._checked_sizes(body)
        choices, out_tokens = [], 0
        for i in range(n):
            if tools and body.get("tool_choice") != "none" and last.get("role") != "tool":
                msg, toks, finish = self._tool_call(tools, body.get("tool_choice"), seed, i)
            else:
                text, finish = self._text(last, model, seed, i, body, cap)
                msg, toks = {"role": "assistant", "content": text}, count_tokens(text)
            choices.append({"index": i, "message": msg, "finish_reason": finish, "logprobs": None})
            out_tokens += toks
        return choices, Usage(input_tokens=in_tokens, output_tokens=out_tokens)

    def _checked_sizes(self, body: dict) -> tuple[int, Any]:
        """`n` and the token cap, refused past [limits] mock_max_n / mock_max_tokens: the mock
        builds every choice in memory on the event loop, so an unbounded `n` would stall it."""
        n = body.get("n")
        n = 1 if n is None else n
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= self.limits.mock_max_n:
            raise bad_request(f"'n' must be an integer from 1 to {self.limits.mock_max_n} for the mock provider "
                              f"([limits] mock_max_n), got {n!r:.40}", param="n", code="invalid_value")
        for key in ("max_completion_tokens", "max_tokens"):
            cap = body.get(key)
            if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool)
                                    or not 1 <= cap <= self.limits.mock_max_tokens):
                raise bad_request(f"'{key}' must be an integer from 1 to {self.limits.mock_max_tokens} for the mock "
                                  f"provider ([limits] mock_max_tokens), got {cap!r:.40}", param=key,
                                  code="invalid_value")
        return n, body.get("max_completion_tokens") or body.get("max_tokens")

    def _text(self, last: dict, model: str, seed: bytes, i: int, body: dict, cap: Any) -> tuple[str, str]:
        topic = " ".join(_WORD_RE.findall(_text_of(last.get("content")).lower())[:8]) or "the task"
        m = self._model(model)
        size = m.output_tokens or (40 if "large" in model else 16) + seed[i % len(seed)] % 16
        words = [_WORDS[(seed[i % len(seed)] + j) % len(_WORDS)] for j in range(size)]
        text = f"About {topic}: " + " ".join(words) + "."
        finish = "stop"
        if isinstance(cap, int) and cap > 0 and count_tokens(text) > cap:
            text, finish = text[: cap * 4], "length"
        stops = body.get("stop")
        for s in [stops] if isinstance(stops, str) else (stops or []):
            if s and s in text:
                text, finish = text[: text.index(s)], "stop"
        rf = body.get("response_format") or {}
        if isinstance(rf, dict) and rf.get("type") in ("json_object", "json_schema"):
            text = json.dumps(self._json_for(rf, text))
        return text, finish

    def _json_for(self, rf: dict, text: str) -> dict:
        schema = ((rf.get("json_schema") or {}).get("schema") or {}) if rf.get("type") == "json_schema" else {}
        props = schema.get("properties") or {"answer": {"type": "string"}}
        return {k: _example(v, text) for k, v in props.items()}

    def _tool_call(self, tools: list, choice: Any, seed: bytes, i: int) -> tuple[dict, int, str]:
        fns = [t.get("function", {}) for t in tools if isinstance(t, dict)]
        fn = fns[seed[0] % len(fns)] if fns else {"name": "tool"}
        if isinstance(choice, dict) and (choice.get("function") or {}).get("name"):
            wanted = choice["function"]["name"]
            fn = next((f for f in fns if f.get("name") == wanted), {"name": wanted})
        params = (fn.get("parameters") or {}).get("properties") or {}
        args = json.dumps({k: _example(v, "mock") for k, v in params.items()})
        call = {"id": "call_" + seed[i:i + 6].hex(), "type": "function",
                "function": {"name": fn.get("name", "tool"), "arguments": args}}
        return {"role": "assistant", "content": None, "tool_calls": [call]}, count_tokens(args) + 8, "tool_calls"

    def _completion(self, body: dict, model: str) -> tuple[dict, Usage]:
        try:
            choices, usage = self._answer(body, model)
        except (TypeError, AttributeError, ValueError, KeyError, IndexError) as e:
            # a field of the wrong type somewhere (a real API answers those with a 400 too)
            raise bad_request(f"mock: the request has a field of an unexpected type ({type(e).__name__}: {e})",
                              code="invalid_type") from None
        return {"id": "chatcmpl-mock" + hashlib.sha1(repr(choices).encode()).hexdigest()[:20],
                "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": choices, "usage": usage_to_openai(usage), "system_fingerprint": "mock"}, usage

    # -- provider interface --------------------------------------------------------------

    async def chat(self, req: ChatRequest) -> ChatResult:
        m = self._model(req.model)
        resp, usage = self._completion(req.body, req.model)
        await _sleep(m.latency_ms, req.timeout_s)
        self._maybe_fail(m)
        return ChatResult(200, msgspec.json.encode(resp), usage=usage, raw_usage=resp["usage"])

    async def chat_stream(self, req: ChatRequest) -> ChatStream:
        m = self._model(req.model)
        resp, usage = self._completion(req.body, req.model)
        await _sleep(m.ttft_ms, req.timeout_s)
        self._maybe_fail(m)
        return with_deadline(ChatStream(events=_chunks(resp, usage, m), raw_usage=[resp["usage"]]), req, self.name)

    async def embeddings(self, body: dict[str, Any], model: str, timeout_s: float) -> ChatResult:
        m = self._model(model)
        inputs = body.get("input")
        items = [inputs] if isinstance(inputs, str) else inputs if isinstance(inputs, list) else []
        if not items or not all(isinstance(x, str) for x in items):
            raise UpstreamError("mock: 'input' must be a string or a list of strings", status=400, category=None,
                                body=openai_error_body("'input' must be a string or a list of strings", "invalid_request_error"))
        await _sleep(m.latency_ms, timeout_s)
        self._maybe_fail(m)
        dim = _dimensions(body.get("dimensions"), m.embedding_dim)
        data = [{"object": "embedding", "index": i, "embedding": embed_text(t, dim)} for i, t in enumerate(items)]
        tokens = sum(count_tokens(t) for t in items)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return ChatResult(200, msgspec.json.encode({"object": "list", "data": data, "model": model, "usage": usage}),
                          usage=Usage(input_tokens=tokens), raw_usage=usage)

    async def aclose(self) -> None:
        return None


def _dimensions(asked: Any, default: int) -> int:
    """`dimensions` as OpenAI's text-embedding-3 models take it: a positive integer, else a 400."""
    if asked is None:
        return default
    if isinstance(asked, bool) or not isinstance(asked, int) or not 1 <= asked <= 8192:
        msg = f"'dimensions' must be an integer from 1 to 8192, got {asked!r}"
        raise UpstreamError(f"mock: {msg}", status=400, category=None,
                            body=openai_error_body(msg, "invalid_request_error", param="dimensions"))
    return asked


async def _sleep(ms: float, timeout_s: float) -> None:
    if ms > 0:
        if ms / 1000 > timeout_s:
            await asyncio.sleep(timeout_s)
            raise UpstreamError("mock: timed out", status=None, category="timeout")
        await asyncio.sleep(ms / 1000)


def _example(schema: Any, text: str) -> Any:
    t = schema.get("type") if isinstance(schema, dict) else None
    if isinstance(schema, dict) and schema.get("enum"):
        return schema["enum"][0]
    return {"string": text, "integer": 1, "number": 1.0, "boolean": True, "array": [], "object": {}}.get(t, text)


async def _chunks(resp: dict, usage: Usage, m: MockModel) -> AsyncIterator[bytes]:
    """OpenAI chat.completion.chunk payloads: role, content pieces (or tool call), finish, usage."""
    base = {"id": resp["id"], "object": "chat.completion.chunk", "created": resp["created"], "model": resp["model"]}
    pieces: list[tuple[int, dict, str | None]] = []
    for ch in resp["choices"]:
        i, msg = ch["index"], ch["message"]
        pieces.append((i, {"role": "assistant", "content": ""}, None))
        if msg.get("tool_calls"):
            for k, tc in enumerate(msg["tool_calls"]):
                pieces.append((i, {"tool_calls": [{"index": k, "id": tc["id"], "type": "function",
                                                   "function": {"name": tc["function"]["name"], "arguments": ""}}]}, None))
                pieces.append((i, {"tool_calls": [{"index": k, "function": {"arguments": tc["function"]["arguments"]}}]}, None))
        else:
            words = re.findall(r"\S+\s*", msg.get("content") or "")
            for j in range(0, len(words), 3):
                pieces.append((i, {"content": "".join(words[j:j + 3])}, None))
        pieces.append((i, {}, ch["finish_reason"]))
    gap = max(0.0, m.latency_ms - m.ttft_ms) / 1000 / max(1, len(pieces) - 1)
    for n, (i, delta, finish) in enumerate(pieces):
        if n and gap:
            await asyncio.sleep(gap)
        yield msgspec.json.encode({**base, "choices": [{"index": i, "delta": delta, "finish_reason": finish, "logprobs": None}]})
    yield msgspec.json.encode({**base, "choices": [], "usage": usage_to_openai(usage)})


def embed_text(text: str, dim: int = 256) -> list[float]:
    """A deterministic bag-of-words embedding: shared words -> similar vectors (cosine)."""
    vec = [0.0] * dim
    for w in _WORD_RE.findall(text.lower()):
        stem = w[:5]  # crude stemming so 'running'/'runner' land together
        h = hashlib.blake2b(stem.encode(), digest_size=8).digest()
        vec[int.from_bytes(h[:4], "little") % dim] += 1.0 if h[4] & 1 else -1.0
    norm = math.sqrt(sum(x * x for x in vec)) or 1.0
    return [x / norm for x in vec]
