"""Every error leaves as OpenAI's shape: {"error": {"message", "type", "code", "param"}}."""
from __future__ import annotations

import logging

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException

from ..errors import ModeluxError, UpstreamError

log = logging.getLogger("modelux.proxy")
JSON = "application/json"


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None, **extra) -> bytes:
    err = {"message": message, "type": type_, "code": code, "param": param, **extra}
    return msgspec.json.encode({"error": err})


def error_response(e: ModeluxError, headers: dict | None = None) -> Response:
    if isinstance(e, UpstreamError) and e.body is not None and e.category is None:
        return Response(e.body, status_code=e.status, media_type=JSON, headers=headers)
    return Response(error_body(e.message, e.type, e.code, e.param), status_code=e.status, media_type=JSON, headers=headers)


def on_modelux_error(request: Request, e: ModeluxError) -> Response:
    if request.url.path.startswith("/v1/messages"):  # Anthropic clients get Anthropic's error shape
        from .messages import error_response as anthropic_error_response

        return anthropic_error_response(e)
    return error_response(e)


def on_http_exception(_: Request, e: HTTPException) -> Response:
    code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(e.status_code)
    type_ = "invalid_request_error" if e.status_code < 500 else "server_error"
    return Response(error_body(str(e.detail), type_, code), status_code=e.status_code, media_type=JSON)


def on_unexpected(_: Request, e: Exception) -> Response:
    log.exception("unexpected error")
    return Response(error_body(f"internal error: {type(e).__name__}", "server_error", "internal_error"),
                    status_code=500, media_type=JSON)
