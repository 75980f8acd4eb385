"""Anthropic as an *upstream* (the anthropic provider kind): OpenAI Chat Completions out to the
Messages API, its answers and stream back to OpenAI shapes. Its counterpart for Anthropic
*clients* (`POST /v1/messages` in) is anthropic_in.py.

Pure functions over dicts (no I/O) so they are cheap to test and to time. What cannot be
expressed in the Messages API is refused with a 400 naming the parameter, never dropped:
see REFUSED and `_check_params`. Best-effort mappings are documented where they happen.
"""
from __future__ import annotations

import json
import time
from typing import Any

from ..core.usage import Usage, usage_to_openai
from ..errors import UpstreamError
from ._openai_shapes import (
    bad_request,
    base64_data_url,
    check_params,
    chunk_json,
    decode_json,
    error_object,
    image_url_of,
    invalid_answer,
    text_of,
    tool_call_arguments,
    usage_chunk_json,
    vendor_error,
)

DEFAULT_VERSION = "2023-06-01"

# Fields that change the answer in ways the Messages API cannot reproduce: refused when set.
REFUSED = {
    "logprobs": "Anthropic returns no log probabilities",
    "top_logprobs": "Anthropic returns no log probabilities",
    "audio": "Anthropic has no audio output",
    "prediction": "Anthropic has no predicted outputs",
    "logit_bias": "Anthropic has no logit bias",
    "presence_penalty": "Anthropic has no presence penalty",
    "frequency_penalty": "Anthropic has no frequency penalty",
    "functions": "use `tools` (legacy `functions` is not translated)",
    "function_call": "use `tool_choice` (legacy `function_call` is not translated)",
    "web_search_options": "web search is not translated to Anthropic",
}
# Fields handled below, or harmless to ignore (no effect on the answer: seed is a best-effort
# hint at OpenAI too; stream_options because usage is always requested; store/service_tier
# are OpenAI account features; safety_identifier/prompt_cache_key are routing hints).
KNOWN = {
    "model", "messages", "stream", "max_tokens", "max_completion_tokens", "temperature", "top_p",
    "stop", "n", "tools", "tool_choice", "parallel_tool_calls", "response_format", "user",
    "metadata", "seed", "stream_options", "store", "service_tier", "safety_identifier",
    "prompt_cache_key", "reasoning_effort", "modalities",
    "top_k", "thinking",  # Anthropic extensions accepted through extra_body, passed as is
}
# reasoning_effort -> extended thinking budget (tokens); Anthropic's minimum budget is 1024.
THINKING_BUDGET = {"minimal": 1024, "low": 1024, "medium": 4096, "high": 16384}
FINISH = {
    "end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "max_tokens": "length",
    "model_context_window_exceeded": "length", "tool_use": "tool_calls", "refusal": "content_filter",
}
JSON_INSTRUCTION = "Respond with a single valid JSON object and nothing else (no prose, no code fences)."


# ---------------------------------------------------------------- request: OpenAI -> Anthropic

def _check_params(body: dict[str, Any]) -> None:
    check_params(body, REFUSED, KNOWN, "Anthropic")
    n = body.get("n")
    if n not in (None, 1):
        raise bad_request("'n' > 1 is not supported for Anthropic models (one candidate per call)", param="n")
    modalities = body.get("modalities")
    if modalities and set(modalities) != {"text"}:
        raise bad_request("Anthropic models only produce text", param="modalities")


def _image_block(url: str, param: str) -> dict[str, Any]:
    if url.startswith("data:"):
        media_type, data = base64_data_url(url, param)
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise bad_request("image_url must be a data: URL or an http(s) URL", param=param)


def _user_blocks(content: Any, param: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content or []):
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):
                block = {"type": "text", "text": part["text"]}
                if "cache_control" in part:  # prompt caching hints from Anthropic-aware clients
                    block["cache_control"] = part["cache_control"]
                blocks.append(block)
        elif kind == "image_url":
            blocks.append(_image_block(image_url_of(part), f"{param}[{j}]"))
        else:
            raise bad_request(f"content part type '{kind}' is not supported for Anthropic models",
                              param=f"{param}[{j}]")
    return blocks


