"""`kind = "gemini"`: OpenAI Chat Completions in, Gemini generateContent upstream, OpenAI out.

Translation lives in _gemini_translate (pure); this module is the HTTP side on top of
HTTPProviderBase (session, key, timeouts). It also keeps a small bounded map of tool-call
id -> thoughtSignature: Gemini's thinking models return a signature on each functionCall and
want it back on that call in the next turn, while OpenAI clients only echo our generated
`call_...` id.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

from ..config.schema import ProviderConfig
from ..errors import UpstreamError
from . import _gemini_translate as tr
from ._http import HTTPProviderBase
from ._openai_shapes import TRANSLATION_ERRORS, checked_answer, checked_model, decode_json, encode_json, invalid_answer
from .base import ChatRequest, ChatResult, ChatStream, with_deadline

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
DEFAULT_KEY_ENVS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
MAX_SIGNATURES = 10_000


class _Signatures(OrderedDict):
    """A dict that forgets its oldest entries past MAX_SIGNATURES (bounded memory)."""

    def __setitem__(self, key: str, value: str) -> None:
        super().__setitem__(key, value)
        if len(self) > MAX_SIGNATURES:
            self.popitem(last=False)


class GeminiProvider(HTTPProviderBase):
    default_base_url = DEFAULT_BASE_URL
    default_key_envs = DEFAULT_KEY_ENVS

    def __init__(self, name: str, cfg: ProviderConfig):
        super().__init__(name, cfg)
        self.base = self.base_url + "/v1beta/models/"
        self.signatures: dict[str, str] = _Signatures()

    def _headers(self) -> dict[str, str]:
        headers = {"x-goog-api-key": self.api_key(), "content-type": "application/json"}
        headers.update(self.cfg.headers)
        return headers

    def status_error(self, status: int, body: bytes) -> UpstreamError:
        return tr.error_from_gemini(status, decode_json(body), self.name)

    async def chat(self, req: ChatRequest) -> ChatResult:
        payload = tr.request_to_gemini(req.body, self.signatures)
        url = f"{self.base}{checked_model(req.model, in_path=True)}:generateContent"
        resp = await self.complete_json(url, encode_json(payload), self._headers(), req.timeout_s)
        blocked = bool((resp.get("promptFeedback") or {}).get("blockReason"))  # a 400, said by the translation
        checked_answer(self.name, resp, isinstance(resp.get("candidates"), list) or blocked, "a generateContent answer")
        try:
            out, usage = tr.response_to_openai(resp, req.model, self.signatures, self.name)
        except TRANSLATION_ERRORS as e:
            raise invalid_answer(self.name, f"the answer has a field of an unexpected type ({e})") from None
        return ChatResult(status=200, body=encode_json(out), usage=usage, raw_usage=resp.get("usageMetadata"))

    async def chat_stream(self, req: ChatRequest) -> ChatStream:
        payload = tr.request_to_gemini(req.body, self.signatures)
        headers = self._headers()
        url = f"{self.base}{checked_model(req.model, in_path=True)}:streamGenerateContent?alt=sse"
        # A blocked prompt or an error chunk at the start raises here, before any bytes go out.
        stream = await self.open_translated_stream(url, encode_json(payload), headers, req.timeout_s,
                                                   tr.StreamTranslator(req.model, self.name, self.signatures))
        return with_deadline(stream, req, self.name)

    async def embeddings(self, body: dict[str, Any], model: str, timeout_s: float) -> ChatResult:
        path_model = checked_model(model, in_path=True)
        payload, texts = tr.embeddings_request(body, model)
        resp = await self.complete_json(f"{self.base}{path_model}:batchEmbedContents", encode_json(payload),
                                        self._headers(), timeout_s)
        checked_answer(self.name, resp, isinstance(resp.get("embeddings"), list), "a batchEmbedContents answer")
        try:
            out, usage = tr.embeddings_to_openai(resp, model, texts, body.get("encoding_format"))
        except TRANSLATION_ERRORS as e:
            raise invalid_answer(self.name, f"the answer has a field of an unexpected type ({e})") from None
        return ChatResult(status=200, body=encode_json(out), usage=usage, raw_usage=resp.get("usageMetadata"))
