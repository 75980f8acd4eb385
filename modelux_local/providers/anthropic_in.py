"""The Anthropic Messages API as an *input* format (for `POST /v1/messages`); Anthropic as an
upstream is anthropic_out.py.

The proxy turns an Anthropic request into an OpenAI chat body, routes it like any other call
(to any provider kind), and turns the OpenAI answer back: a message, or a stream of Anthropic
SSE events. Pure functions and one small state machine; no I/O.

Request mapping notes:
- `metadata.user_id` -> `user`; other string values in `metadata`, and `metadata["mlx:tags"]`,
  become tags (returned separately, never forwarded). A body-level `mlx:tags` stays in the
  OpenAI body, where the proxy's usual tag extraction strips it.
- `thinking` -> `reasoning_effort` (budget <= 2048 low, <= 8192 medium, else high).
- `top_k` is passed through as an extension (Anthropic and Gemini targets honour it).
- thinking blocks in the history are dropped: an OpenAI history cannot carry them.
"""
from __future__ import annotations

import json
import secrets
from typing import Any

from ..errors import BadRequest

# Anthropic-hosted features with no equivalent behind another provider: a 400 naming the field.
# inference_geo is refused (not ignored) because it is a data-residency constraint we cannot keep.
REFUSED = {"container", "mcp_servers", "context_management", "inference_geo"}
# Account, capacity and cache hints that do not change the answer: accepted and ignored.
IGNORED = {"service_tier", "anthropic_version", "anthropic_beta", "cache_control", "diagnostics", "speed",
           "workspace_id", "user_profile_id"}
KNOWN = {"model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream", "temperature",
         "top_p", "top_k", "tools", "tool_choice", "thinking", "output_config", "mlx:tags"} | IGNORED
EFFORT = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}
STOP_REASON = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
               "function_call": "tool_use", "content_filter": "refusal"}
ERROR_TYPE = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
              403: "permission_error", 404: "not_found_error", 413: "request_too_large",
              429: "rate_limit_error", 503: "overloaded_error", 529: "overloaded_error", 504: "timeout_error"}


# ---------------------------------------------------------------- request: Anthropic -> OpenAI

def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    return "\n\n".join(b.get("text", "") for b in system or [] if b.get("type") == "text")


def _image_url(source: dict[str, Any], param: str) -> str:
    if source.get("type") == "base64":
        return f"data:{source.get('media_type')};base64,{source.get('data')}"
    if source.get("type") == "url":
        return source["url"]
    raise BadRequest(f"image source type '{source.get('type')}' is not supported", param=param)


def _tool_result_text(content: Any, param: str) -> str:
    if isinstance(content, str) or content is None:
        return content or ""
    texts = []
    for block in content:
        if block.get("type") != "text":
            raise BadRequest("only text content is supported inside tool_result", param=param)
        texts.append(block.get("text", ""))
    return "\n".join(texts)