def _assistant_blocks(msg: dict[str, Any], param: str) -> list[dict[str, Any]]:
    content = msg.get("content")
    blocks = _user_blocks(content, param) if not isinstance(content, str) else (
        [{"type": "text", "text": content}] if content else [])
    for k, call in enumerate(msg.get("tool_calls") or []):
        fn = call.get("function") or {}
        args = tool_call_arguments(call, f"{param}.tool_calls[{k}]")
        blocks.append({"type": "tool_use", "id": call.get("id"), "name": fn.get("name"), "input": args})
    return blocks


def _tool_result_block(msg: dict[str, Any], param: str) -> dict[str, Any]:
    if not msg.get("tool_call_id"):
        raise bad_request("tool messages need a tool_call_id", param=f"{param}.tool_call_id")
    return {"type": "tool_result", "tool_use_id": msg["tool_call_id"],
            "content": text_of(msg.get("content"), param)}


def _messages(messages: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """System texts and alternating user/assistant messages (consecutive same roles merged)."""
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for i, msg in enumerate(messages):
        role, param = msg.get("role"), f"messages[{i}]"
        if role in ("system", "developer"):
            system.append(text_of(msg.get("content"), param))
            continue
        if role == "user":
            anth_role, blocks = "user", _user_blocks(msg.get("content"), f"{param}.content")
        elif role == "assistant":
            anth_role, blocks = "assistant", _assistant_blocks(msg, f"{param}.content")
        elif role == "tool":
            anth_role, blocks = "user", [_tool_result_block(msg, param)]
        else:
            raise bad_request(f"role '{role}' is not supported for Anthropic models", param=f"{param}.role")
        if not blocks:
            continue  # an empty turn: Anthropic rejects empty content, and it carries nothing
        if out and out[-1]["role"] == anth_role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": anth_role, "content": blocks})
    for m in out:  # tool_result blocks must open the user turn that answers a tool_use
        if m["role"] == "user":
            m["content"].sort(key=lambda b: b["type"] != "tool_result")
    if not out:
        raise bad_request("at least one user or assistant message is required", param="messages")
    if out[0]["role"] != "user":
        # The Messages API wants a user turn first; an OpenAI history may open with the assistant.
        out.insert(0, {"role": "user", "content": [{"type": "text", "text": "(conversation start)"}]})
    return system, out


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(tools):
        if tool.get("type") != "function":
            raise bad_request(f"tool type '{tool.get('type')}' is not supported for Anthropic models",
                              param=f"tools[{i}]")
        fn = tool.get("function") or {}
        spec = {"name": fn.get("name"), "input_schema": fn.get("parameters") or {"type": "object", "properties": {}}}
        if fn.get("description"):
            spec["description"] = fn["description"]
        out.append(spec)
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None:
        tc: dict[str, Any] | None = {"type": "auto"} if parallel is False else None
    elif choice == "auto":
        tc = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}
    elif choice == "required":
        tc = {"type": "any"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        tc = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    else:
        raise bad_request("unsupported tool_choice for Anthropic models", param="tool_choice")
    if tc is not None and parallel is False:
        tc["disable_parallel_tool_use"] = True
    return tc


def _json_instruction(fmt: Any) -> str | None:
    """response_format has no Messages API equivalent: best effort as a system instruction."""
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt.get("type") == "json_object":
        return JSON_INSTRUCTION
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        return f"{JSON_INSTRUCTION} It must match this JSON schema: {json.dumps(schema, separators=(',', ':'))}"
    raise bad_request(f"response_format type '{fmt.get('type')}' is not supported", param="response_format")


def request_to_anthropic(body: dict[str, Any], model: str, default_max_tokens: int) -> dict[str, Any]:
    """The Messages API body for an OpenAI chat body; raises UpstreamError(400) when it cannot."""
    _check_params(body)
    system, messages = _messages(body.get("messages") or [])
    out: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": body.get("max_completion_tokens") or body.get("max_tokens") or default_max_tokens,
    }
    instruction = _json_instruction(body.get("response_format"))
    if instruction:
        system.append(instruction)
    if system:
        out["system"] = "\n\n".join(s for s in system if s)
    for src, dst in (("temperature", "temperature"), ("top_p", "top_p"), ("top_k", "top_k"),
                     ("thinking", "thinking")):
        if body.get(src) is not None:
            out[dst] = body[src]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("tools"):
        out["tools"] = _tools(body["tools"])
        tc = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if tc:
            out["tool_choice"] = tc
    if body.get("user"):
        out["metadata"] = {"user_id": str(body["user"])}
    _apply_reasoning(body, out)
    if body.get("stream"):
        out["stream"] = True
    return out


