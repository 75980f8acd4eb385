"""The OpenAI Responses API as an *input* format (for `POST /v1/responses`): request side.

A Responses body becomes an OpenAI chat body that any provider kind serves; the answer is
turned back by responses_out.py. Pure functions, no I/O. The earlier turns named by
`previous_response_id` are resolved by the caller and passed in as chat messages.

Mapping notes:
- `instructions` -> a leading system message (never inherited from earlier turns, as
  documented); `developer`/`system` input messages -> system messages.
- `function_call` / `function_call_output` items -> assistant `tool_calls` / `tool` messages;
  `reasoning` items passed back are dropped (a chat history cannot carry them).
- `text.format` -> `response_format`; `reasoning.effort` -> `reasoning_effort`;
  `max_output_tokens` -> `max_tokens`; `safety_identifier` -> `user` when `user` is absent.
- String values of `metadata`, and `metadata["mlx:tags"]`, become tags (never forwarded).
"""
from __future__ import annotations

from typing import Any

from ..errors import BadRequest

# Hosted tools run inside OpenAI: behind a chat-style provider nothing could run them.
HOSTED_TOOLS = {"web_search", "web_search_preview", "web_search_2025_08_26", "web_search_preview_2025_03_11",
                "file_search", "code_interpreter", "computer_use", "computer_use_preview", "computer",
                "mcp", "image_generation", "local_shell", "shell", "apply_patch", "custom", "tool_search"}
# Accepted and ignored: hints and switches with no effect on what a chat-style provider answers
# (`include` asks for extra output fields we do not produce; `truncation` only matters past the
# context window; the cache, tier and obfuscation settings are the upstream's bookkeeping).
IGNORED = {"include", "truncation", "prompt_cache_key", "prompt_cache_retention", "prompt_cache_options",
           "service_tier", "stream_options", "store", "metadata", "previous_response_id", "mlx:tags"}
KNOWN = {"model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "max_output_tokens",
         "temperature", "top_p", "text", "reasoning", "user", "safety_identifier", "stream", "background",
         "conversation", "prompt", "context_management", "max_tool_calls", "top_logprobs"} | IGNORED
EFFORT = {"minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "high"}


def check_fields(body: dict[str, Any]) -> None:
    """400 naming the first field a translated target cannot honour."""
    for key, value in body.items():
        if key not in KNOWN:
            raise BadRequest(f"'{key}' is not supported by this gateway's /v1/responses", param=key)
    if body.get("background"):
        raise BadRequest("background responses are not supported: send the request without 'background'",
                         param="background")
    for key, why in (("conversation", "conversation objects are not supported; use previous_response_id"),
                     ("prompt", "prompt templates are stored at OpenAI and cannot be resolved here"),
                     ("context_management", "server-side context management is not supported"),
                     ("max_tool_calls", "max_tool_calls only applies to hosted tools, which are not supported"),
                     ("top_logprobs", "logprobs are not returned by /v1/responses here")):
        if body.get(key) is not None:
            raise BadRequest(why, param=key)


def tags_of(metadata: Any) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise BadRequest("metadata must be an object of string values", param="metadata")
    tags = {k: v for k, v in metadata.items() if k != "mlx:tags" and isinstance(v, str)}
    if isinstance(metadata.get("mlx:tags"), dict):
        tags.update({str(k): str(v) for k, v in metadata["mlx:tags"].items()})
    return tags


# ---------------------------------------------------------------- input items -> chat messages

def _text_part(part: dict[str, Any], param: str) -> dict[str, Any]:
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": part.get("text") or ""}
    if kind == "refusal":
        return {"type": "text", "text": part.get("refusal") or ""}
    if kind == "input_image":
        url = part.get("image_url")
        if not url:
            raise BadRequest("input_image: only image_url (a URL or a data: URL) is supported, not file_id",
                             param=f"{param}.image_url")
        image: dict[str, Any] = {"url": url}
        if part.get("detail") and part["detail"] != "auto":
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    raise BadRequest(f"content part type '{kind}' is not supported", param=f"{param}.type")


def _content(content: Any, param: str) -> Any:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest("content must be a string or a list of content parts", param=param)
    parts = [_text_part(p if isinstance(p, dict) else {}, f"{param}[{j}]") for j, p in enumerate(content)]
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)  # plain text: understood by every chat server
    return parts


def _tool_output(output: Any, param: str) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        texts = []
        for j, part in enumerate(output):
            if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text", "text"):
                raise BadRequest("only text is supported inside function_call_output", param=f"{param}[{j}]")
            texts.append(part.get("text") or "")
        return "".join(texts)
    raise BadRequest("function_call_output.output must be a string or a list of input_text parts", param=param)


