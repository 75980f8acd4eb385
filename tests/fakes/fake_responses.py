"""A strict fake of OpenAI's Responses API (POST/GET /v1/responses): a real aiohttp server.

For `responses = "native"` providers. Strict: a top-level field the openai SDK's
`ResponseCreateParams` does not know (such as `mlx:tags`), `mlx:tags` inside metadata, a
non-string metadata value, or an unknown `previous_response_id` get a 400 in OpenAI's error
shape. It keeps its own conversation state, so `previous_response_id` chains at the upstream.

    with FakeResponses() as up:               # up.base_url ends in /v1
        up.enqueue(text="hi", input_tokens=50, cached_tokens=20, reasoning_tokens=7)
        up.requests[-1].json

enqueue() fields: status (an error answer), text, tool_calls [{"name", "arguments"}],
input_tokens, output_tokens, cached_tokens, reasoning_tokens, delay_s. Without one: a function
tool is called when offered and the input does not end with a function_call_output; a hosted
`web_search` tool yields a `web_search_call` item before the message; otherwise "echo: <text>".
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from openai.types.responses.response_create_params import ResponseCreateParamsBase

from ._threaded import ThreadedFake

KNOWN = set(ResponseCreateParamsBase.__annotations__) | {"stream"}


@dataclass
class Reply:
    status: int = 200
    delay_s: float | None = None
    text: str | None = None
    tool_calls: list[dict[str, str]] | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int = 0
    reasoning_tokens: int = 0


def _error(status: int, message: str, param: str | None = None, code: str | None = None) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "invalid_request_error", "param": param,
                                        "code": code}}, status=status)


def _text_of(item: Any) -> str:
    if isinstance(item, str):
        return item
    if not isinstance(item, dict):
        return ""
    content = item.get("content") if "content" in item else item.get("output")
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content or [] if isinstance(p, dict))


class FakeResponses(ThreadedFake):
    name = "fake-responses"
    reply_type = Reply

    def __init__(self, **kw: Any):
        super().__init__(**kw)
        self.store: dict[str, dict[str, Any]] = {}

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/responses", self._create)
        app.router.add_get("/v1/responses/{rid}", self._get)

    def _check(self, body: Any) -> web.Response | None:
        if not isinstance(body, dict):
            return _error(400, "body must be a JSON object")
        for key in body:
            if key not in KNOWN:
                return _error(400, f"Unknown parameter: '{key}'.", key, "unknown_parameter")
        meta = body.get("metadata") or {}
        for k, v in meta.items():
            if not isinstance(v, str) or k.startswith("mlx:"):
                return _error(400, f"Invalid metadata value for '{k}'.", f"metadata.{k}")
        if body.get("previous_response_id") and body["previous_response_id"] not in self.store:
            return _error(400, f"Previous response with id '{body['previous_response_id']}' not found.",
                          "previous_response_id", "previous_response_not_found")
        return None

    async def _get(self, request: web.Request) -> web.Response:
        found = self.store.get(request.match_info["rid"])
        return web.json_response(found) if found else _error(404, "not found")

    def _output(self, body: dict[str, Any], reply: Reply) -> list[dict[str, Any]]:
        items = body.get("input")
        items = [{"role": "user", "content": items}] if isinstance(items, str) else items or []
        tools = body.get("tools") or []
        functions = [t for t in tools if t.get("type") == "function"]
        out: list[dict[str, Any]] = []
        if any(t.get("type", "").startswith("web_search") for t in tools):
            out.append({"id": f"ws_{uuid.uuid4().hex}", "type": "web_search_call", "status": "completed",
                        "action": {"type": "search", "query": _text_of(items[-1])}})
        calls = reply.tool_calls
        last_is_result = bool(items) and isinstance(items[-1], dict) and items[-1].get("type") == "function_call_output"
        if calls is None and functions and not last_is_result and reply.text is None:
            calls = [{"name": functions[0]["name"], "arguments": json.dumps({"city": "Paris"})}]
        for c in calls or []:
            out.append({"id": f"fc_{uuid.uuid4().hex}", "type": "function_call", "status": "completed",
                        "call_id": f"call_{uuid.uuid4().hex[:20]}", "name": c["name"],
                        "arguments": c.get("arguments", "{}")})
        if not calls:
            text = reply.text if reply.text is not None else f"echo: {_text_of(items[-1]) if items else ''}"
            out.append({"id": f"msg_{uuid.uuid4().hex}", "type": "message", "status": "completed",
                        "role": "assistant", "content": [{"type": "output_text", "text": text, "annotations": [],
                                                          "logprobs": []}]})
        return out

    def _response(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        output = self._output(body, reply)
        tin = reply.input_tokens if reply.input_tokens is not None else 20
        tout = reply.output_tokens if reply.output_tokens is not None else 10
        return {"id": f"resp_{uuid.uuid4().hex}", "object": "response", "created_at": int(time.time()),
                "status": "completed", "error": None, "incomplete_details": None,
                "instructions": body.get("instructions"), "model": body.get("model"), "output": output,
                "parallel_tool_calls": True, "previous_response_id": body.get("previous_response_id"),
                "temperature": 1.0, "tool_choice": body.get("tool_choice") or "auto", "tools": body.get("tools") or [],
                "top_p": 1.0, "metadata": body.get("metadata") or {}, "store": body.get("store", True),
                "usage": {"input_tokens": tin,
                          "input_tokens_details": {"cached_tokens": reply.cached_tokens, "cache_write_tokens": 0},
                          "output_tokens": tout,
                          "output_tokens_details": {"reasoning_tokens": reply.reasoning_tokens},
                          "total_tokens": tin + tout}}

    async def _create(self, request: web.Request) -> web.StreamResponse:
        rec, reply, body = await self.take(request)
        if (refused := self._check(body)) is not None:
            return refused
        if reply.status != 200:
            return _error(reply.status, f"scripted error {reply.status}")
        resp = self._response(body, reply)
        self.store[resp["id"]] = resp
        if not body.get("stream"):
            return web.json_response(resp)
        out = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await out.prepare(request)
        for event in self.events(resp):
            await out.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
        await out.write_eof()
        return out

    @staticmethod
    def events(resp: dict[str, Any]) -> list[dict[str, Any]]:
        """The documented event sequence for a finished response (text in two deltas)."""
        seq = iter(range(10_000))
        start = {**resp, "status": "in_progress", "output": [], "usage": None}
        evs = [{"type": "response.created", "response": start}, {"type": "response.in_progress", "response": start}]
        for i, item in enumerate(resp["output"]):
            added = {**item, "status": "in_progress"}
            if item["type"] == "function_call":
                added["arguments"] = ""
            evs.append({"type": "response.output_item.added", "output_index": i, "item": added})
            if item["type"] == "message":
                text = item["content"][0]["text"]
                ids = {"item_id": item["id"], "output_index": i, "content_index": 0}
                evs.append({"type": "response.content_part.added", **ids,
                            "part": {"type": "output_text", "text": "", "annotations": []}})
                half = len(text) // 2
                for piece in (text[:half], text[half:]):
                    evs.append({"type": "response.output_text.delta", **ids, "delta": piece, "logprobs": []})
                evs.append({"type": "response.output_text.done", **ids, "text": text, "logprobs": []})
                evs.append({"type": "response.content_part.done", **ids, "part": item["content"][0]})
            elif item["type"] == "function_call":
                evs.append({"type": "response.function_call_arguments.delta", "item_id": item["id"],
                            "output_index": i, "delta": item["arguments"]})
                evs.append({"type": "response.function_call_arguments.done", "item_id": item["id"],
                            "output_index": i, "arguments": item["arguments"], "name": item["name"]})
            evs.append({"type": "response.output_item.done", "output_index": i, "item": item})
        evs.append({"type": "response.completed", "response": resp})
        return [{**e, "sequence_number": next(seq)} for e in evs]
