"""Any OpenAI-compatible server (OpenAI, vLLM, Ollama, Groq, OpenRouter...): bytes forwarded as is."""
from __future__ import annotations

from typing import Any, AsyncIterator

import aiohttp
import msgspec

from ..errors import UpstreamError
from ._http import HTTPProviderBase
from .base import ChatRequest, ChatResult, ChatStream

_JSON = {"content-type": "application/json"}


class OpenAIProvider(HTTPProviderBase):
    default_base_url = "https://api.openai.com/v1"

    def _headers(self) -> dict[str, str]:
        key = self.api_key()
        return {**_JSON, "authorization": f"Bearer {key}"} if key else _JSON

    async def _post(self, path: str, data: bytes, timeout: aiohttp.ClientTimeout) -> aiohttp.ClientResponse:
        try:
            return await self.session().post(self.base_url + path, data=data, headers=self._headers(), timeout=timeout)
        except UpstreamError:
            raise
        except (aiohttp.ClientError, TimeoutError) as e:
            raise self.transport_error(e) from None

    async def _complete(self, path: str, data: bytes, timeout_s: float) -> ChatResult:
        resp = await self._post(path, data, aiohttp.ClientTimeout(total=timeout_s))
        try:
            body = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as e:
            raise self.transport_error(e) from None
        finally:
            resp.release()
        if resp.status != 200:
            raise self.status_error(resp.status, body)
        return ChatResult(200, body)

    async def chat(self, req: ChatRequest) -> ChatResult:
        return await self._complete("/chat/completions", req.raw or msgspec.json.encode(req.body), req.timeout_s)

    async def embeddings(self, body: dict[str, Any], model: str, timeout_s: float) -> ChatResult:
        return await self._complete("/embeddings", msgspec.json.encode(body), timeout_s)

    async def chat_stream(self, req: ChatRequest) -> ChatStream:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=req.timeout_s, sock_read=req.timeout_s)
        resp = await self._post("/chat/completions", req.raw or msgspec.json.encode(req.body), timeout)
        if resp.status != 200:
            try:
                body = await resp.read()
            except (aiohttp.ClientError, TimeoutError) as e:
                raise self.transport_error(e) from None
            finally:
                resp.release()
            raise self.status_error(resp.status, body)

        # close() drops the connection, so the upstream sees the cancellation
        return ChatStream(events=self._events(resp), close=resp.close)

    async def _events(self, resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        """The `data:` payloads of the SSE stream, one per event, until [DONE]."""
        done = False
        try:
            async for line in resp.content:
                if not line.startswith(b"data:"):
                    continue  # blank separators, `event:` lines and `:` keep-alive comments
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    done = True
                    return
                if payload:
                    yield payload
        except (aiohttp.ClientError, TimeoutError) as e:
            raise self.transport_error(e) from None
        finally:
            if done:
                resp.release()
            else:
                resp.close()
