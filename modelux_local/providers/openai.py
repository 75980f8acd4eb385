"""Any OpenAI-compatible server (OpenAI, vLLM, Ollama, Groq, OpenRouter...): bytes forwarded as is."""
from __future__ import annotations

from typing import Any, AsyncIterator

import aiohttp
import msgspec

from ..config.schema import ProviderConfig
from ._http import NETWORK_ERRORS, HTTPProviderBase
from ._openai_shapes import checked_model
from ._sse import iter_sse_data
from .base import ChatRequest, ChatResult, ChatStream

_JSON = {"content-type": "application/json"}


class OpenAIProvider(HTTPProviderBase):
    default_base_url = "https://api.openai.com/v1"
    timed_out = "timed out"

    def __init__(self, name: str, cfg: ProviderConfig):
        super().__init__(name, cfg)
        self.session_headers = cfg.headers or None  # under the request's own: ours win on a clash

    def _headers(self) -> dict[str, str]:
        key = self.api_key()
        return {**_JSON, "authorization": f"Bearer {key}"} if key else _JSON

    async def chat(self, req: ChatRequest) -> ChatResult:
        checked_model(req.model)
        body = await self.complete(self.base_url + "/chat/completions", req.raw or msgspec.json.encode(req.body),
                                   self._headers(), req.timeout_s)
        return ChatResult(200, body)

    async def embeddings(self, body: dict[str, Any], model: str, timeout_s: float) -> ChatResult:
        checked_model(model)
        answer = await self.complete(self.base_url + "/embeddings", msgspec.json.encode(body), self._headers(), timeout_s)
        return ChatResult(200, answer)

    async def chat_stream(self, req: ChatRequest) -> ChatStream:
        checked_model(req.model)
        resp = await self.open_stream(self.base_url + "/chat/completions", req.raw or msgspec.json.encode(req.body),
                                      self._headers(), req.timeout_s)
        # close() drops the connection, so the upstream sees the cancellation
        return ChatStream(events=self._events(resp), close=resp.close)

    async def _events(self, resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        """The `data:` payloads of the SSE stream, one per event, until [DONE] (or the end)."""
        ended = False
        try:
            async for payload in iter_sse_data(resp.content):
                yield payload
            ended = True
        except NETWORK_ERRORS as e:
            raise self.transport_error(e) from None
        finally:
            if ended:
                resp.release()  # read to the end: the connection may serve the next call
            else:
                resp.close()  # cut short (client gone, error): drop it so the upstream stops
