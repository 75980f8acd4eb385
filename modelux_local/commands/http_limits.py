"""uvicorn's httptools protocol with two limits it lacks: header size and header-read time.

uvicorn (0.55) bounds neither with httptools: a client can trickle a request's headers for ever
(slowloris: each such connection is held open) or send megabytes of them (buffered in memory).
Here a connection must deliver its request line and headers within `header_timeout_s` (also
when idle before its first request) or it is closed, and headers past `max_header_bytes` get
a 431 in the OpenAI error shape and the connection closed. Set from [limits] at start.
"""
from __future__ import annotations

import asyncio
import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def _error_response(status: int, reason: str, message: str, code: str) -> bytes:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "code": code,
                                 "param": None}}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\nconnection: close\r\n"
            f"content-length: {len(body)}\r\n\r\n")
    return head.encode() + body


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    max_header_bytes = 64 * 1024
    header_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._awaiting_headers = True
        self._header_bytes = 0
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timed_out)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self._awaiting_headers and not self.transport.is_closing():
            self.transport.close()  # nothing was answered yet: just drop it

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        counting = self._awaiting_headers
        super().data_received(data)
        if counting and self._awaiting_headers and not self.transport.is_closing():
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                self._refuse_headers()

    def _refuse_headers(self) -> None:
        limit_kb = self.max_header_bytes / 1024
        self._disarm_header_timer()
        self.transport.write(_error_response(
            431, "Request Header Fields Too Large",
            f"request line and headers exceed {limit_kb:g} KiB ([limits] max_header_kb)", "headers_too_large"))
        self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._awaiting_headers = True
        self._header_bytes = 0
        self._arm_header_timer()  # a kept-alive connection starting its next request

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._disarm_header_timer()
        super().on_headers_complete()


def protocol_for(max_header_kb: float, header_timeout_s: float) -> type[LimitedHttpToolsProtocol]:
    """The protocol class for uvicorn's `http=`, with the [limits] values of this start."""
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,),
                {"max_header_bytes": int(max_header_kb * 1024), "header_timeout_s": header_timeout_s})
