"""What every HTTP provider kind (openai, anthropic, gemini) shares.

One lazily created, pooled aiohttp session per provider; the key read from the environment at
call time; the timeouts; POSTs whose network failures become routing-aware `UpstreamError`s;
and a non-200 answer read and mapped by the kind's own `status_error`. A subclass says only
what differs: its default base URL and key variables, its headers, how its errors read.
"""
from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any, Protocol

import aiohttp

from ..config.schema import ProviderConfig
from ..errors import UpstreamError, category_for_status
from ._openai_shapes import decode_json, invalid_answer, openai_error_body
from ._sse import iter_sse, prefetch, stream_closer
from .base import ChatStream

NETWORK_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)


def client_timeout(timeout_s: float, *, stream: bool) -> aiohttp.ClientTimeout:
    if stream:
        # sock_read bounds every wait for bytes, the response headers included: so it is the
        # time-to-first-byte deadline and then the longest silence allowed between chunks.
        return aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s)
    return aiohttp.ClientTimeout(total=timeout_s)


def transport_error(exc: BaseException, provider: str, timed_out: str = "upstream timed out") -> UpstreamError:
    """Network-level failures: timeouts and connection problems, both retryable by routing."""
    if isinstance(exc, asyncio.TimeoutError):  # aiohttp's ServerTimeoutError is one too
        return UpstreamError(f"{provider}: {timed_out}", status=None, category="timeout")
    return UpstreamError(f"{provider}: connection failed ({type(exc).__name__}: {exc})", status=None,
                         category="connect")


class StreamTranslator(Protocol):
    """A kind's pure stream translator: its SSE events in, OpenAI chunk JSON bytes out."""

    raw_usage: list[Any]  # provider-reported usage, appended as seen

    def feed_sse(self, event: str, data: str) -> list[bytes]: ...

    def finish_chunks(self) -> list[bytes]: ...  # the closing usage chunk; raises if the stream was cut


