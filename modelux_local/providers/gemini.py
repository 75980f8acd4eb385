"""`kind = "gemini"`: OpenAI Chat Completions in, Gemini generateContent upstream, OpenAI out.

Translation lives in _gemini_translate (pure); this module is the HTTP side. It also keeps a
small bounded map of tool-call id -> thoughtSignature: Gemini's thinking models return a
signature on each functionCall and want it back on that call in the next turn, while OpenAI
clients only echo our generated `call_...` id.
"""
from __future__ import annotations

import asyncio
import os
from collections import OrderedDict
from typing import Any, AsyncIterator

import aiohttp

from ..config.schema import ProviderConfig
from ..errors import UpstreamError
from . import _gemini_translate as tr
from ._openai_shapes import decode_json, encode_json
from ._sse import client_timeout, iter_sse, new_session, prefetch, stream_closer, transport_error
from .base import ChatRequest, ChatResult, ChatStream

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
DEFAULT_KEY_ENVS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
MAX_SIGNATURES = 10_000


class _Signatures(OrderedDict):
    """A dict that forgets its oldest entries past MAX_SIGNATURES (bounded memory)."""

    def __setitem__(self, key: str, value: str) -> None:
        super().__setitem__(key, value)
        if len(self) > MAX_SIGNATURES:
            self.popitem(last=False)


class GeminiProvider:
    kind = "gemini"

    def __init__(self, name: str, cfg: ProviderConfig):
        self.name, self.cfg = name, cfg
        self.base = (cfg.base_url or DEFAULT_BASE_URL).rstrip("/") + "/v1beta/models/"
        self.signatures: dict[str, str] = _Signatures()
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = new_session(self.cfg.max_connections)
        return self._session

    def _headers(self) -> dict[str, str]:
        envs = (self.cfg.api_key_env,) if self.cfg.api_key_env else DEFAULT_KEY_ENVS
        key = next((os.environ[e] for e in envs if os.environ.get(e)), None)
        if not key:
            # category "config" (as the openai kind does): not retried, but routing may fall back
            raise UpstreamError(f"provider {self.name!r}: environment variable {envs[0]} is not set",
                                status=None, category="config")
        headers = {"x-goog-api-key": key, "content-type": "application/json"}
        headers.update(self.cfg.headers)
        return headers

    async def _post_json(self, url: str, payload: dict[str, Any], timeout_s: float) -> Any:
        headers = self._headers()
        try:
            async with self._http().post(url, data=encode_json(payload), headers=headers,
                                         timeout=client_timeout(timeout_s, stream=False)) as resp:
                data = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise transport_error(exc, self.name) from exc
        parsed = decode_json(data)
        if status != 200:
            raise tr.error_from_gemini(status, parsed, self.name)
        if not isinstance(parsed, dict):
            raise UpstreamError(f"{self.name}: upstream answered with invalid JSON", status=502, category="5xx")
        return parsed

    async def chat(self, req: ChatRequest) -> ChatResult:
        payload = tr.request_to_gemini(req.body, self.signatures)
        resp = await self._post_json(f"{self.base}{req.model}:generateContent", payload, req.timeout_s)
        out, usage = tr.response_to_openai(resp, req.model, self.signatures, self.name)
        return ChatResult(status=200, body=encode_json(out), usage=usage, raw_usage=resp.get("usageMetadata"))

    async def chat_stream(self, req: ChatRequest) -> ChatStream:
        payload = tr.request_to_gemini(req.body, self.signatures)
        headers = self._headers()
        url = f"{self.base}{req.model}:streamGenerateContent?alt=sse"
        try:
            resp = await self._http().post(url, data=encode_json(payload), headers=headers,
                                           timeout=client_timeout(req.timeout_s, stream=True))
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise transport_error(exc, self.name) from exc
        if resp.status != 200:
            try:
                data = await resp.read()
            finally:
                resp.release()
            raise tr.error_from_gemini(resp.status, decode_json(data), self.name)
        translator = tr.StreamTranslator(req.model, self.name, self.signatures)
        stream = ChatStream(events=None)  # type: ignore[arg-type]  # set below, after the first chunk
        chunks = self._chunks(resp, translator, stream)
        # Pull the first chunk now: a blocked prompt or an error chunk raises before any bytes go out.
        stream.events = await prefetch(chunks)
        stream.close = stream_closer(resp, chunks)
        return stream

    async def _chunks(self, resp: aiohttp.ClientResponse, translator: tr.StreamTranslator,
                      stream: ChatStream) -> AsyncIterator[bytes]:
        try:
            async for ev in iter_sse(resp.content):
                data = decode_json(ev.data)
                if data is None:
                    continue
                for chunk in translator.feed(data):
                    yield chunk
            if translator.usage is not None:
                stream.raw_usage.append(translator.usage)  # cumulative: only the final one counts
            for chunk in translator.finish_chunks():
                yield chunk
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise transport_error(exc, self.name) from exc
        finally:
            resp.close()

    async def embeddings(self, body: dict[str, Any], model: str, timeout_s: float) -> ChatResult:
        payload, texts = tr.embeddings_request(body, model)
        resp = await self._post_json(f"{self.base}{model}:batchEmbedContents", payload, timeout_s)
        out, usage = tr.embeddings_to_openai(resp, model, texts, body.get("encoding_format"))
        return ChatResult(status=200, body=encode_json(out), usage=usage, raw_usage=resp.get("usageMetadata"))

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