def _apply_reasoning(body: dict[str, Any], out: dict[str, Any]) -> None:
    effort = body.get("reasoning_effort")
    if effort is None or "thinking" in out:
        return
    if effort == "none":
        return
    if effort not in THINKING_BUDGET:
        raise bad_request(f"unknown reasoning_effort '{effort}'", param="reasoning_effort")
    if out.get("temperature") not in (None, 1) or "top_k" in out:
        raise bad_request("Anthropic extended thinking (from reasoning_effort) cannot be combined with "
                          "temperature or top_k", param="reasoning_effort")
    budget = THINKING_BUDGET[effort]
    out["thinking"] = {"type": "enabled", "budget_tokens": budget}
    if out["max_tokens"] <= budget:  # the budget counts inside max_tokens: keep room for the answer
        out["max_tokens"] += budget


# ---------------------------------------------------------------- response: Anthropic -> OpenAI

def usage_from_anthropic(u: dict[str, Any] | None) -> Usage:
    u = u or {}
    cache_read = u.get("cache_read_input_tokens") or 0
    cache_write = u.get("cache_creation_input_tokens") or 0
    details = u.get("output_tokens_details") or {}
    return Usage(
        input_tokens=(u.get("input_tokens") or 0) + cache_read + cache_write,
        output_tokens=u.get("output_tokens") or 0,
        cached_tokens=cache_read,
        cache_write_tokens=cache_write,
        reasoning_tokens=details.get("thinking_tokens") or 0,
        cache_write_1h_tokens=(u.get("cache_creation") or {}).get("ephemeral_1h_input_tokens") or 0,
    )


def response_to_openai(resp: dict[str, Any], model: str) -> tuple[dict[str, Any], Usage]:
    texts, calls, thinking_blocks = [], [], 0
    for block in resp.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "tool_use":
            calls.append({"id": block["id"], "type": "function", "function": {
                "name": block["name"], "arguments": json.dumps(block.get("input") or {})}})
        elif kind in ("thinking", "redacted_thinking"):
            thinking_blocks += 1  # reasoning stays out of the answer, as at OpenAI
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None, "refusal": None}
    if calls:
        message["tool_calls"] = calls
    usage = usage_from_anthropic(resp.get("usage"))
    out = {
        "id": resp.get("id") or "chatcmpl-anthropic",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": resp.get("model") or model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": FINISH.get(resp.get("stop_reason") or "end_turn", "stop")}],
        "usage": usage_to_openai(usage),
    }
    if thinking_blocks:
        out["usage"].setdefault("completion_tokens_details", {})["thinking_blocks"] = thinking_blocks
    return out, usage


# ---------------------------------------------------------------- errors

ERROR_MAP = {  # Anthropic error type -> (status when absent, OpenAI type, OpenAI code)
    "invalid_request_error": (400, "invalid_request_error", None),
    "authentication_error": (401, "invalid_request_error", "invalid_api_key"),
    "billing_error": (402, "insufficient_quota", "insufficient_quota"),
    "permission_error": (403, "invalid_request_error", "permission_denied"),
    "not_found_error": (404, "invalid_request_error", "not_found"),
    "request_too_large": (413, "invalid_request_error", "request_too_large"),
    "rate_limit_error": (429, "rate_limit_error", "rate_limit_exceeded"),
    "api_error": (500, "server_error", None),
    "timeout_error": (504, "server_error", "timeout"),
    "overloaded_error": (529, "server_error", "overloaded"),
}


