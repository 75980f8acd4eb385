"""Any OpenAI-compatible server (OpenAI, vLLM, Ollama, Groq, OpenRouter...): bytes forwarded as is.

Forwarded, but checked first: a 200 whose body is not a chat completion (HTML from a proxy, an
empty or cut body, an in-band `{"error": ...}`) and a stream that breaks off, carries a
non-JSON or error event, or ends without `[DONE]` are `upstream_invalid` errors, not successes.
The checks decode into structs of one or two raw fields, so the bytes are scanned, not built.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec

from ..config.schema import ProviderConfig
from ._http import NETWORK_ERRORS, HTTPProviderBase, invalid_answer
from ._openai_shapes import checked_model, error_object
from ._sse import SSEData, StreamIncomplete
from .base import ChatRequest, ChatResult, ChatStream, with_deadline

_JSON = {"content-type": "application/json"}


class _Answer(msgspec.Struct):
    """What a chat completion, a stream chunk or an embeddings list must have (one of them)."""

    choices: list[msgspec.Raw] | None = None
    data: list[msgspec.Raw] | None = None
    usage: Any = None   # small objects: decoded (msgspec has no Raw-or-null field type)
    error: Any = None


_check = msgspec.json.Decoder(_Answer).decode


def _invalid_reason(body: bytes, field: str, *, chunk: bool = False) -> str | None:
    """Why `body` is not an answer with a list `field`; None when it is one. A stream `chunk`
    may carry only `usage` (some servers send the closing usage chunk without `choices`)."""
    try:
        ans = _check(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return "the answer is not the expected JSON object" if body.strip() else "the answer is empty"
    if getattr(ans, field) is not None or (chunk and ans.usage is not None and ans.error is None):
        return None
    if ans.error is not None:
        msg = error_object({"error": ans.error}).get("message")
        return f"an error inside a 200 answer: {msg}" if msg else "an error inside a 200 answer"
    return f"the answer has no '{field}'"


class OpenAIProvider(HTTPProviderBase):
    default_base_url = "https://api.openai.com/v1"
    timed_out = "timed out"

    def __init__(self, name: str, cfg: ProviderConfig):
        super().__init__(name, cfg)
        self.session_headers = cfg.headers or None  # under the request's own: ours win on a clash

    def _headers(self) -> dict[str, str]:
        key = self.api_key()
        return {**_JSON, "authorization": f"Bearer {key}"} if key else _JSON

    def _validated(self, body: bytes, field: str) -> ChatResult:
        why = _invalid_reason(body, field)
        if why:
            raise invalid_answer(self.name, why, body=body)
        return ChatResult(200, body)

    async def chat(self, req: ChatRequest) -> ChatResult:
        checked_model(req.model)
        body = await self.complete(self.base_url + "/chat/completions", req.raw or msgspec.json.encode(req.body),
                                   self._headers(), req.timeout_s)
        return self._validated(body, "choices")

    async def embeddings(self, body: dict[str, Any], model: str, timeout_s: float) -> ChatResult:
        checked_model(model)
        answer = await self.complete(self.base_url + "/embeddings", msgspec.json.encode(body), self._headers(), timeout_s)
        return self._validated(answer, "data")

    async def chat_stream(self, req: ChatRequest) -> ChatStream:
        checked_model(req.model)
        resp = await self.open_stream(self.base_url + "/chat/completions", req.raw or msgspec.json.encode(req.body),
                                      self._headers(), req.timeout_s)
        ctype = resp.headers.get("content-type", "")
        if ctype and "event-stream" not in ctype:  # HTML from a proxy, or a JSON answer to a stream request
            body = await self.read(resp)
            why = _invalid_reason(body, "choices") if "json" in ctype else None
            raise invalid_answer(self.name, why or f"a stream was asked for, the answer is {ctype.split(';')[0]}",
                                 body=body)
        # the first read's chunks are read now: a broken or empty stream still raises where routing
        # can retry or fall back, before the client has seen a byte. close() drops the connection.
        stream = ChatStream(close=resp.close)
        stream.batches = batches = self._batches(resp, stream)
        try:
            stream.head = await batches.__anext__()
        except StopAsyncIteration:  # cannot happen (an empty stream raises), but stay an empty stream
            pass
        return with_deadline(stream, req, self.name)

    async def _batches(self, resp: aiohttp.ClientResponse, stream: ChatStream) -> AsyncIterator[list[bytes]]:
        """The `data:` payloads of the SSE stream, each checked, until [DONE]: one list per read
        of the upstream (what aiohttp has buffered), so the relay's work is per read, not per chunk.
        The chunks before an invalid one are still yielded (relayed and recorded) before it raises."""
        ended, seen = False, 0
        sse = SSEData()
        content = resp.content
        try:
            while not sse.done:
                data = await content.readany()
                if not data:
                    sse.finish()
                    break
                batch = sse.feed(data)
                if not batch:
                    continue
                for i, payload in enumerate(batch):
                    why = _invalid_reason(payload, "choices", chunk=True)
                    if why:
                        if i:
                            yield batch[:i]
                        raise invalid_answer(self.name, f"stream event {seen + i + 1}: {why}", body=payload)
                seen += len(batch)
                stream.ending = sse.done  # this read held [DONE]: nothing but the end follows
                yield batch
            if not seen:
                raise invalid_answer(self.name, "the stream ended before its first chunk")
            ended = True
        except StreamIncomplete as e:
            raise invalid_answer(self.name, f"{e} after {seen} chunks") from None
        except NETWORK_ERRORS as e:
            raise self.transport_error(e) from None
        finally:
            if ended:
                resp.release()  # read to the end: the connection may serve the next call
            else:
                resp.close()  # cut short (client gone, error): drop it so the upstream stops