class HTTPProviderBase:
    default_base_url = ""
    default_key_envs: tuple[str, ...] = ()  # tried in order when the config names no api_key_env
    timed_out = "upstream timed out"        # the wording clients and records already see, per kind

    def __init__(self, name: str, cfg: ProviderConfig):
        self.name = name
        self.kind = cfg.kind
        self.cfg = cfg
        self.base_url = (cfg.base_url or self.default_base_url).rstrip("/")
        # Headers set on the session are defaults a request's own headers override; None when a
        # kind merges the config's headers into each request itself (the config's then win).
        self.session_headers: dict[str, str] | None = None
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        """Made on first use, inside the running loop: a session is bound to the loop that made it."""
        s = self._session
        if s is None or s.closed:
            s = self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.cfg.max_connections, ttl_dns_cache=300),
                headers=self.session_headers,
            )
        return s

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def api_key(self) -> str | None:
        """Read at call time so a key exported after start works; never stored or logged.

        None when neither the config nor the kind names a variable (a keyless local server).
        """
        envs = (self.cfg.api_key_env,) if self.cfg.api_key_env else self.default_key_envs
        if not envs:
            return None
        key = next((os.environ[e] for e in envs if os.environ.get(e)), None)
        if not key:
            # category "config": not retried, but routing may fall back to another provider
            raise UpstreamError(f"provider {self.name!r}: environment variable {envs[0]} is not set",
                                status=None, category="config")
        return key

    def transport_error(self, exc: BaseException) -> UpstreamError:
        return transport_error(exc, self.name, self.timed_out)

    def status_error(self, status: int, body: bytes) -> UpstreamError:
        """A non-200 answer: an OpenAI-shaped error body passes as is (translating kinds override)."""
        msg = _error_message(body) or f"HTTP {status}"
        return UpstreamError(f"{self.name}: HTTP {status}: {msg}", status=status,
                             category=category_for_status(status),
                             body=body if _is_openai_error(body) else openai_error_body(msg, "upstream_error"))

    async def post(self, url: str, data: bytes, headers: Any, timeout: aiohttp.ClientTimeout) -> aiohttp.ClientResponse:
        try:
            return await self.session().post(url, data=data, headers=headers, timeout=timeout)
        except NETWORK_ERRORS as exc:
            raise self.transport_error(exc) from None

    async def read(self, resp: aiohttp.ClientResponse) -> bytes:
        """The whole body; the connection goes back to the pool."""
        try:
            return await resp.read()
        except NETWORK_ERRORS as exc:
            raise self.transport_error(exc) from None
        finally:
            resp.release()

    async def complete(self, url: str, data: bytes, headers: Any, timeout_s: float) -> bytes:
        """A plain call: the 200 body, or the kind's error for any other status."""
        resp = await self.post(url, data, headers, client_timeout(timeout_s, stream=False))
        body = await self.read(resp)
        if resp.status != 200:
            raise _with_retry_after(self.status_error(resp.status, body), resp.headers)
        return body

    async def complete_json(self, url: str, data: bytes, headers: Any, timeout_s: float) -> dict[str, Any]:
        body = await self.complete(url, data, headers, timeout_s)
        parsed = decode_json(body)
        if not isinstance(parsed, dict):
            raise invalid_answer(self.name, "the answer is not a JSON object", body=body)
        return parsed

    async def open_stream(self, url: str, data: bytes, headers: Any, timeout_s: float) -> aiohttp.ClientResponse:
        """A streaming call whose status is 200 (any other raises the kind's error); the body is unread."""
        resp = await self.post(url, data, headers, client_timeout(timeout_s, stream=True))
        if resp.status != 200:
            body = await self.read(resp)
            raise _with_retry_after(self.status_error(resp.status, body), resp.headers)
        return resp

    async def open_translated_stream(self, url: str, data: bytes, headers: Any, timeout_s: float,
                                     translator: StreamTranslator) -> ChatStream:
        resp = await self.open_stream(url, data, headers, timeout_s)
        chunks = self._translated_chunks(resp, translator)
        # Read up to the first chunk before answering: an error event or a dead stream at the
        # start still raises here, where routing can retry or fall back before the client sees bytes.
        events = await prefetch(chunks)
        return ChatStream(events=events, raw_usage=translator.raw_usage, close=stream_closer(resp, chunks))

    async def _translated_chunks(self, resp: aiohttp.ClientResponse,
                                 translator: StreamTranslator) -> AsyncIterator[bytes]:
        try:
            async for ev in iter_sse(resp.content):
                for chunk in translator.feed_sse(ev.event, ev.data):
                    yield chunk
            for chunk in translator.finish_chunks():
                yield chunk
        except NETWORK_ERRORS as exc:
            raise self.transport_error(exc) from exc
        finally:
            resp.close()


def _is_openai_error(body: bytes) -> bool:
    d = decode_json(body)
    return isinstance(d, dict) and isinstance(d.get("error"), dict) and "message" in d["error"]


def _error_message(body: bytes) -> str | None:
    d = decode_json(body)
    if isinstance(d, dict):
        e = d.get("error")
        if isinstance(e, dict):
            return str(e.get("message") or e)
        if isinstance(e, str):
            return e
    text = body[:300].decode("utf-8", "replace").strip()
    return text or None


def _with_retry_after(err: UpstreamError, headers: Any) -> UpstreamError:
    """Carries the upstream's Retry-After (seconds or an HTTP date; `retry-after-ms` too) so
    routing waits at least that long before retrying the same target."""
    err.retry_after_s = parse_retry_after(headers.get("retry-after-ms"), headers.get("retry-after"))
    return err


def parse_retry_after(ms: str | None, value: str | None) -> float | None:
    try:
        if ms:
            return max(0.0, float(ms) / 1000)
        if value:
            return max(0.0, float(value))
    except ValueError:
        pass
    if value:
        import time as _time
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - _time.time())
        except (TypeError, ValueError):
            return None
    return None