def error_from_anthropic(status: int | None, payload: Any, provider: str) -> UpstreamError:
    """An UpstreamError with an OpenAI-shaped body for an Anthropic error (HTTP or stream event)."""
    err = error_object(payload)
    etype = err.get("type") or "api_error"
    default_status, otype, code = ERROR_MAP.get(etype, (500, "server_error", None))
    status = status or default_status
    return vendor_error(provider, etype, status, err.get("message") or f"HTTP {status}", otype, code or etype)


# ---------------------------------------------------------------- streaming

class StreamTranslator:
    """Anthropic stream events -> OpenAI chunk JSON bytes (see base.ChatStream)."""

    def __init__(self, model: str, provider: str):
        self.model, self.provider = model, provider
        self.id = "chatcmpl-anthropic"
        self.created = int(time.time())
        self.usage: dict[str, Any] = {}
        self.raw_usage: list[Any] = []
        self.tool_index: dict[int, int] = {}  # Anthropic block index -> OpenAI tool_calls index
        self.finish: str | None = None
        self.stopped = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return chunk_json(self.id, self.created, self.model, 0, delta, finish)

    def feed_sse(self, event: str, data: str) -> list[bytes]:
        """One SSE event as it came off the wire; anything but a JSON object is an upstream_invalid error."""
        parsed = decode_json(data)
        if not isinstance(parsed, dict):
            raise invalid_answer(self.provider, f"a stream event that is not a JSON object ({event or 'unnamed'})",
                                 body=data.encode())
        return self.feed(event, parsed)

    def feed(self, event: str, data: dict[str, Any]) -> list[bytes]:
        kind = data.get("type") or event
        handler = getattr(self, f"_on_{kind}", None)
        return handler(data) if handler else []  # ping and future event types: nothing to say

    def _on_message_start(self, data: dict[str, Any]) -> list[bytes]:
        msg = data.get("message") or {}
        self.id = msg.get("id") or self.id
        self.model = msg.get("model") or self.model
        if msg.get("usage"):
            self.usage.update(msg["usage"])
            self.raw_usage.append(msg["usage"])
        return [self._chunk({"role": "assistant", "content": ""})]

    def _on_content_block_start(self, data: dict[str, Any]) -> list[bytes]:
        block = data.get("content_block") or {}
        if block.get("type") == "tool_use":
            ti = self.tool_index[data.get("index", 0)] = len(self.tool_index)
            return [self._chunk({"tool_calls": [{"index": ti, "id": block.get("id"), "type": "function",
                                                 "function": {"name": block.get("name"), "arguments": ""}}]})]
        if block.get("type") == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        return []

    def _on_content_block_delta(self, data: dict[str, Any]) -> list[bytes]:
        delta = data.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta":
            return [self._chunk({"content": delta.get("text", "")})]
        if kind == "input_json_delta":
            ti = self.tool_index.get(data.get("index", 0))
            if ti is None or not delta.get("partial_json"):
                return []
            return [self._chunk({"tool_calls": [{"index": ti, "function": {"arguments": delta["partial_json"]}}]})]
        return []  # thinking_delta, signature_delta: reasoning stays out of the answer

    def _on_message_delta(self, data: dict[str, Any]) -> list[bytes]:
        if data.get("usage"):
            # cumulative totals: overwrite, keeping message_start values the delta omits
            self.usage.update({k: v for k, v in data["usage"].items() if v is not None})
            self.raw_usage.append(data["usage"])
        reason = (data.get("delta") or {}).get("stop_reason")
        if reason:
            self.finish = FINISH.get(reason, "stop")
            return [self._chunk({}, self.finish)]
        return []

    def _on_message_stop(self, data: dict[str, Any]) -> list[bytes]:
        self.stopped = True
        return []

    def _on_error(self, data: dict[str, Any]) -> list[bytes]:
        raise error_from_anthropic(None, data, self.provider)

    def final_usage(self) -> Usage:
        return usage_from_anthropic(self.usage)

    def finish_chunks(self) -> list[bytes]:
        """The closing usage chunk, always sent; raises when the stream ended early."""
        if not self.stopped:
            raise invalid_answer(self.provider, "stream ended before message_stop")
        return [usage_chunk_json(self.id, self.created, self.model, self.final_usage())]
