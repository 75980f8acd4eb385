"""`kind = "anthropic"`: OpenAI Chat Completions in, Anthropic Messages API upstream, OpenAI out.

Translation lives in anthropic_out (pure); this module is only the HTTP side on top of
HTTPProviderBase (session, key, timeouts): its headers and its error mapping.
"""
from __future__ import annotations

from typing import Any

from ..config.schema import ProviderConfig
from ..errors import UpstreamError
from . import anthropic_out as tr
from ._http import HTTPProviderBase
from ._openai_shapes import (
    TRANSLATION_ERRORS,
    checked_answer,
    checked_model,
    decode_json,
    encode_json,
    invalid_answer,
    openai_error_body,
)
from .base import ChatRequest, ChatResult, ChatStream, with_deadline

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_KEY_ENV = "ANTHROPIC_API_KEY"


class AnthropicProvider(HTTPProviderBase):
    default_base_url = DEFAULT_BASE_URL
    default_key_envs = (DEFAULT_KEY_ENV,)

    def __init__(self, name: str, cfg: ProviderConfig):
        super().__init__(name, cfg)
        self.url = self.base_url + "/v1/messages"

    def _headers(self) -> dict[str, str]:
        headers = {
            "x-api-key": self.api_key(),
            "anthropic-version": self.cfg.api_version or tr.DEFAULT_VERSION,
            "content-type": "application/json",
            "accept": "application/json",
        }
        headers.update(self.cfg.headers)
        return headers

    def status_error(self, status: int, body: bytes) -> UpstreamError:
        return tr.error_from_anthropic(status, decode_json(body), self.name)

    async def chat(self, req: ChatRequest) -> ChatResult:
        payload = tr.request_to_anthropic(req.body, checked_model(req.model), self.cfg.max_tokens)
        payload.pop("stream", None)
        resp_json = await self.complete_json(self.url, encode_json(payload), self._headers(), req.timeout_s)
        is_message = resp_json.get("type") == "message" and isinstance(resp_json.get("content"), list)
        checked_answer(self.name, resp_json, is_message, "a Messages API message")
        try:
            out, usage = tr.response_to_openai(resp_json, req.model)
        except TRANSLATION_ERRORS as e:
            raise invalid_answer(self.name, f"the message has a field of an unexpected type ({e})") from None
        return ChatResult(status=200, body=encode_json(out), usage=usage, raw_usage=resp_json.get("usage"))

    async def chat_stream(self, req: ChatRequest) -> ChatStream:
        payload = tr.request_to_anthropic(req.body, checked_model(req.model), self.cfg.max_tokens)
        payload["stream"] = True
        headers = self._headers()
        headers["accept"] = "text/event-stream"
        stream = await self.open_translated_stream(self.url, encode_json(payload), headers, req.timeout_s,
                                                   tr.StreamTranslator(req.model, self.name))
        return with_deadline(stream, req, self.name)

    async def embeddings(self, body: dict[str, Any], model: str, timeout_s: float) -> ChatResult:
        msg = "anthropic has no embeddings API: route embeddings to an openai or gemini provider"
        raise UpstreamError(f"{self.name}: {msg}", status=400, category=None,
                            body=openai_error_body(msg, "invalid_request_error", "unsupported_model", "model"))
