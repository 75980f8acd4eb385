"""OpenAI-shaped pieces every provider kind shares. Pure: no I/O, no aiohttp.

- `openai_error_body` / `bad_request`: the only ways providers build an OpenAI error body, and
  the 400 for a request a kind cannot express (it passes through to the client as is).
- `encode_json` / `decode_json`: msgspec, with undecodable bytes read as None.
- the request fragments both translators (Anthropic, Gemini) read the same way.
"""
from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote

import msgspec

from ..core.usage import Usage, usage_to_openai
from ..errors import UpstreamError, category_for_status

encode_json = msgspec.json.Encoder().encode


def decode_json(data: bytes | str) -> Any:
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:
        return None


def openai_error_body(message: str, type_: str = "upstream_error", code: str | None = None,
                      param: str | None = None) -> bytes:
    return encode_json({"error": {"message": message, "type": type_, "code": code, "param": param}})


def invalid_answer(provider: str, why: str, status: int | None = 200, body: bytes = b"") -> UpstreamError:
    """A 200 (usually) that is not the answer asked for: not JSON, HTML, no choices, an in-band
    error, a stream without its terminator. Routing retries/falls back on it like a 5xx
    (category `upstream_invalid`); the attempt keeps the upstream's real status."""
    start = body[:120].decode("utf-8", "replace").strip()
    msg = f"{provider}: upstream_invalid: {why}" + (f" (it began {start!r})" if start else "")
    return UpstreamError(msg, status=status, category="upstream_invalid",
                         body=openai_error_body(msg, "upstream_error", "upstream_invalid"))


def checked_answer(provider: str, payload: Any, ok: bool, what: str) -> None:
    """Raises upstream_invalid unless `ok`: a translating kind's 200 that is not `what`
    (an in-band `error` object is named by its message)."""
    if ok:
        return
    msg = error_object(payload).get("message")
    raise invalid_answer(provider, f"an error inside a 200 answer: {msg}" if msg else f"the answer is not {what}",
                         body=encode_json(payload)[:200])


TRANSLATION_ERRORS = (TypeError, AttributeError, KeyError, ValueError, IndexError)  # a field of the wrong type


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> UpstreamError:
    """A request the provider cannot express: a 400 that passes through to the client."""
    return UpstreamError(
        message,
        status=400,
        category=None,
        body=openai_error_body(message, "invalid_request_error", code or "unsupported_parameter", param),
    )


_PATH_SAFE_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+@-]{0,199}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def checked_model(model: str, *, in_path: bool = False) -> str:
    """The upstream model name, refused with a 400 when it cannot be one: control characters or
    over 200 characters for every kind; for a kind that puts it in the URL path (gemini), anything
    but letters, digits and `._+@-` (no `/`, `..`, `?`, `#`, `%`), and quoted as well."""
    if not model or len(model) > 200 or _CONTROL.search(model):
        raise bad_request(f"model name {model[:60]!r} is not a valid upstream model name", param="model",
                          code="invalid_model")
    if in_path:
        if not _PATH_SAFE_MODEL.fullmatch(model) or ".." in model:
            raise bad_request(f"model name {model[:60]!r} may only contain letters, digits and . _ + @ - "
                              "(it becomes part of the upstream URL)", param="model", code="invalid_model")
        return quote(model, safe="")
    return model


def error_object(payload: Any) -> dict[str, Any]:
    """The `error` object of a vendor's error answer, or {} when there is none."""
    err = payload.get("error") if isinstance(payload, dict) else None
    return err if isinstance(err, dict) else {}


def vendor_error(provider: str, label: Any, status: int, message: str, type_: str, code: str | None) -> UpstreamError:
    """A translating kind's upstream error: routed by its status, with an OpenAI-shaped body."""
    return UpstreamError(f"{provider}: {label}: {message}", status=status, category=category_for_status(status),
                         body=openai_error_body(message, type_, code, None))


# ---------------------------------------------------------------- what both translators read

def check_params(body: dict[str, Any], refused: dict[str, str], known: set[str], vendor: str) -> None:
    """Refuses with a 400 naming it any field the vendor cannot honour, or that nobody mapped."""
    for key, value in body.items():
        if key in refused:
            if value in (None, False, 0, {}, []):
                continue  # explicitly off: harmless
            raise bad_request(f"'{key}' is not supported for {vendor} models: {refused[key]}", param=key)
        if key not in known:
            raise bad_request(f"'{key}' is not supported for {vendor} models", param=key)


def text_of(content: Any, param: str) -> str:
    """The text of a system/developer/tool content: a string or text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        if part.get("type") != "text":
            raise bad_request(f"only text parts are allowed in {param}", param=param)
        texts.append(part.get("text", ""))
    return "\n".join(texts)


def image_url_of(part: dict[str, Any]) -> str:
    """An `image_url` content part's URL (an object with `url`, or the bare string some clients send)."""
    image = part.get("image_url") or {}
    return image.get("url", "") if isinstance(image, dict) else image


def base64_data_url(url: str, param: str) -> tuple[str, str]:
    """(media type, base64 data) of a `data:` URL; other encodings are refused."""
    header, _, data = url.partition(",")
    if ";base64" not in header or not data:
        raise bad_request("image data URLs must be base64-encoded", param=param)
    return header[5:].split(";")[0], data


def tool_call_arguments(call: dict[str, Any], param: str) -> Any:
    """An assistant tool call's `function.arguments`, parsed (both vendors want an object back)."""
    try:
        return json.loads((call.get("function") or {}).get("arguments") or "{}")
    except ValueError:
        raise bad_request("tool call arguments are not valid JSON", param=param) from None


def chunk_json(id_: str, created: int, model: str, index: int, delta: dict[str, Any],
               finish: str | None = None) -> bytes:
    """One `chat.completion.chunk` with a single choice."""
    return encode_json({
        "id": id_, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}],
    })


def usage_chunk_json(id_: str, created: int, model: str, usage: Usage) -> bytes:
    """The closing chunk every stream ends with: no choices, the usage."""
    return encode_json({"id": id_, "object": "chat.completion.chunk", "created": created, "model": model,
                        "choices": [], "usage": usage_to_openai(usage)})
