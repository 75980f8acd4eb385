"""What every HTTP provider shares: one pooled aiohttp session, key lookup, error mapping."""
from __future__ import annotations

import asyncio
import os

import aiohttp

from ..config.schema import ProviderConfig
from ..errors import UpstreamError, category_for_status
from ._openai_shapes import decode_json, openai_error_body


class HTTPProviderBase:
    """Creates its session lazily, inside the running loop, once; closed by `aclose`."""

    default_base_url = ""

    def __init__(self, name: str, cfg: ProviderConfig):
        self.name = name
        self.kind = cfg.kind
        self.cfg = cfg
        self.base_url = (cfg.base_url or self.default_base_url).rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        s = self._session
        if s is None or s.closed:
            s = self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.cfg.max_connections, ttl_dns_cache=300),
                headers=self.cfg.headers or None,
                auto_decompress=True,
            )
        return s

    def api_key(self) -> str | None:
        """Read at call time so a key exported after start works; never stored or logged."""
        env = self.cfg.api_key_env
        if not env:
            return None
        key = os.environ.get(env)
        if not key:
            raise UpstreamError(f"provider {self.name!r}: environment variable {env} is not set",
                                status=None, category="config")
        return key

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()

    def transport_error(self, e: BaseException) -> UpstreamError:
        if isinstance(e, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
            return UpstreamError(f"{self.name}: timed out", status=None, category="timeout")
        return UpstreamError(f"{self.name}: connection failed ({type(e).__name__}: {e})", status=None, category="connect")

    def status_error(self, status: int, body: bytes, message: str | None = None) -> UpstreamError:
        msg = message or _error_message(body) or f"HTTP {status}"
        return UpstreamError(f"{self.name}: HTTP {status}: {msg}", status=status,
                             category=category_for_status(status), body=body if _is_openai_error(body) else
                             openai_error_body(msg, "upstream_error"))


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
