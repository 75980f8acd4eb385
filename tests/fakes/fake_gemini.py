"""A fake Gemini API (generativelanguage v1beta): a real aiohttp server in a background thread.

Validates each request against the documented shape (x-goog-api-key; contents with roles
user/model and non-empty parts of one known kind; functionResponse answering the previous
model turn's functionCalls one for one; function schemas limited to the OpenAPI subset; known
generationConfig keys) and answers 400 INVALID_ARGUMENT otherwise.

    with FakeGemini() as up:                      # up.base_url has no /v1beta
        up.enqueue(status=429)                    # RESOURCE_EXHAUSTED
        up.enqueue(block_reason="SAFETY")         # promptFeedback, no candidates
        up.enqueue(text="hi", cached=50, thoughts=7)

Without a scripted answer: a functionCall of the first (or only allowed) tool when tools are
offered, toolConfig mode is not NONE and the last turn holds no functionResponse; otherwise
"echo: <last user text>" (or "tool said: ..." after function responses).
"""
from __future__ import annotations

import asyncio
import json
import math
import re
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ._threaded import ThreadedFake
from .fake_anthropic import sample_value

TOP_LEVEL = {"contents", "systemInstruction", "generationConfig", "tools", "toolConfig", "safetySettings",
             "cachedContent"}
PART_KINDS = {"text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
              "codeExecutionResult"}
PART_EXTRAS = {"thought", "thoughtSignature"}
GENERATION = {"temperature", "topP", "topK", "maxOutputTokens", "stopSequences", "candidateCount",
              "responseMimeType", "responseSchema", "responseJsonSchema", "presencePenalty", "frequencyPenalty",
              "seed", "thinkingConfig", "responseLogprobs", "logprobs"}
SCHEMA_KEYS = {"type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems", "properties",
               "required", "minProperties", "maxProperties", "minLength", "maxLength", "pattern", "example",
               "anyOf", "propertyOrdering", "default", "items", "minimum", "maximum"}
STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


@dataclass
class GeminiReply:
    status: int = 200
    message: str | None = None
    delay_s: float = 0.0
    text: str | None = None
    function_calls: list[dict[str, Any]] | None = None   # [{"name", "args"}]
    finish_reason: str | None = None
    block_reason: str | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    cached: int = 0
    thoughts: int = 0
    stream_error_after: int | None = None
    disconnect: bool = False
    body: Any = None
    raw_sse: bytes | None = None      # streams: answer with these SSE bytes, as is


class Invalid(Exception):
    pass


def _validate_schema(schema: Any, where: str) -> None:
    if not isinstance(schema, dict):
        return
    for key, value in schema.items():
        if key not in SCHEMA_KEYS:
            raise Invalid(f"Invalid JSON payload received. Unknown name \"{key}\" at '{where}': Cannot find field.")
        if key == "properties":
            if schema.get("type") in ("object", "OBJECT") and not value:
                raise Invalid(f"{where}.properties: should be non-empty for OBJECT type")
            for name, sub in value.items():
                _validate_schema(sub, f"{where}.properties[{name}].value")
        elif key == "items":
            _validate_schema(value, f"{where}.items")
        elif key == "anyOf":
            for k, sub in enumerate(value):
                _validate_schema(sub, f"{where}.any_of[{k}]")