def input_to_messages(items: Any) -> list[dict[str, Any]]:
    """The `input` of a Responses request as chat messages (system, user, assistant, tool)."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not isinstance(items, list):
        raise BadRequest("input must be a string or a list of input items", param="input")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        p = f"input[{i}]"
        if not isinstance(item, dict):
            raise BadRequest("each input item must be an object", param=p)
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise BadRequest(f"role '{role}' is not supported", param=f"{p}.role")
            content = _content(item.get("content"), f"{p}.content")
            if role == "assistant":
                if not isinstance(content, str):
                    raise BadRequest("assistant messages may only hold text", param=f"{p}.content")
                out.append({"role": "assistant", "content": content})
            else:
                out.append({"role": "system" if role == "developer" else role, "content": content})
        elif kind == "function_call":
            call = {"id": item.get("call_id"), "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments") or "{}"}}
            prev = out[-1] if out else None
            if prev is not None and prev["role"] == "assistant":  # one assistant turn: text and its calls
                prev.setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            if not item.get("call_id"):
                raise BadRequest("function_call_output needs the call_id of its function_call", param=f"{p}.call_id")
            out.append({"role": "tool", "tool_call_id": item["call_id"],
                        "content": _tool_output(item.get("output"), f"{p}.output")})
        elif kind == "reasoning":
            continue
        else:
            raise BadRequest(f"input item type '{kind}' is not supported", param=f"{p}.type")
    return out


# ---------------------------------------------------------------- tools, formats, the body

def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise BadRequest("tools must be a list", param="tools")
    out = []
    for i, t in enumerate(tools):
        kind = t.get("type") if isinstance(t, dict) else None
        if kind != "function":
            why = "a hosted tool that only runs at OpenAI" if kind in HOSTED_TOOLS else "not supported"
            raise BadRequest(f"tool type '{kind}' is {why}: only function tools translate to this provider",
                             param=f"tools[{i}].type")
        fn: dict[str, Any] = {"name": t.get("name"),
                              "parameters": t.get("parameters") or {"type": "object", "properties": {}}}
        if t.get("description"):
            fn["description"] = t["description"]
        if t.get("strict") is not None:
            fn["strict"] = t["strict"]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and choice.get("name"):
        return {"type": "function", "function": {"name": choice["name"]}}
    kind = choice.get("type") if isinstance(choice, dict) else choice
    raise BadRequest(f"tool_choice '{kind}' is not supported: use auto, none, required or a function",
                     param="tool_choice")


def _response_format(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, dict):
        raise BadRequest("text must be an object like {'format': {'type': 'json_schema', ...}}", param="text")
    fmt = text.get("format")
    if not fmt or fmt.get("type") == "text":
        return None
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if fmt.get("type") == "json_schema":
        if not isinstance(fmt.get("schema"), dict):
            raise BadRequest("text.format.schema: a JSON schema object is required", param="text.format.schema")
        schema: dict[str, Any] = {"name": fmt.get("name") or "output", "schema": fmt["schema"]}
        if fmt.get("strict") is not None:
            schema["strict"] = fmt["strict"]
        if fmt.get("description"):
            schema["description"] = fmt["description"]
        return {"type": "json_schema", "json_schema": schema}
    raise BadRequest(f"text.format type '{fmt.get('type')}' is not supported", param="text.format.type")


def responses_request_to_chat(body: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
    """An OpenAI chat body for `body`, with `history` (earlier turns as chat messages) before
    its input; raises BadRequest naming the parameter when something cannot be translated."""
    check_fields(body)
    if "input" not in body:
        raise BadRequest("input is required: a string or a list of input items", param="input")
    messages: list[dict[str, Any]] = []
    if body.get("instructions"):
        if not isinstance(body["instructions"], str):
            raise BadRequest("instructions must be a string", param="instructions")
        messages.append({"role": "system", "content": body["instructions"]})
    messages += history
    messages += input_to_messages(body["input"])
    if not messages:
        raise BadRequest("input is empty: give at least one message", param="input")
    out: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    if body.get("max_output_tokens") is not None:
        out["max_tokens"] = body["max_output_tokens"]
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("tools"):
        out["tools"] = _tools(body["tools"])
        if body.get("tool_choice") is not None:
            out["tool_choice"] = _tool_choice(body["tool_choice"])
        if body.get("parallel_tool_calls") is False:
            out["parallel_tool_calls"] = False
    elif body.get("tool_choice") not in (None, "auto", "none"):
        raise BadRequest("tool_choice names a tool but no tools were given", param="tool_choice")
    if body.get("text") is not None:
        rf = _response_format(body["text"])
        if rf:
            out["response_format"] = rf
    reasoning = body.get("reasoning")
    if reasoning is not None:
        if not isinstance(reasoning, dict):
            raise BadRequest("reasoning must be an object like {'effort': 'low'}", param="reasoning")
        effort = reasoning.get("effort")
        if effort not in (None, "none") and effort not in EFFORT:
            raise BadRequest(f"reasoning.effort '{effort}' is not supported", param="reasoning.effort")
        if effort in EFFORT:
            out["reasoning_effort"] = EFFORT[effort]
    user = body.get("user") or body.get("safety_identifier")
    if user:
        out["user"] = str(user)
    if body.get("stream"):
        out["stream"] = True
    return out