def _user_messages(content: Any, param: str) -> list[dict[str, Any]]:
    """One Anthropic user turn -> tool messages (for tool_result blocks) then one user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content or []):
        kind, p = block.get("type"), f"{param}[{j}]"
        if kind == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image":
            parts.append({"type": "image_url", "image_url": {"url": _image_url(block.get("source") or {}, p)}})
        elif kind == "tool_result":
            text = _tool_result_text(block.get("content"), p)
            if block.get("is_error"):
                text = f"[tool error] {text}"  # OpenAI tool messages have no error flag
            tools.append({"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text})
        else:
            raise BadRequest(f"content block type '{kind}' is not supported", param=p)
    out = tools
    if parts:
        out.append({"role": "user", "content": parts})
    return out


def _assistant_message(content: Any, param: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts, calls = [], []
    for j, block in enumerate(content or []):
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "tool_use":
            calls.append({"id": block.get("id"), "type": "function", "function": {
                "name": block.get("name"), "arguments": json.dumps(block.get("input") or {})}})
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            raise BadRequest(f"content block type '{kind}' is not supported", param=f"{param}[{j}]")
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        msg["tool_calls"] = calls
    return msg


def _tool_choice(choice: dict[str, Any]) -> tuple[Any, bool | None]:
    kind = choice.get("type")
    parallel = False if choice.get("disable_parallel_tool_use") else None
    if kind == "auto":
        return "auto", parallel
    if kind == "any":
        return "required", parallel
    if kind == "none":
        return "none", None
    if kind == "tool":
        return {"type": "function", "function": {"name": choice.get("name")}}, parallel
    raise BadRequest(f"tool_choice type '{kind}' is not supported", param="tool_choice")


def _reasoning_effort(thinking: Any) -> str | None:
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return None
    budget = thinking.get("budget_tokens") or 0
    return "low" if budget <= 2048 else "medium" if budget <= 8192 else "high"


def _output_config(cfg: Any, out: dict[str, Any]) -> None:
    """output_config: effort -> reasoning_effort (xhigh/max -> high); format -> response_format json_schema."""
    if not cfg:
        return
    if not isinstance(cfg, dict) or set(cfg) - {"effort", "format"}:
        raise BadRequest("output_config: only 'effort' and 'format' are supported", param="output_config")
    if cfg.get("effort"):
        if cfg["effort"] not in EFFORT:
            raise BadRequest(f"output_config.effort '{cfg['effort']}' is not supported", param="output_config.effort")
        out["reasoning_effort"] = EFFORT[cfg["effort"]]
    fmt = cfg.get("format")
    if fmt:
        if fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
            raise BadRequest("output_config.format: a {'type': 'json_schema', 'schema': {...}} is required",
                             param="output_config.format")
        out["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt["schema"]}}


def _tags(metadata: Any) -> dict[str, str]:
    if not isinstance(metadata, dict):
        return {}
    tags = {k: v for k, v in metadata.items() if k not in ("user_id", "mlx:tags") and isinstance(v, str)}
    if isinstance(metadata.get("mlx:tags"), dict):
        tags.update({str(k): str(v) for k, v in metadata["mlx:tags"].items()})
    return tags


def anthropic_request_to_openai(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """An OpenAI chat body and the tags found in `metadata`; raises BadRequest when it cannot."""
    try:
        return _to_openai(body)
    except (TypeError, AttributeError, KeyError, ValueError) as e:  # a field of the wrong JSON type
        raise BadRequest(f"request has a field of an unexpected type ({type(e).__name__}: {e})") from None


def _to_openai(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    for key in body:
        if key in REFUSED or key not in KNOWN:
            raise BadRequest(f"'{key}' is not supported by this gateway", param=key)
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        raise BadRequest("messages: at least one message is required", param="messages")
    messages: list[dict[str, Any]] = []
    if body.get("system"):
        if not isinstance(body["system"], (str, list)):
            raise BadRequest("system: a string or a list of text blocks is required", param="system")
        messages.append({"role": "system", "content": _system_text(body["system"])})
    for i, msg in enumerate(body["messages"]):
        param = f"messages.{i}.content"
        if not isinstance(msg, dict):
            raise BadRequest("each message must be an object with 'role' and 'content'", param=f"messages.{i}")
        if not isinstance(msg.get("content"), (str, list, type(None))):
            raise BadRequest("content: a string or a list of content blocks is required", param=param)
        if msg.get("role") == "user":
            messages.extend(_user_messages(msg.get("content"), param))
        elif msg.get("role") == "assistant":
            messages.append(_assistant_message(msg.get("content"), param))
        else:
            raise BadRequest(f"role '{msg.get('role')}' is not supported", param=f"messages.{i}.role")
    out: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    if body.get("max_tokens"):
        out["max_tokens"] = body["max_tokens"]
    for key in ("temperature", "top_p", "top_k", "mlx:tags"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("stop_sequences"):
        out["stop"] = list(body["stop_sequences"])
    if body.get("tools"):
        for i, t in enumerate(body["tools"]):
            if t.get("type") not in (None, "custom"):  # server tools (web search, bash...) run at Anthropic
                raise BadRequest(f"tool type '{t.get('type')}' is not supported: only client tools with an "
                                 "input_schema translate", param=f"tools.{i}.type")
        out["tools"] = [{"type": "function", "function": {
            "name": t.get("name"), "description": t.get("description", ""),
            "parameters": t.get("input_schema") or {"type": "object", "properties": {}}}} for t in body["tools"]]
        if body.get("tool_choice"):
            out["tool_choice"], parallel = _tool_choice(body["tool_choice"])
            if parallel is False:
                out["parallel_tool_calls"] = False
    effort = _reasoning_effort(body.get("thinking"))
    _output_config(body.get("output_config"), out)
    if effort and "reasoning_effort" not in out:
        out["reasoning_effort"] = effort
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and metadata.get("user_id"):
        out["user"] = str(metadata["user_id"])
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out, _tags(metadata)


# ---------------------------------------------------------------- response: OpenAI -> Anthropic

def _new_message_id() -> str:
    return "msg_" + secrets.token_hex(12)


def _usage(u: dict[str, Any] | None) -> dict[str, Any]:
    """OpenAI usage -> Anthropic usage, where input_tokens excludes cache reads and writes."""
    u = u or {}
    details = u.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") or 0
    written = details.get("cache_write_tokens") or 0
    return {"input_tokens": max(0, (u.get("prompt_tokens") or 0) - cached - written),
            "output_tokens": u.get("completion_tokens") or 0,
            "cache_read_input_tokens": cached, "cache_creation_input_tokens": written}


def _json_args(arguments: str | None) -> Any:
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return {"_raw_arguments": arguments}  # unparsable model output: kept, visibly
    return value if isinstance(value, dict) else {"value": value}


def openai_response_to_anthropic(openai_resp: dict[str, Any], requested_model: str) -> dict[str, Any]:
    choice = (openai_resp.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id") or f"toolu_{secrets.token_hex(12)}",
                        "name": fn.get("name"), "input": _json_args(fn.get("arguments"))})
    return {
        "id": _new_message_id(), "type": "message", "role": "assistant", "model": requested_model,
        "content": content,
        "stop_reason": STOP_REASON.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": _usage(openai_resp.get("usage")),
    }


def openai_error_to_anthropic(status: int, body: Any) -> dict[str, Any]:
    if isinstance(body, (bytes, str)):
        try:
            body = json.loads(body)
        except ValueError:
            body = {"error": {"message": body.decode() if isinstance(body, bytes) else body}}
    err = body.get("error") if isinstance(body, dict) else None
    message = err.get("message") if isinstance(err, dict) else None
    etype = ERROR_TYPE.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": etype, "message": message or f"HTTP {status}"}}


# ---------------------------------------------------------------- streaming

def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class OpenAIChunksToAnthropicEvents:
    """Feeds OpenAI chunk dicts in order; yields Anthropic SSE event bytes.

    Anthropic content blocks are sequential, so a text run or a tool call opens a block and
    the next different one closes it. Usage arrives last (the final usage chunk), so it is
    reported on message_delta, where Anthropic's cumulative counts live.
    """

    def __init__(self, requested_model: str):
        self.model = requested_model
        self.id = _new_message_id()
        self.started = False
        self.block = -1              # index of the open Anthropic block, -1 when none
        self.block_kind: str | None = None
        self.tool_blocks: dict[int, int] = {}  # OpenAI tool_calls index -> Anthropic block index
        self.stop_reason: str | None = None
        self.usage: dict[str, Any] | None = None

    def _start(self) -> list[bytes]:
        if self.started:
            return []
        self.started = True
        return [_event("message_start", {"type": "message_start", "message": {
            "id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0}}})]

    def _close_block(self) -> list[bytes]:
        if self.block_kind is None:
            return []
        self.block_kind = None
        return [_event("content_block_stop", {"type": "content_block_stop", "index": self.block})]

    def _open_block(self, kind: str, block: dict[str, Any]) -> list[bytes]:
        out = self._close_block()
        self.block += 1
        self.block_kind = kind
        out.append(_event("content_block_start", {"type": "content_block_start", "index": self.block,
                                                  "content_block": block}))
        return out

    def feed(self, chunk: dict[str, Any]) -> list[bytes]:
        out = self._start()
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue  # Anthropic messages have one candidate
            delta = choice.get("delta") or {}
            if delta.get("content"):
                if self.block_kind != "text":
                    out += self._open_block("text", {"type": "text", "text": ""})
                out.append(_event("content_block_delta", {"type": "content_block_delta", "index": self.block,
                                                          "delta": {"type": "text_delta", "text": delta["content"]}}))
            for call in delta.get("tool_calls") or []:
                out += self._tool_delta(call)
            if choice.get("finish_reason"):
                self.stop_reason = STOP_REASON.get(choice["finish_reason"], "end_turn")
        return out

    def _tool_delta(self, call: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        index = call.get("index", 0)
        fn = call.get("function") or {}
        if index not in self.tool_blocks:
            out += self._open_block("tool", {"type": "tool_use", "id": call.get("id") or f"toolu_{secrets.token_hex(12)}",
                                             "name": fn.get("name") or "", "input": {}})
            self.tool_blocks[index] = self.block
        if fn.get("arguments"):
            out.append(_event("content_block_delta", {
                "type": "content_block_delta", "index": self.tool_blocks[index],
                "delta": {"type": "input_json_delta", "partial_json": fn["arguments"]}}))
        return out

    def finish(self, usage: dict[str, Any] | None = None) -> list[bytes]:
        """Closes the message: message_delta (stop_reason, usage) and message_stop."""
        out = self._start() + self._close_block()
        u = _usage(usage or self.usage)
        out.append(_event("message_delta", {"type": "message_delta",
                                            "delta": {"stop_reason": self.stop_reason or "end_turn",
                                                      "stop_sequence": None},
                                            "usage": u}))
        out.append(_event("message_stop", {"type": "message_stop"}))
        return out

    def error(self, status: int, body: Any) -> bytes:
        """An `error` event for a failure after the stream started."""
        return _event("error", openai_error_to_anthropic(status, body))