def _validate_contents(contents: Any) -> None:
    if not isinstance(contents, list) or not contents:
        raise Invalid("* GenerateContentRequest.contents: contents is not specified")
    for i, content in enumerate(contents):
        if content.get("role") not in ("user", "model"):
            raise Invalid(f"Please use a valid role: user, model. (contents[{i}].role={content.get('role')!r})")
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            raise Invalid(f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.")
        for j, part in enumerate(parts):
            kinds = [k for k in part if k in PART_KINDS]
            unknown = set(part) - PART_KINDS - PART_EXTRAS
            if unknown:
                raise Invalid(f"Invalid JSON payload received. Unknown name \"{sorted(unknown)[0]}\" at "
                              f"'contents[{i}].parts[{j}]': Cannot find field.")
            if len(kinds) != 1:
                raise Invalid(f"contents[{i}].parts[{j}]: a part must hold exactly one kind of data")
            if "text" in part and not isinstance(part["text"], str):
                raise Invalid(f"contents[{i}].parts[{j}].text: must be a string")
            if "functionResponse" in part and not isinstance(part["functionResponse"].get("response"), dict):
                raise Invalid(f"contents[{i}].parts[{j}].function_response.response: must be an object")
        responses = [p["functionResponse"]["name"] for p in parts if "functionResponse" in p]
        if responses:
            prev = contents[i - 1] if i else {}
            calls = [p["functionCall"]["name"] for p in prev.get("parts", []) if "functionCall" in p]
            if prev.get("role") != "model" or not calls:
                raise Invalid("Please ensure that function response turn comes immediately after a function call turn.")
            if sorted(calls) != sorted(responses):
                raise Invalid("Please ensure that the number of function response parts is equal to the number of "
                              "function call parts of the function call turn.")


def validate(headers: dict[str, str], body: Any) -> None:
    if not headers.get("x-goog-api-key"):
        raise PermissionError("Method doesn't allow unregistered callers. Please use an API Key.")
    if not isinstance(body, dict):
        raise Invalid("Invalid JSON payload received.")
    unknown = set(body) - TOP_LEVEL
    if unknown:
        raise Invalid(f"Invalid JSON payload received. Unknown name \"{sorted(unknown)[0]}\": Cannot find field.")
    _validate_contents(body.get("contents"))
    si = body.get("systemInstruction")
    if si is not None and (not si.get("parts") or not all(isinstance(p.get("text"), str) for p in si["parts"])):
        raise Invalid("systemInstruction: parts must be text")
    gen = body.get("generationConfig") or {}
    unknown = set(gen) - GENERATION
    if unknown:
        raise Invalid(f"Invalid JSON payload received. Unknown name \"{sorted(unknown)[0]}\" at 'generation_config'")
    if "responseSchema" in gen:
        _validate_schema(gen["responseSchema"], "generation_config.response_schema")
    names = []
    for t, tool in enumerate(body.get("tools") or []):
        for d, decl in enumerate(tool.get("functionDeclarations") or []):
            if not re.match(r"^[a-zA-Z_][a-zA-Z0-9_.-]{0,63}$", str(decl.get("name", ""))):
                raise Invalid(f"tools[{t}].function_declarations[{d}].name: Invalid function name.")
            _validate_schema(decl.get("parameters"), f"tools[{t}].function_declarations[{d}].parameters")
            names.append(decl["name"])
    fcc = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    if fcc and fcc.get("mode") not in ("AUTO", "ANY", "NONE", "VALIDATED"):
        raise Invalid("tool_config.function_calling_config.mode: invalid value")
    for name in fcc.get("allowedFunctionNames") or []:
        if name not in names:
            raise Invalid(f"allowed_function_names: function '{name}' is not declared")


class FakeGemini(ThreadedFake):
    name = "fake-gemini"
    reply_type = GeminiReply

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1beta/models/{call}", self._dispatch)

    @staticmethod
    def error_body(status: int, message: str | None = None) -> dict[str, Any]:
        return {"error": {"code": status, "message": message or f"fake: scripted {status}",
                          "status": STATUS_NAMES.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT")}}

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["call"].partition(":")
        _, reply, body = await self.take(request)
        if reply.disconnect:
            request.transport.close()
            return web.Response()
        if reply.status >= 400:
            return web.json_response(self.error_body(reply.status, reply.message), status=reply.status)
        headers = {k.lower(): v for k, v in request.headers.items()}
        if not headers.get("x-goog-api-key"):
            return web.json_response(self.error_body(403, "Method doesn't allow unregistered callers."), status=403)
        if method == "batchEmbedContents":
            return self._embed(model, body)
        if method not in ("generateContent", "streamGenerateContent"):
            return web.json_response(self.error_body(404, f"method {method} not found"), status=404)
        if method == "streamGenerateContent" and request.query.get("alt") != "sse":
            return web.json_response(self.error_body(400, "this fake only streams with alt=sse"), status=400)
        try:
            validate(headers, body)
        except Invalid as exc:
            return web.json_response(self.error_body(400, str(exc)), status=400)
        if reply.body is not None:
            return web.json_response(reply.body)
        if reply.raw_sse is not None:
            return web.Response(body=reply.raw_sse, content_type="text/event-stream")
        answer = self._answer(model, body, reply)
        if method == "streamGenerateContent":
            return await self._stream(request, answer, reply)
        return web.json_response(answer)

    def _embed(self, model: str, body: Any) -> web.Response:
        reqs = (body or {}).get("requests") or []
        out = []
        for r in reqs:
            if r.get("model") != f"models/{model}" or not (r.get("content") or {}).get("parts"):
                return web.json_response(self.error_body(400, "requests[].model must match the URL model"), status=400)
            text = r["content"]["parts"][0].get("text", "")
            dims = r.get("outputDimensionality") or 8
            out.append({"values": [round(math.sin(len(text) + k), 6) for k in range(dims)]})
        return web.json_response({"embeddings": out})

    def _answer(self, model: str, body: dict[str, Any], reply: GeminiReply) -> dict[str, Any]:
        if reply.block_reason:
            return {"promptFeedback": {"blockReason": reply.block_reason},
                    "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5}}
        last = body["contents"][-1]
        after_tool = any("functionResponse" in p for p in last["parts"])
        fcc = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
        calls = reply.function_calls
        decls = [d for t in body.get("tools") or [] for d in t.get("functionDeclarations") or []]
        if calls is None and decls and not after_tool and fcc.get("mode") != "NONE":
            allowed = fcc.get("allowedFunctionNames") or [decls[0]["name"]]
            decl = next(d for d in decls if d["name"] == allowed[0])
            calls = [{"name": decl["name"], "args": sample_value(decl.get("parameters") or {})}]
        if calls:
            parts = [{"functionCall": {"name": c["name"], "args": c.get("args", {})},
                      "thoughtSignature": "sig-" + c["name"]} for c in calls]
            if reply.text:
                parts.insert(0, {"text": reply.text})
        else:
            if reply.text is not None:
                text = reply.text
            elif after_tool:
                text = "tool said: " + json.dumps([p["functionResponse"]["response"] for p in last["parts"]
                                                   if "functionResponse" in p])
            else:
                text = "echo: " + " ".join(p.get("text", "") for p in last["parts"])
            parts = [{"text": text}]
        n = (body.get("generationConfig") or {}).get("candidateCount") or 1
        prompt = reply.prompt_tokens or len(json.dumps(body)) // 4 + 1
        out_tokens = reply.output_tokens or len(json.dumps(parts)) // 4 + 1
        usage = {"promptTokenCount": prompt + reply.cached, "candidatesTokenCount": out_tokens * n,
                 "totalTokenCount": prompt + reply.cached + out_tokens * n + reply.thoughts}
        if reply.cached:
            usage["cachedContentTokenCount"] = reply.cached
        if reply.thoughts:
            usage["thoughtsTokenCount"] = reply.thoughts
        return {"candidates": [{"content": {"role": "model", "parts": parts},
                                "finishReason": reply.finish_reason or "STOP", "index": i} for i in range(n)],
                "usageMetadata": usage, "modelVersion": model, "responseId": uuid.uuid4().hex[:20]}

    @staticmethod
    def stream_chunks(answer: dict[str, Any]) -> list[dict[str, Any]]:
        """Text split in word chunks; functionCalls whole; finishReason and usage on the last chunk."""
        if "candidates" not in answer:
            return [answer]
        head = {"modelVersion": answer["modelVersion"], "responseId": answer["responseId"]}
        chunks = []
        for cand in answer["candidates"]:
            for part in cand["content"]["parts"]:
                pieces = [{"text": w} for w in re.findall(r"\s*\S+", part["text"])] if "text" in part else [part]
                for piece in pieces:
                    chunks.append({**head, "candidates": [{"content": {"role": "model", "parts": [piece]},
                                                           "index": cand["index"]}],
                                   "usageMetadata": {"promptTokenCount": answer["usageMetadata"]["promptTokenCount"]}})
        last = chunks[-1]
        last["candidates"][0]["finishReason"] = answer["candidates"][-1]["finishReason"]
        for cand in answer["candidates"][:-1]:  # other candidates finish in their own chunks
            chunks.append({**head, "candidates": [{"content": {"role": "model", "parts": [{"text": ""}]},
                                                   "finishReason": cand["finishReason"], "index": cand["index"]}]})
        chunks[-1]["usageMetadata"] = answer["usageMetadata"]
        return chunks

    async def _stream(self, request: web.Request, answer: dict[str, Any], reply: GeminiReply) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for k, chunk in enumerate(self.stream_chunks(answer)):
            if reply.stream_error_after is not None and k >= reply.stream_error_after:
                chunk = self.error_body(503, "The model is overloaded. Please try again later.")
                await resp.write(b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n")
                break
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n")
            await asyncio.sleep(0)
        await resp.write_eof()
        return resp
