"""Every error leaves as OpenAI's shape: {"error": {"message", "type", "code", "param"}}.

Endpoints with their own error shape (/v1/messages) are chosen in app.py's handler, so this
module imports no endpoint (it used to import messages.py, which imports it: a cycle)."""
from __future__ import annotations

import logging

from litestar import Request, Response
from litestar.exceptions import HTTPException

from ..calls import error_body
from ..errors import ModeluxError
from .reply import JSON, error_reply

log = logging.getLogger("modelux.proxy")


def error_response(e: ModeluxError, headers: dict | None = None) -> Response:
    return error_reply(e, headers).response()


def on_http_exception(_: Request, e: HTTPException) -> Response:
    code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(e.status_code)
    type_ = "invalid_request_error" if e.status_code < 500 else "server_error"
    return Response(error_body(str(e.detail), type_, code), status_code=e.status_code, media_type=JSON)


def on_unexpected(_: Request, e: Exception) -> Response:
    log.exception("unexpected error")
    return Response(error_body(f"internal error: {type(e).__name__}", "server_error", "internal_error"),
                    status_code=500, media_type=JSON)
