"""What a route answers, free of any framework: proxy/fast.py sends a Reply as raw ASGI messages
on the hot path; `response()` makes it a Litestar response for the routes Litestar serves."""
from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from litestar import Response
from litestar.response import Stream

from ..calls import error_body
from ..errors import ModeluxError, UpstreamError

JSON = "application/json"
SSE = "text/event-stream"


@dataclass(slots=True)
class Reply:
    """A status, headers, and a body or an SSE stream."""

    status: int
    headers: dict[str, str]
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None  # SSE bytes; `headers` then include the SSE ones

    def response(self) -> Response:
        if self.stream is None:
            return Response(self.body, status_code=self.status, media_type=JSON, headers=self.headers)
        return Stream(self.stream, status_code=self.status, media_type=SSE, headers=self.headers)


def error_reply(e: ModeluxError, headers: dict[str, str] | None = None) -> Reply:
    """OpenAI's error shape (an upstream's own OpenAI-shaped client error passes as it came)."""
    if isinstance(e, UpstreamError) and e.body is not None and e.category is None:
        return Reply(e.status, headers or {}, e.body)
    return Reply(e.status, headers or {}, error_body(e.message, e.type, e.code, e.param))
