"""A fake Anthropic Messages API: a real aiohttp server on 127.0.0.1 in a background thread.

It validates every request against the documented shape and answers 400 with Anthropic's
error body when a request is wrong, so translation bugs fail tests:

    with FakeAnthropic() as up:                   # free port; up.base_url has no /v1
        up.enqueue(status=529)                    # overloaded_error
        up.enqueue(text="hi", cache_read=100)
        up.requests[-1].json["messages"]

enqueue() fields (all optional; FIFO, one per POST; `n_times=` repeats):
    status, error_type, message   an error answer (type defaults from the status)
    delay_s                       sleep before answering (before the headers, for streams)
    text, tool_use                the answer; tool_use = [{"name", "input"(dict)}]
    thinking                      a thinking block before the answer
    input_tokens, output_tokens, cache_read, cache_write, stop_reason
    stream_error_after            streams: an `event: error` (overloaded) after that many events
    disconnect                    close the connection without an answer
    body / raw_sse                answer with this JSON object / these SSE bytes, as is
    cache_write_1h                of cache_write, how many went to the one-hour cache
    server_tool                   a server tool call and its result before the answer (e.g. "web_search")

`FakeAnthropic(prompt_cache=True)` simulates prompt caching: a prefix (tools, system, messages)
up to a `cache_control` marker, of at least MIN_CACHE_TOKENS, is written on first sight and read
after (usage says so), unless the reply scripts cache_read / cache_write itself.
`POST /v1/messages/count_tokens` answers the fake's own count (`count_tokens(body)`).

Strict where pass-through matters: a thinking block's signature must be one the fake issued for
that text; with thinking enabled, an assistant turn that calls a tool must start with its thinking
block; `context_management` needs the `context-management-2025-06-27` beta; server tools
(`type` other than custom) need no input_schema.

Without a scripted answer: when tools are offered (and tool_choice is not none) and the
last user turn is not a tool result, it calls the first tool (or the forced one) with inputs
built from the schema; otherwise it answers "echo: <last user text>" (or "tool said: ..."
after tool results).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ._threaded import ThreadedFake

TOP_LEVEL = {"model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream",
             "temperature", "top_p", "top_k", "tools", "tool_choice", "thinking", "service_tier",
             "context_management", "container"}
BLOCKS = {"user": {"text", "image", "tool_result", "document", "search_result"},
          "assistant": {"text", "tool_use", "thinking", "redacted_thinking", "server_tool_use",
                        "web_search_tool_result"}}
BETA_FIELDS = {"context_management": "context-management-2025-06-27"}
MIN_CACHE_TOKENS = 1024
MEDIA_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp"}
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
STATUS_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                500: "api_error", 529: "overloaded_error"}


@dataclass
class Reply:
    status: int = 200
    error_type: str | None = None
    message: str | None = None
    delay_s: float = 0.0
    text: str | None = None
    tool_use: list[dict[str, Any]] | None = None
    thinking: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read: int = 0
    cache_write: int = 0
    stop_reason: str | None = None
    stream_error_after: int | None = None
    disconnect: bool = False
    body: Any = None
    raw_sse: bytes | None = None
    chunk_delay_s: float = 0.0
    cache_write_1h: int = 0
    server_tool: str | None = None


def signature_for(thinking: str) -> str:
    """The signature the fake puts on a thinking block (and checks when the block comes back)."""
    return "sig_" + hashlib.sha256(thinking.encode()).hexdigest()[:32]


def count_tokens(body: dict[str, Any]) -> int:
    """The fake's exact count: about 3 characters a token, plus a fixed overhead (not the gateway's estimate)."""
    return len(json.dumps([body.get("system"), body.get("tools"), body["messages"]])) // 3 + 11


class Invalid(Exception):
    """A request that breaks the documented shape: answered 400 invalid_request_error."""


def sample_value(schema: dict[str, Any]) -> Any:
    """A value that fits a (simple) JSON schema: what the fake model 'decides' to pass a tool."""
    kind = schema.get("type")
    kind = kind[0] if isinstance(kind, list) else kind
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "object" or "properties" in schema:
        return {k: sample_value(v) for k, v in (schema.get("properties") or {}).items()
                if k in (schema.get("required") or list(schema.get("properties") or {}))}
    return {"string": "sample", "integer": 1, "number": 1.5, "boolean": True, "array": []}.get(kind, "sample")


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    out = []
    for block in content or []:
        if block.get("type") == "text":
            out.append(block.get("text", ""))
        elif block.get("type") == "tool_result":
            out.append(text_of(block.get("content")))
    return " ".join(out)


# ---------------------------------------------------------------- validation (the documented shape)

def _validate_block(block: Any, role: str, where: str) -> None:
    if not isinstance(block, dict) or block.get("type") not in BLOCKS[role]:
        raise Invalid(f"{where}: Input tag '{block.get('type') if isinstance(block, dict) else block}' "
                      f"is not allowed in a {role} message")
    kind = block["type"]
    if kind == "text" and (not isinstance(block.get("text"), str) or not block["text"]):
        raise Invalid(f"{where}: text content blocks must be non-empty")
    if kind == "image":
        src = block.get("source") or {}
        if src.get("type") == "base64":
            if src.get("media_type") not in MEDIA_TYPES or not src.get("data"):
                raise Invalid(f"{where}.source: invalid base64 image source")
        elif src.get("type") != "url" or not str(src.get("url", "")).startswith(("http://", "https://")):
            raise Invalid(f"{where}.source: invalid image source")
    if kind == "tool_use" and not (block.get("id") and block.get("name") and isinstance(block.get("input"), dict)):
        raise Invalid(f"{where}: tool_use needs id, name and an input object")
    if kind == "tool_result" and not block.get("tool_use_id"):
        raise Invalid(f"{where}.tool_use_id: Field required")
    if kind == "thinking" and block.get("signature") != signature_for(str(block.get("thinking", ""))):
        raise Invalid(f"{where}: Invalid `signature` in `thinking` block")


def _validate_thinking_turns(body: dict[str, Any]) -> None:
    """With thinking on, the last assistant turn that calls a tool must open with its thinking block."""
    if (body.get("thinking") or {}).get("type") != "enabled":
        return
    for i, msg in enumerate(body["messages"]):
        blocks = msg["content"] if isinstance(msg["content"], list) else []
        if msg["role"] != "assistant" or not any(b.get("type") == "tool_use" for b in blocks):
            continue
        if i == len(body["messages"]) - 2 and blocks[0].get("type") not in ("thinking", "redacted_thinking"):
            raise Invalid(f"messages.{i}.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
                          f"`{blocks[0].get('type')}`. When `thinking` is enabled, a final `assistant` message "
                          "must start with a thinking block.")


def _validate_tool_pairing(messages: list[dict[str, Any]]) -> None:
    """Every tool_use is answered by a tool_result at the start of the very next user turn."""
    for i, msg in enumerate(messages):
        blocks = msg["content"] if isinstance(msg["content"], list) else []
        results = [b for b in blocks if b.get("type") == "tool_result"]
        if msg["role"] == "user" and results:
            prev = messages[i - 1]["content"] if i else []
            uses = {b["id"] for b in prev if isinstance(prev, list) and b.get("type") == "tool_use"}
            for b in results:
                if b["tool_use_id"] not in uses:
                    raise Invalid(f"messages.{i}.content: unexpected `tool_use_id` found in `tool_result` blocks: "
                                  f"{b['tool_use_id']}. Each `tool_result` block must have a corresponding "
                                  "`tool_use` block in the previous message.")
            if blocks[:len(results)] != results:
                raise Invalid(f"messages.{i}.content: tool_result blocks must come first")
        if msg["role"] == "assistant":
            uses = [b["id"] for b in blocks if b.get("type") == "tool_use"]
            if uses and i + 1 < len(messages):
                nxt = messages[i + 1]["content"]
                answered = {b.get("tool_use_id") for b in nxt if isinstance(nxt, list)}
                missing = [u for u in uses if u not in answered]
                if missing:
                    raise Invalid(f"messages.{i + 1}: `tool_use` ids were found without `tool_result` blocks "
                                  f"immediately after: {', '.join(missing)}")


def _validate_tools(body: dict[str, Any]) -> None:
    names = set()
    for i, tool in enumerate(body.get("tools") or []):
        if not TOOL_NAME.match(str(tool.get("name", ""))):
            raise Invalid(f"tools.{i}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'")
        if tool.get("type") not in (None, "custom"):  # a server tool (web_search_20250305, ...)
            names.add(tool["name"])
            continue
        schema = tool.get("input_schema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            raise Invalid(f"tools.{i}.input_schema: Input should be an object schema with type 'object'")
        extra = set(tool) - {"name", "description", "input_schema", "cache_control", "type"}
        if extra:
            raise Invalid(f"tools.{i}.{sorted(extra)[0]}: Extra inputs are not permitted")
        names.add(tool["name"])
    tc = body.get("tool_choice")
    if tc is not None:
        if tc.get("type") not in ("auto", "any", "tool", "none"):
            raise Invalid("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
        if tc["type"] == "tool" and tc.get("name") not in names:
            raise Invalid(f"tool_choice.name: tool '{tc.get('name')}' not found in tools")


def validate(headers: dict[str, str], body: Any) -> None:
    # the API takes x-api-key; newer SDKs (anthropic>=2) send `authorization: Bearer` instead
    if not headers.get("x-api-key") and not headers.get("authorization", "").startswith("Bearer "):
        raise PermissionError("x-api-key header is required")
    if not headers.get("anthropic-version"):
        raise Invalid("anthropic-version: header is required")
    if not isinstance(body, dict):
        raise Invalid("the request body is not valid JSON")
    extra = set(body) - TOP_LEVEL
    if extra:
        raise Invalid(f"{sorted(extra)[0]}: Extra inputs are not permitted")
    betas = {b.strip() for b in headers.get("anthropic-beta", "").split(",")}
    for key, beta in BETA_FIELDS.items():
        if key in body and beta not in betas:
            raise Invalid(f"{key}: Extra inputs are not permitted (needs the anthropic-beta header {beta})")
    for key in ("model", "max_tokens", "messages"):
        if key not in body:
            raise Invalid(f"{key}: Field required")
    if not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
        raise Invalid("max_tokens: Input should be a positive integer")
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        for j, b in enumerate(system):
            if b.get("type") != "text" or not b.get("text"):
                raise Invalid(f"system.{j}: system blocks must be non-empty text blocks")
    if "temperature" in body and not 0 <= body["temperature"] <= 1:
        raise Invalid("temperature: Input should be less than or equal to 1")
    if set(body.get("metadata") or {}) - {"user_id"}:
        raise Invalid("metadata: Extra inputs are not permitted")
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        raise Invalid("messages: at least one message is required")
    for i, msg in enumerate(messages):
        role = msg.get("role")
        if role not in ("user", "assistant"):
            raise Invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if role != ("user" if i % 2 == 0 else "assistant"):
            raise Invalid("messages: roles must alternate between \"user\" and \"assistant\", starting with user")
        content = msg.get("content")
        if isinstance(content, str):
            if not content:
                raise Invalid(f"messages.{i}: content must be non-empty")
            continue
        if not isinstance(content, list) or not content:
            raise Invalid(f"messages.{i}: all messages must have non-empty content")
        for j, block in enumerate(content):
            _validate_block(block, role, f"messages.{i}.content.{j}")
    _validate_tool_pairing(messages)
    _validate_tools(body)
    _validate_thinking_turns(body)


# ---------------------------------------------------------------- the fake

class FakeAnthropic(ThreadedFake):
    name = "fake-anthropic"
    reply_type = Reply

    def __init__(self, *args: Any, prompt_cache: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.prompt_cache = prompt_cache
        self.cache: set[str] = set()  # hashes of the prefixes written to the (simulated) prompt cache

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)

    async def _count_tokens(self, request: web.Request) -> web.Response:
        _, reply, body = await self.take(request)
        if reply.status >= 400:
            return web.json_response(self.error_body(reply.status, reply.error_type, reply.message),
                                     status=reply.status)
        try:
            validate({k.lower(): v for k, v in request.headers.items()},
                     {"max_tokens": 1, **body} if isinstance(body, dict) else body)
        except PermissionError as exc:
            return web.json_response(self.error_body(401, "authentication_error", str(exc)), status=401)
        except Invalid as exc:
            return web.json_response(self.error_body(400, "invalid_request_error", str(exc)), status=400)
        return web.json_response({"input_tokens": count_tokens(body)})

    @staticmethod
    def error_body(status: int, error_type: str | None = None, message: str | None = None) -> dict[str, Any]:
        etype = error_type or STATUS_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return {"type": "error", "error": {"type": etype, "message": message or f"fake: scripted {status}"},
                "request_id": "req_" + uuid.uuid4().hex[:24]}

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        rec, reply, body = await self.take(request)
        if reply.disconnect:
            request.transport.close()
            return web.Response()
        if reply.status >= 400:
            return web.json_response(self.error_body(reply.status, reply.error_type, reply.message),
                                     status=reply.status)
        try:
            validate({k.lower(): v for k, v in request.headers.items()}, body)
        except PermissionError as exc:
            return web.json_response(self.error_body(401, "authentication_error", str(exc)), status=401)
        except Invalid as exc:
            return web.json_response(self.error_body(400, "invalid_request_error", str(exc)), status=400)
        if reply.raw_sse is not None:
            return web.Response(body=reply.raw_sse, content_type="text/event-stream")
        if reply.body is not None:
            return web.json_response(reply.body)
        message = self._answer(body, reply)
        if body.get("stream"):
            return await self._stream(request, message, reply, rec)
        return web.json_response(message)

    def _answer(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        messages = body["messages"]
        last = messages[-1]
        last_blocks = last["content"] if isinstance(last["content"], list) else []
        after_tool = any(b.get("type") == "tool_result" for b in last_blocks)
        content: list[dict[str, Any]] = []
        if reply.thinking:
            content.append({"type": "thinking", "thinking": reply.thinking, "signature": signature_for(reply.thinking)})
        if reply.server_tool:
            tid = f"srvtoolu_{uuid.uuid4().hex[:20]}"
            content.append({"type": "server_tool_use", "id": tid, "name": reply.server_tool,
                            "input": {"query": text_of(last["content"])}})
            content.append({"type": f"{reply.server_tool}_tool_result", "tool_use_id": tid,
                            "content": [{"type": "web_search_result", "url": "https://example.com/",
                                         "title": "Example", "encrypted_content": "enc", "page_age": None}]})
        uses = reply.tool_use
        choice = body.get("tool_choice") or {"type": "auto"}
        custom = [t for t in body.get("tools") or [] if "input_schema" in t]
        if uses is None and custom and not after_tool and choice["type"] != "none" and not reply.server_tool:
            tool = next((t for t in custom if t["name"] == choice.get("name")), custom[0])
            uses = [{"name": tool["name"], "input": sample_value(tool["input_schema"])}]
        if uses:
            if reply.text:
                content.append({"type": "text", "text": reply.text})
            for k, u in enumerate(uses):
                content.append({"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:20]}{k}",
                                "name": u["name"], "input": u.get("input", {})})
        else:
            text = reply.text
            if text is None:
                text = f"tool said: {text_of(last['content'])}" if after_tool else f"echo: {text_of(last['content'])}"
            content.append({"type": "text", "text": text})
        prompt = json.dumps(body.get("system", "")) + json.dumps(messages)
        produced = json.dumps(content)
        input_tokens = reply.input_tokens or len(prompt) // 4 + 1
        cache_read, cache_write = reply.cache_read, reply.cache_write
        if self.prompt_cache and reply.input_tokens is None and not (cache_read or cache_write):
            cache_read, cache_write, input_tokens = self._cache(body)
        usage = {"input_tokens": input_tokens, "output_tokens": reply.output_tokens or len(produced) // 4 + 1,
                 "cache_read_input_tokens": cache_read, "cache_creation_input_tokens": cache_write}
        if reply.cache_write_1h:  # only when scripted: older tests compare the usage object whole
            usage["cache_creation"] = {"ephemeral_5m_input_tokens": cache_write - reply.cache_write_1h,
                                       "ephemeral_1h_input_tokens": reply.cache_write_1h}
        return {
            "id": "msg_" + uuid.uuid4().hex[:24], "type": "message", "role": "assistant",
            "model": body["model"], "content": content,
            "stop_reason": reply.stop_reason or ("tool_use" if uses else "end_turn"), "stop_sequence": None,
            "usage": usage,
        }

    def _cache(self, body: dict[str, Any]) -> tuple[int, int, int]:
        """(cache read, cache write, uncached input) tokens, with prefixes cached at each marker."""
        system = body.get("system")
        parts = list(body.get("tools") or []) + ([{"type": "text", "text": system}] if isinstance(system, str)
                                                 else list(system or []))
        for m in body["messages"]:
            parts += m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}]
        sizes = [len(json.dumps(p, sort_keys=True)) // 4 + 1 for p in parts]
        total = sum(sizes)
        marks = [i for i, p in enumerate(parts) if "cache_control" in p]
        key = lambda i: hashlib.sha256(json.dumps(parts[:i + 1], sort_keys=True).encode()).hexdigest()  # noqa: E731
        read = max((sum(sizes[:i + 1]) for i in marks if key(i) in self.cache), default=0)
        write = 0
        if marks:
            last = marks[-1]
            prefix = sum(sizes[:last + 1])
            if prefix >= MIN_CACHE_TOKENS and key(last) not in self.cache:
                self.cache.add(key(last))
                write = prefix - read
        return read, write, total - read - write

    @staticmethod
    def stream_events(message: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """The documented event sequence for a message (text in words, tool input in fragments)."""
        usage = message["usage"]
        start = {**message, "content": [], "stop_reason": None,
                 "usage": {**usage, "output_tokens": 1}}
        events: list[tuple[str, dict[str, Any]]] = [("message_start", {"type": "message_start", "message": start}),
                                                    ("ping", {"type": "ping"})]
        for i, block in enumerate(message["content"]):
            kind = block["type"]
            if kind == "text":
                events.append(("content_block_start", {"type": "content_block_start", "index": i,
                                                       "content_block": {"type": "text", "text": ""}}))
                deltas = [{"type": "text_delta", "text": w} for w in re.findall(r"\s*\S+", block["text"])]
            elif kind == "thinking":
                events.append(("content_block_start", {"type": "content_block_start", "index": i,
                                                       "content_block": {"type": "thinking", "thinking": ""}}))
                deltas = [{"type": "thinking_delta", "thinking": block["thinking"]},
                          {"type": "signature_delta", "signature": block["signature"]}]
            elif kind.endswith("_tool_result"):  # a server tool's result arrives whole
                events.append(("content_block_start", {"type": "content_block_start", "index": i,
                                                       "content_block": block}))
                deltas = []
            else:
                events.append(("content_block_start", {"type": "content_block_start", "index": i,
                                                       "content_block": {**block, "input": {}}}))
                args = json.dumps(block["input"])
                deltas = [{"type": "input_json_delta", "partial_json": ""}] + [
                    {"type": "input_json_delta", "partial_json": args[j:j + 7]} for j in range(0, len(args), 7)]
            events += [("content_block_delta", {"type": "content_block_delta", "index": i, "delta": d})
                       for d in deltas]
            events.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
        events.append(("message_delta", {"type": "message_delta",
                                         "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                                         "usage": {"output_tokens": usage["output_tokens"]}}))
        events.append(("message_stop", {"type": "message_stop"}))
        return events

    async def _stream(self, request: web.Request, message: dict[str, Any], reply: Reply, rec) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream; charset=utf-8",
                                           "cache-control": "no-cache"})
        await resp.prepare(request)
        for k, (name, data) in enumerate(self.stream_events(message)):
            if reply.stream_error_after is not None and k >= reply.stream_error_after:
                name, data = "error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
                await resp.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
                break
            if k and reply.chunk_delay_s:
                await asyncio.sleep(reply.chunk_delay_s)
            try:
                await resp.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
            except ConnectionError:  # the client (the provider under test) closed the stream
                rec.client_gone_at = time.monotonic()
                return resp
        await resp.write_eof()
        return resp
