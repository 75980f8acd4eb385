"""OpenAI-shaped pieces every provider kind shares. Pure: no I/O, no aiohttp.

- `openai_error_body` / `bad_request`: the only ways providers build an OpenAI error body, and
  the 400 for a request a kind cannot express (it passes through to the client as is).
- `encode_json` / `decode_json`: msgspec, with undecodable bytes read as None.
- the request fragments both translators (Anthropic, Gemini) read the same way.
"""
from __future__ import annotations

from typing import Any

import msgspec

from ..errors import UpstreamError

encode_json = msgspec.json.Encoder().encode


def decode_json(data: bytes | str) -> Any:
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:
        return None


def openai_error_body(message: str, type_: str = "upstream_error", code: str | None = None,
                      param: str | None = None) -> bytes:
    return encode_json({"error": {"message": message, "type": type_, "code": code, "param": param}})


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> UpstreamError:
    """A request the provider cannot express: a 400 that passes through to the client."""
    return UpstreamError(
        message,
        status=400,
        category=None,
        body=openai_error_body(message, "invalid_request_error", code or "unsupported_parameter", param),
    )
