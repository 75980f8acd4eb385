"""`kind = "anthropic"`: OpenAI Chat Completions in, Anthropic Messages API upstream, OpenAI out.

Translation lives in _anthropic_translate (pure); this module is only the HTTP side: one
aiohttp session per provider, headers, timeouts, error mapping, and the stream loop.
"""
from __future__ import annotations

import asyncio
import os
from typing import Any, AsyncIterator

import aiohttp

from ..config.schema import ProviderConfig
from ..errors import UpstreamError
from . import _anthropic_translate as tr
from ._openai_shapes import decode_json, encode_json
from ._sse import client_timeout, iter_sse, new_session, prefetch, stream_closer, transport_error
from .base import ChatRequest, ChatResult, ChatStream

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_KEY_ENV = "ANTHROPIC_API_KEY"


class AnthropicProvider:
    kind = "anthropic"

    def __init__(self, name: str, cfg: ProviderConfig):
        self.name, self.cfg = name, cfg
        self.url = (cfg.base_url or DEFAULT_BASE_URL).rstrip("/") + "/v1/messages"
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = new_session(self.cfg.max_connections)
        return self._session

    def _headers(self) -> dict[str, str]:
        env = self.cfg.api_key_env or DEFAULT_KEY_ENV
        key = os.environ.get(env)
        if not key:
            # category "config" (as the openai kind does): not retried, but routing may fall back
            raise UpstreamError(f"provider {self.name!r}: environment variable {env} is not set",
                                status=None, category="config")
        headers = {
            "x-api-key": key,
            "anthropic-version": self.cfg.api_version or tr.DEFAULT_VERSION,
            "content-type": "application/json",
            "accept": "application/json",
        }
        headers.update(self.cfg.headers)
        return headers

    async def _raise_for(self, resp: aiohttp.ClientResponse) -> None:
        data = await resp.read()
        raise tr.error_from_anthropic(resp.status, decode_json(data), self.name)

    async def chat(self, req: ChatRequest) -> ChatResult:
        payload = tr.request_to_anthropic(req.body, req.model, self.cfg.max_tokens)
        payload.pop("stream", None)
        headers = self._headers()
        try:
            async with self._http().post(self.url, data=encode_json(payload), headers=headers,
                                         timeout=client_timeout(req.timeout_s, stream=False)) as resp:
                if resp.status != 200:
                    await self._raise_for(resp)
                data = await resp.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise transport_error(exc, self.name) from exc
        resp_json = decode_json(data)
        if not isinstance(resp_json, dict):
            raise UpstreamError(f"{self.name}: upstream answered with invalid JSON", status=502, category="5xx")
        out, usage = tr.response_to_openai(resp_json, req.model)
        return ChatResult(status=200, body=encode_json(out), usage=usage, raw_usage=resp_json.get("usage"))

    async def chat_stream(self, req: ChatRequest) -> ChatStream:
        payload = tr.request_to_anthropic(req.body, req.model, self.cfg.max_tokens)
        payload["stream"] = True
        headers = self._headers()
        headers["accept"] = "text/event-stream"
        try:
            resp = await self._http().post(self.url, data=encode_json(payload), headers=headers,
                                           timeout=client_timeout(req.timeout_s, stream=True))
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise transport_error(exc, self.name) from exc
        if resp.status != 200:
            try:
                await self._raise_for(resp)
            finally:
                resp.release()
        translator = tr.StreamTranslator(req.model, self.name)
        chunks = self._chunks(resp, translator)
        # Read up to the first chunk before answering: an error event or a dead stream at the
        # start still raises here, where routing can retry or fall back before the client sees bytes.
        events = await prefetch(chunks)
        return ChatStream(events=events, raw_usage=translator.raw_usage, close=stream_closer(resp, chunks))

    async def _chunks(self, resp: aiohttp.ClientResponse, translator: tr.StreamTranslator) -> AsyncIterator[bytes]:
        try:
            async for ev in iter_sse(resp.content):
                data = decode_json(ev.data)
                if not isinstance(data, dict):
                    continue
                for chunk in translator.feed(ev.event, data):
                    yield chunk
            for chunk in translator.finish_chunks():
                yield chunk
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise transport_error(exc, self.name) from exc
        finally:
            resp.close()

    async def embeddings(self, body: dict[str, Any], model: str, timeout_s: float) -> ChatResult:
        msg = "anthropic has no embeddings API: route embeddings to an openai or gemini provider"
        raise UpstreamError(f"{self.name}: {msg}", status=400, category=None,
                            body=tr.openai_error_body(msg, "invalid_request_error", "unsupported_model", "model"))

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
