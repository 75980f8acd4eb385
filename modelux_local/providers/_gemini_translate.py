"""OpenAI Chat Completions <-> Gemini generateContent, plus the stream translator and embeddings.

Pure functions over dicts. Gemini's request vocabulary: `contents` (roles user/model) of
`parts` (text, inlineData, fileData, functionCall, functionResponse), `systemInstruction`,
`generationConfig`, `tools[].functionDeclarations`, `toolConfig.functionCallingConfig`.
Unexpressible requests are refused with a 400 naming the parameter.
"""
from __future__ import annotations

import base64
import json
import secrets
import struct
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
    openai_error_body,
    text_of,
    tool_call_arguments,
    usage_chunk_json,
    vendor_error,
)

REFUSED = {
    "logprobs": "log probabilities are not translated to Gemini",
    "top_logprobs": "log probabilities are not translated to Gemini",
    "audio": "audio output is not translated to Gemini",
    "prediction": "Gemini has no predicted outputs",
    "logit_bias": "Gemini has no logit bias",
    "functions": "use `tools` (legacy `functions` is not translated)",
    "function_call": "use `tool_choice` (legacy `function_call` is not translated)",
    "web_search_options": "web search is not translated to Gemini",
}
# Handled below, or harmless to ignore (parallel_tool_calls: Gemini decides itself; the rest
# are OpenAI account features or hints without effect on the answer).
KNOWN = {
    "model", "messages", "stream", "max_tokens", "max_completion_tokens", "temperature", "top_p",
    "top_k", "stop", "n", "seed", "presence_penalty", "frequency_penalty", "tools", "tool_choice",
    "parallel_tool_calls", "response_format", "user", "metadata", "stream_options", "store",
    "service_tier", "safety_identifier", "prompt_cache_key", "reasoning_effort", "modalities",
}
THINKING_BUDGET = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576}
FILTERED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "LANGUAGE"}
# The OpenAPI subset Gemini's Schema accepts; anything else (additionalProperties, $schema,
# strict, ...) makes the API answer 400 "Unknown name", so it is stripped.
SCHEMA_KEYS = {
    "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems", "properties",
    "required", "minProperties", "maxProperties", "minLength", "maxLength", "pattern", "example",
    "anyOf", "propertyOrdering", "default", "items", "minimum", "maximum",
}
GENERATION = (("temperature", "temperature"), ("top_p", "topP"), ("top_k", "topK"), ("seed", "seed"),
              ("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty"))


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


# ---------------------------------------------------------------- schemas

