"""[limits] on what a client sends: body size while it is read, JSON nesting, `n`.

Read per request from the live config, so a hot reload of `[limits]` applies to the next call
(Litestar's own `request_max_body_size` is resolved once per route and could not follow it).
"""
from __future__ import annotations

import re
from typing import Any

import msgspec

from ..config.schema import LimitsSection
from ..errors import BadRequest, BodyTooLarge, ModeluxError

_decode = msgspec.json.Decoder().decode
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_EMPTY_PAIR = re.compile(rb"\[\]|\{\}")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def body_limit(limits: LimitsSection) -> int:
    return int(limits.max_body_mb * 1024 * 1024)


def too_large(size: str, limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"request body is {size} bytes; the limit is {limit} ([limits] max_body_mb)")


class ClientLeft(ModeluxError):
    """The client disconnected before its request body was read: nobody is left to answer."""

    status = 499
    type = "invalid_request_error"
    code = "client_closed"


async def read_body(request: Any, limits: LimitsSection) -> bytes:
    """A Litestar request's body within [limits] (see read_asgi_body)."""
    return await read_asgi_body(request.receive, request.headers.get("content-length"), body_limit(limits))


async def read_asgi_body(receive: Any, declared: str | None, limit: int) -> bytes:
    """The request body, refused with a 413 as soon as it passes the limit: a declared
    Content-Length over it is refused before a byte is read, and a chunked body stops there."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(declared, limit)
    msg = await receive()
    if msg["type"] != "http.request":
        raise ClientLeft("the client disconnected before sending its request body")
    body = msg.get("body", b"")
    if not msg.get("more_body"):  # the usual case: the whole body in one message
        if len(body) > limit:
            raise too_large(str(len(body)), limit)
        return body
    parts, size = [body], len(body)
    while msg.get("more_body"):
        if size > limit:
            raise too_large(f"more than {limit}", limit)
        msg = await receive()
        if msg["type"] != "http.request":
            raise ClientLeft("the client disconnected before sending its request body")
        chunk = msg.get("body", b"")
        parts.append(chunk)
        size += len(chunk)
    if size > limit:
        raise too_large(f"more than {limit}", limit)
    return b"".join(parts)


def json_depth_exceeds(raw: bytes, max_depth: int) -> bool:
    """Whether the JSON text nests arrays/objects deeper than `max_depth`, without decoding it.

    C-speed passes first (strings removed, everything but brackets dropped, innermost empty
    pairs peeled off: each pass lowers the depth by exactly one); the Python walk over what is
    left stops at the first bracket past the limit, so a deep body costs ~max_depth steps.
    """
    if raw.count(b"[") + raw.count(b"{") <= max_depth:
        return False
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    peeled = 0
    while peeled < 3 and brackets:
        brackets, n = _EMPTY_PAIR.subn(b"", brackets)
        if not n:
            break
        peeled += 1
    depth, allowed = 0, max_depth - peeled
    for b in brackets:
        if b in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > allowed:
                return True
        else:
            depth -= 1
    return False


def decode_request(raw: bytes, limits: LimitsSection) -> dict:
    """A request body as a JSON object within [limits]; BadRequest / BodyTooLarge naming the key otherwise."""
    limit = body_limit(limits)
    if len(raw) > limit:
        raise too_large(str(len(raw)), limit)
    if json_depth_exceeds(raw, limits.max_json_depth):
        raise BadRequest(f"request body nests deeper than {limits.max_json_depth} levels ([limits] max_json_depth)")
    try:
        body = _decode(raw)
    except (msgspec.DecodeError, RecursionError) as e:
        raise BadRequest(f"request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    check_n(body, limits)
    return body


def check_n(body: dict, limits: LimitsSection) -> None:
    n = body.get("n")
    if n is None:
        return
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise BadRequest(f"'n' must be a positive integer, got {n!r:.40}", param="n")
    if n > limits.max_n:
        raise BadRequest(f"'n' is {n}; the limit is {limits.max_n} ([limits] max_n)", param="n")