def clean_schema(schema: Any, defs: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """A JSON schema reduced to what Gemini accepts: local $refs inlined, unknown keys dropped."""
    if not isinstance(schema, dict) or depth > 32:
        return schema
    if defs is None:
        defs = {**schema.get("definitions", {}), **schema.get("$defs", {})}
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.rsplit("/", 1)[-1] in defs:
        return clean_schema(defs[ref.rsplit("/", 1)[-1]], defs, depth + 1)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "const":
            out["enum"] = [value]
        elif key == "type" and isinstance(value, list):  # ["string", "null"] -> nullable string
            kinds = [t for t in value if t != "null"]
            out["type"] = kinds[0] if kinds else "string"
            if "null" in value:
                out["nullable"] = True
        elif key == "properties" and isinstance(value, dict):
            out[key] = {k: clean_schema(v, defs, depth + 1) for k, v in value.items()}
        elif key in ("items",):
            out[key] = clean_schema(value, defs, depth + 1)
        elif key in ("anyOf", "oneOf") and isinstance(value, list):
            out["anyOf"] = [clean_schema(v, defs, depth + 1) for v in value]
        elif key in SCHEMA_KEYS:
            out[key] = value
    return out


# ---------------------------------------------------------------- request: OpenAI -> Gemini

def _check_params(body: dict[str, Any]) -> None:
    check_params(body, REFUSED, KNOWN, "Gemini")
    modalities = body.get("modalities")
    if modalities and set(modalities) != {"text"}:
        raise bad_request("only text output is translated for Gemini models", param="modalities")


def _image_part(url: str, param: str) -> dict[str, Any]:
    if url.startswith("data:"):
        mime_type, data = base64_data_url(url, param)
        return {"inlineData": {"mimeType": mime_type, "data": data}}
    if url.startswith(("https://generativelanguage.googleapis.com/", "gs://", "https://www.youtube.com/")):
        return {"fileData": {"fileUri": url}}  # URIs Gemini resolves itself (Files API, GCS, YouTube)
    raise bad_request("Gemini cannot fetch arbitrary image URLs: send the image as a base64 data: URL "
                      "(or a Gemini Files API URI)", param=param)


def _content_parts(content: Any, param: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content or []):
        kind = part.get("type")
        if kind in ("text", "refusal"):
            text = part.get("text") or part.get("refusal")
            if text:
                parts.append({"text": text})
        elif kind == "image_url":
            parts.append(_image_part(image_url_of(part), f"{param}[{j}]"))
        else:
            raise bad_request(f"content part type '{kind}' is not supported for Gemini models", param=f"{param}[{j}]")
    return parts


def _call_parts(msg: dict[str, Any], param: str, names: dict[str, str],
                signatures: dict[str, str]) -> list[dict[str, Any]]:
    parts = []
    for k, call in enumerate(msg.get("tool_calls") or []):
        fn = call.get("function") or {}
        args = tool_call_arguments(call, f"{param}.tool_calls[{k}]")
        names[call.get("id")] = fn.get("name")
        part: dict[str, Any] = {"functionCall": {"name": fn.get("name"), "args": args}}
        sig = signatures.get(call.get("id"))
        if sig:  # thinking models require their signature back on the call they made
            part["thoughtSignature"] = sig
        parts.append(part)
    return parts


def _response_part(msg: dict[str, Any], param: str, names: dict[str, str]) -> dict[str, Any]:
    name = names.get(msg.get("tool_call_id"))
    if name is None:
        raise bad_request("tool message answers no earlier assistant tool_call (tool_call_id not found)",
                          param=f"{param}.tool_call_id")
    text = text_of(msg.get("content"), param)
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    # functionResponse.response must be an object: a JSON object result goes as is.
    response = parsed if isinstance(parsed, dict) else {"result": text}
    return {"functionResponse": {"name": name, "response": response}}


def _contents(messages: list[dict[str, Any]], signatures: dict[str, str]) -> tuple[list[str], list[dict[str, Any]]]:
    system: list[str] = []
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool_call id -> function name, from the history itself
    for i, msg in enumerate(messages):
        role, param = msg.get("role"), f"messages[{i}]"
        if role in ("system", "developer"):
            system.append(text_of(msg.get("content"), param))
            continue
        if role == "user":
            g_role, parts = "user", _content_parts(msg.get("content"), f"{param}.content")
        elif role == "assistant":
            g_role = "model"
            parts = _content_parts(msg.get("content"), f"{param}.content") + _call_parts(msg, param, names, signatures)
        elif role == "tool":
            g_role, parts = "user", [_response_part(msg, param, names)]
        else:
            raise bad_request(f"role '{role}' is not supported for Gemini models", param=f"{param}.role")
        if not parts:
            continue  # Gemini rejects contents without parts
        if out and out[-1]["role"] == g_role:
            out[-1]["parts"].extend(parts)  # parallel tool results become one turn, as Gemini wants
        else:
            out.append({"role": g_role, "parts": parts})
    if not out:
        raise bad_request("at least one user or assistant message is required", param="messages")
    return system, out


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    decls = []
    for i, tool in enumerate(tools):
        if tool.get("type") != "function":
            raise bad_request(f"tool type '{tool.get('type')}' is not supported for Gemini models", param=f"tools[{i}]")
        fn = tool.get("function") or {}
        decl: dict[str, Any] = {"name": fn.get("name")}
        if fn.get("description"):
            decl["description"] = fn["description"]
        params = clean_schema(fn.get("parameters"))
        if isinstance(params, dict) and params.get("properties"):  # Gemini rejects empty OBJECT schemas
            decl["parameters"] = params
        decls.append(decl)
    return [{"functionDeclarations": decls}]


def _tool_config(choice: Any) -> dict[str, Any] | None:
    if choice is None or choice == "auto":
        return None  # AUTO is Gemini's default
    if choice == "none":
        cfg: dict[str, Any] = {"mode": "NONE"}
    elif choice == "required":
        cfg = {"mode": "ANY"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        cfg = {"mode": "ANY", "allowedFunctionNames": [(choice.get("function") or {}).get("name")]}
    else:
        raise bad_request("unsupported tool_choice for Gemini models", param="tool_choice")
    return {"functionCallingConfig": cfg}


def _generation_config(body: dict[str, Any]) -> dict[str, Any]:
    gen: dict[str, Any] = {dst: body[src] for src, dst in GENERATION if body.get(src) is not None}
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_tokens:
        gen["maxOutputTokens"] = max_tokens
    stop = body.get("stop")
    if stop:
        gen["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("n") not in (None, 1):
        gen["candidateCount"] = body["n"]
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        gen["responseMimeType"] = "application/json"
        schema = (fmt.get("json_schema") or {}).get("schema")
        if schema:
            gen["responseSchema"] = clean_schema(schema)
    elif isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        raise bad_request(f"response_format type '{fmt.get('type')}' is not supported", param="response_format")
    effort = body.get("reasoning_effort")
    if effort is not None:
        if effort not in THINKING_BUDGET:
            raise bad_request(f"unknown reasoning_effort '{effort}'", param="reasoning_effort")
        gen["thinkingConfig"] = {"thinkingBudget": THINKING_BUDGET[effort]}
    return gen


def request_to_gemini(body: dict[str, Any], signatures: dict[str, str] | None = None) -> dict[str, Any]:
    """The generateContent body for an OpenAI chat body (the model goes in the URL)."""
    _check_params(body)
    system, contents = _contents(body.get("messages") or [], signatures or {})
    out: dict[str, Any] = {"contents": contents}
    if any(system):
        out["systemInstruction"] = {"parts": [{"text": "\n\n".join(s for s in system if s)}]}
    gen = _generation_config(body)
    if gen:
        out["generationConfig"] = gen
    if body.get("tools"):
        out["tools"] = _tools(body["tools"])
        tool_config = _tool_config(body.get("tool_choice"))
        if tool_config:
            out["toolConfig"] = tool_config
    return out


# ---------------------------------------------------------------- response: Gemini -> OpenAI

def usage_from_gemini(u: dict[str, Any] | None) -> Usage:
    u = u or {}
    thoughts = u.get("thoughtsTokenCount") or 0
    return Usage(
        input_tokens=u.get("promptTokenCount") or 0,  # includes cachedContentTokenCount
        output_tokens=(u.get("candidatesTokenCount") or 0) + thoughts,
        cached_tokens=u.get("cachedContentTokenCount") or 0,
        reasoning_tokens=thoughts,
    )


def check_blocked(resp: dict[str, Any], provider: str) -> None:
    """A prompt Gemini refused outright (no candidates) is the client's problem: a 400."""
    reason = (resp.get("promptFeedback") or {}).get("blockReason")
    if reason and not resp.get("candidates"):
        msg = f"Gemini blocked the prompt (blockReason {reason})"
        raise UpstreamError(f"{provider}: {msg}", status=400, category=None,
                            body=openai_error_body(msg, "invalid_request_error", "content_filter", "messages"))


def _finish(reason: str | None, has_calls: bool) -> str | None:
    if reason is None:
        return None
    if reason in FILTERED:
        return "content_filter"
    if reason == "MAX_TOKENS":
        return "length"
    return "tool_calls" if has_calls else "stop"  # Gemini says STOP after function calls too


def parts_to_message(parts: list[dict[str, Any]], signatures: dict[str, str]) -> tuple[str | None, list[dict]]:
    texts, calls = [], []
    for part in parts:
        if part.get("thought"):
            continue  # thought summaries are reasoning, not answer
        if "text" in part:
            texts.append(part["text"])
        elif "functionCall" in part:
            call_id = new_call_id()
            fc = part["functionCall"]
            if part.get("thoughtSignature"):
                signatures[call_id] = part["thoughtSignature"]
            calls.append({"id": call_id, "type": "function",
                          "function": {"name": fc.get("name"), "arguments": json.dumps(fc.get("args") or {})}})
    return ("".join(texts) if texts else None), calls


def response_to_openai(resp: dict[str, Any], model: str, signatures: dict[str, str],
                       provider: str = "gemini") -> tuple[dict[str, Any], Usage]:
    check_blocked(resp, provider)
    choices = []
    for i, cand in enumerate(resp.get("candidates") or []):
        text, calls = parts_to_message((cand.get("content") or {}).get("parts") or [], signatures)
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        if calls:
            message["tool_calls"] = calls
        choices.append({"index": cand.get("index", i), "message": message, "logprobs": None,
                        "finish_reason": _finish(cand.get("finishReason") or "STOP", bool(calls))})
    usage = usage_from_gemini(resp.get("usageMetadata"))
    return {
        "id": "chatcmpl-" + (resp.get("responseId") or secrets.token_hex(12)),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": resp.get("modelVersion") or model,
        "choices": choices,
        "usage": usage_to_openai(usage),
    }, usage


# ---------------------------------------------------------------- errors

STATUS_MAP = {  # google.rpc status -> (status when absent, OpenAI type, OpenAI code)
    "INVALID_ARGUMENT": (400, "invalid_request_error", None),
    "FAILED_PRECONDITION": (400, "invalid_request_error", "failed_precondition"),
    "UNAUTHENTICATED": (401, "invalid_request_error", "invalid_api_key"),
    "PERMISSION_DENIED": (403, "invalid_request_error", "permission_denied"),
    "NOT_FOUND": (404, "invalid_request_error", "not_found"),
    "RESOURCE_EXHAUSTED": (429, "rate_limit_error", "rate_limit_exceeded"),
    "INTERNAL": (500, "server_error", None),
    "UNAVAILABLE": (503, "server_error", "overloaded"),
    "DEADLINE_EXCEEDED": (504, "server_error", "timeout"),
}


def error_from_gemini(status: int | None, payload: Any, provider: str) -> UpstreamError:
    """Gemini answers errors as {"error": {"code", "message", "status"}} (also as a list of one)."""
    if isinstance(payload, list) and payload:
        payload = payload[0]
    err = error_object(payload)
    rpc = err.get("status") or ""
    default_status, otype, code = STATUS_MAP.get(rpc, (err.get("code") or 500, "server_error", None))
    status = status or default_status
    if otype == "server_error" and status < 500:
        otype = "invalid_request_error"
    return vendor_error(provider, rpc or status, status, err.get("message") or f"HTTP {status}", otype,
                        code or (rpc.lower() or None))


# ---------------------------------------------------------------- streaming

class StreamTranslator:
    """Gemini stream chunks (each a GenerateContentResponse) -> OpenAI chunk JSON bytes."""

    def __init__(self, model: str, provider: str, signatures: dict[str, str]):
        self.model, self.provider, self.signatures = model, provider, signatures
        self.id = "chatcmpl-" + secrets.token_hex(12)
        self.created = int(time.time())
        self.usage: dict[str, Any] | None = None  # cumulative: the last one seen wins
        self.raw_usage: list[Any] = []  # the final usage, once the stream has ended
        self.started = False
        self.tool_counts: dict[int, int] = {}  # candidate index -> tool calls emitted so far
        self.finished = False                  # a finishReason came: the stream was not cut

    def _chunk(self, index: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return chunk_json(self.id, self.created, self.model, index, delta, finish)

    def feed_sse(self, event: str, data: str) -> list[bytes]:
        """One SSE event as it came off the wire (Gemini names no events); non-JSON is upstream_invalid."""
        parsed = decode_json(data)
        if parsed is None:
            raise invalid_answer(self.provider, "a stream event that is not JSON", body=data.encode())
        return self.feed(parsed)

    def feed(self, data: Any) -> list[bytes]:
        if isinstance(data, list) or (isinstance(data, dict) and "error" in data):
            raise error_from_gemini(None, data, self.provider)
        check_blocked(data, self.provider)
        out: list[bytes] = []
        if data.get("usageMetadata"):
            self.usage = data["usageMetadata"]
        if not self.started:
            self.started = True
            self.model = data.get("modelVersion") or self.model
            out.append(self._chunk(0, {"role": "assistant", "content": ""}))
        for i, cand in enumerate(data.get("candidates") or []):
            out.extend(self._candidate(cand.get("index", i), cand))
        return out

    def _candidate(self, index: int, cand: dict[str, Any]) -> list[bytes]:
        out = []
        text, calls = parts_to_message((cand.get("content") or {}).get("parts") or [], self.signatures)
        if text:
            out.append(self._chunk(index, {"content": text}))
        if calls:
            start = self.tool_counts.get(index, 0)
            self.tool_counts[index] = start + len(calls)
            for k, call in enumerate(calls):  # Gemini sends each call whole: one chunk per call
                out.append(self._chunk(index, {"tool_calls": [{"index": start + k, **call}]}))
        finish = _finish(cand.get("finishReason"), self.tool_counts.get(index, 0) > 0)
        if finish:
            self.finished = True
            out.append(self._chunk(index, {}, finish))
        return out

    def final_usage(self) -> Usage:
        return usage_from_gemini(self.usage)

    def finish_chunks(self) -> list[bytes]:
        if self.usage is not None:
            self.raw_usage.append(self.usage)  # cumulative: only the final one counts
        if not self.started:
            raise invalid_answer(self.provider, "stream ended without any chunk")
        if not self.finished:
            raise invalid_answer(self.provider, "stream ended before a finishReason")
        return [usage_chunk_json(self.id, self.created, self.model, self.final_usage())]


# ---------------------------------------------------------------- embeddings

def embeddings_request(body: dict[str, Any], model: str) -> tuple[dict[str, Any], list[str]]:
    inputs = body.get("input")
    texts = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise bad_request("Gemini embeddings take a string or a list of strings (token arrays are not "
                          "translated)", param="input")
    base: dict[str, Any] = {"model": f"models/{model}"}
    if body.get("dimensions"):
        base["outputDimensionality"] = body["dimensions"]
    return {"requests": [{**base, "content": {"parts": [{"text": t}]}} for t in texts]}, texts


def embeddings_to_openai(resp: dict[str, Any], model: str, texts: list[str], encoding: str | None) -> tuple[dict, Usage]:
    data = []
    for i, emb in enumerate(resp.get("embeddings") or []):
        values = emb.get("values") or []
        if encoding == "base64":  # what the openai SDK asks for by default: little-endian float32
            values = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
        data.append({"object": "embedding", "index": i, "embedding": values})
    meta = resp.get("usageMetadata") or {}
    # Gemini's embed answers may carry no token count: then estimate (~4 characters a token).
    tokens = meta.get("promptTokenCount") or sum(max(1, len(t) // 4) for t in texts)
    usage = Usage(input_tokens=tokens)
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}, usage
