"""GeminiProvider against a real (fake) Gemini server that validates every request."""
from __future__ import annotations

import json

import aiohttp
import pytest
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from modelux_local.config.schema import ProviderConfig
from modelux_local.errors import UpstreamError
from modelux_local.providers import _gemini_translate as tr
from modelux_local.providers.base import ChatRequest
from modelux_local.providers.gemini import GeminiProvider
from tests.fakes.fake_gemini import FakeGemini

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                   "properties": {"city": {"type": "string"}, "unit": {"type": ["string", "null"],
                                                                      "enum": ["C", "F"]}},
                   "required": ["city"], "additionalProperties": False}}}
PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


@pytest.fixture(scope="module")
def up():
    with FakeGemini() as fake:
        yield fake


@pytest.fixture
async def provider(up, monkeypatch):
    monkeypatch.setenv("TEST_GEMINI_KEY", "AIza-test-secret")
    p = GeminiProvider("gemini", ProviderConfig(kind="gemini", base_url=up.base_url, api_key_env="TEST_GEMINI_KEY"))
    yield p
    await p.aclose()


def req(body: dict, stream: bool = False, timeout_s: float = 10.0) -> ChatRequest:
    return ChatRequest(body={"model": "gemini-x", **body}, model="gemini-x", stream=stream, timeout_s=timeout_s)


async def collect(stream) -> list[dict]:
    chunks = []
    async for raw in stream.events:
        ChatCompletionChunk.model_validate_json(raw)
        chunks.append(json.loads(raw))
    return chunks


def reassemble(chunks: list[dict]):
    text, calls, finish, usage = "", {}, None, None
    for c in chunks:
        usage = c.get("usage") or usage
        for ch in c["choices"]:
            d = ch["delta"]
            text += d.get("content") or ""
            for tc in d.get("tool_calls") or []:
                slot = calls.setdefault(tc["index"], {"id": None, "name": None, "arguments": ""})
                slot["id"] = tc.get("id") or slot["id"]
                slot["name"] = (tc.get("function") or {}).get("name") or slot["name"]
                slot["arguments"] += (tc.get("function") or {}).get("arguments") or ""
            finish = ch.get("finish_reason") or finish
    return text, calls, finish, usage


async def test_text_system_and_generation_config(up, provider):
    up.enqueue(text="Bonjour", prompt_tokens=11, output_tokens=2)
    res = await provider.chat(req({"messages": [
        {"role": "system", "content": "Answer in French."}, {"role": "user", "content": "hello"}],
        "temperature": 0.3, "top_p": 0.9, "max_tokens": 64, "stop": ["\n\n"], "seed": 7}))
    out = ChatCompletion.model_validate_json(res.body)
    assert out.choices[0].message.content == "Bonjour" and out.choices[0].finish_reason == "stop"
    sent = up.requests[-1]
    assert sent.path == "/v1beta/models/gemini-x:generateContent"
    assert sent.headers["x-goog-api-key"] == "AIza-test-secret"
    assert sent.json["systemInstruction"] == {"parts": [{"text": "Answer in French."}]}
    assert sent.json["generationConfig"] == {"temperature": 0.3, "topP": 0.9, "seed": 7, "maxOutputTokens": 64,
                                             "stopSequences": ["\n\n"]}
    assert res.usage.input_tokens == 11 and res.usage.output_tokens == 2


async def test_multi_turn_and_images(up, provider):
    res = await provider.chat(req({"messages": [
        {"role": "user", "content": [{"type": "text", "text": "see"}, {"type": "image_url", "image_url": {"url": PNG}}]},
        {"role": "assistant", "content": "A pixel."},
        {"role": "user", "content": "thanks"}]}))
    assert res.status == 200
    contents = up.requests[-1].json["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    assert contents[0]["parts"][1]["inlineData"]["mimeType"] == "image/png"
    with pytest.raises(UpstreamError) as err:
        await provider.chat(req({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]}))
    assert err.value.status == 400 and "data: URL" in json.loads(err.value.body)["error"]["message"]


async def test_tools_round_trip_with_signature(up, provider):
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    first = await provider.chat(req({"messages": messages, "tools": [WEATHER],
                                     "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}))
    sent = up.requests[-1].json
    params = sent["tools"][0]["functionDeclarations"][0]["parameters"]
    assert "additionalProperties" not in params and "$schema" not in params
    assert params["properties"]["unit"] == {"type": "string", "nullable": True, "enum": ["C", "F"]}
    assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}
    out = ChatCompletion.model_validate_json(first.body)
    assert out.choices[0].finish_reason == "tool_calls"
    call = out.choices[0].message.tool_calls[0]
    assert call.id.startswith("call_") and json.loads(call.function.arguments) == {"city": "sample"}
    messages += [out.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "18C"}]
    second = await provider.chat(req({"messages": messages, "tools": [WEATHER]}))
    final = ChatCompletion.model_validate_json(second.body)
    assert final.choices[0].message.content == 'tool said: [{"result": "18C"}]'
    contents = up.requests[-1].json["contents"]
    assert contents[1]["parts"][0]["thoughtSignature"] == "sig-get_weather"  # given back on the call
    assert contents[2]["parts"][0] == {"functionResponse": {"name": "get_weather", "response": {"result": "18C"}}}


async def test_tool_result_without_call_is_refused(provider):
    with pytest.raises(UpstreamError) as err:
        await provider.chat(req({"messages": [{"role": "user", "content": "x"},
                                              {"role": "tool", "tool_call_id": "call_nope", "content": "1"}]}))
    assert err.value.status == 400 and json.loads(err.value.body)["error"]["param"] == "messages[1].tool_call_id"


async def test_usage_cached_and_thoughts(up, provider):
    up.enqueue(text="ok", prompt_tokens=100, output_tokens=10, cached=400, thoughts=30)
    res = await provider.chat(req({"messages": [{"role": "user", "content": "x"}], "reasoning_effort": "low"}))
    u = json.loads(res.body)["usage"]
    assert u["prompt_tokens"] == 500 and u["prompt_tokens_details"] == {"cached_tokens": 400}
    assert u["completion_tokens"] == 40 and u["completion_tokens_details"] == {"reasoning_tokens": 30}
    assert res.raw_usage["thoughtsTokenCount"] == 30
    assert up.requests[-1].json["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 1024}


async def test_n_candidates_and_json_mode(up, provider):
    res = await provider.chat(req({"messages": [{"role": "user", "content": "x"}], "n": 2,
                                   "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {
                                       "type": "object", "properties": {"a": {"type": "integer"}},
                                       "additionalProperties": False}}}}))
    out = ChatCompletion.model_validate_json(res.body)
    assert [c.index for c in out.choices] == [0, 1]
    gen = up.requests[-1].json["generationConfig"]
    assert gen["candidateCount"] == 2 and gen["responseMimeType"] == "application/json"
    assert gen["responseSchema"] == {"type": "object", "properties": {"a": {"type": "integer"}}}


async def test_safety_finish_and_blocked_prompt(up, provider):
    up.enqueue(text="", finish_reason="SAFETY")
    res = await provider.chat(req({"messages": [{"role": "user", "content": "x"}]}))
    assert json.loads(res.body)["choices"][0]["finish_reason"] == "content_filter"
    for stream in (False, True):
        up.enqueue(block_reason="PROHIBITED_CONTENT")
        with pytest.raises(UpstreamError) as err:
            if stream:
                await provider.chat_stream(req({"messages": [{"role": "user", "content": "x"}]}, stream=True))
            else:
                await provider.chat(req({"messages": [{"role": "user", "content": "x"}]}))
        assert err.value.status == 400 and err.value.category is None
        assert "PROHIBITED_CONTENT" in json.loads(err.value.body)["error"]["message"]


async def test_streaming_text(up, provider):
    up.enqueue(text="one two three", prompt_tokens=7, output_tokens=3, cached=2)
    stream = await provider.chat_stream(req({"messages": [{"role": "user", "content": "count"}]}, stream=True))
    chunks = await collect(stream)
    text, calls, finish, usage = reassemble(chunks)
    assert text == "one two three" and finish == "stop" and not calls
    assert chunks[-1]["choices"] == [] and usage["prompt_tokens"] == 9
    assert usage["prompt_tokens_details"]["cached_tokens"] == 2
    assert stream.raw_usage[-1]["candidatesTokenCount"] == 3
    assert up.requests[-1].path == "/v1beta/models/gemini-x:streamGenerateContent?alt=sse"


async def test_streaming_tool_calls(up, provider):
    up.enqueue(function_calls=[{"name": "get_weather", "args": {"city": "Paris"}},
                               {"name": "get_weather", "args": {"city": "Rome"}}])
    stream = await provider.chat_stream(req({"messages": [{"role": "user", "content": "w"}], "tools": [WEATHER]},
                                            stream=True))
    text, calls, finish, _ = reassemble(await collect(stream))
    assert finish == "tool_calls" and text == ""
    assert [json.loads(c["arguments"]) for c in calls.values()] == [{"city": "Paris"}, {"city": "Rome"}]


async def test_stream_error_chunk_raises(up, provider):
    up.enqueue(text="a b c d e", stream_error_after=2)
    stream = await provider.chat_stream(req({"messages": [{"role": "user", "content": "x"}]}, stream=True))
    with pytest.raises(UpstreamError) as err:
        await collect(stream)
    assert err.value.category == "5xx" and err.value.upstream_status == 503


@pytest.mark.parametrize("status,category,otype", [(429, "429", "rate_limit_error"), (503, "5xx", "server_error"),
                                                   (500, "5xx", "server_error"),
                                                   (400, None, "invalid_request_error"),
                                                   (403, None, "invalid_request_error")])
async def test_http_errors_map(up, provider, status, category, otype):
    for stream in (False, True):
        up.enqueue(status=status, message="nope")
        with pytest.raises(UpstreamError) as err:
            if stream:
                await provider.chat_stream(req({"messages": [{"role": "user", "content": "x"}]}, stream=True))
            else:
                await provider.chat(req({"messages": [{"role": "user", "content": "x"}]}))
        assert err.value.category == category and err.value.upstream_status == status
        body = json.loads(err.value.body)["error"]
        assert body["type"] == otype and body["message"] == "nope"


async def test_timeout(up, provider):
    up.enqueue(delay_s=1.0)
    with pytest.raises(UpstreamError) as err:
        await provider.chat(req({"messages": [{"role": "user", "content": "x"}]}, timeout_s=0.2))
    assert err.value.category == "timeout"


async def test_refusals(provider):
    for extra, param in [({"logprobs": True}, "logprobs"), ({"functions": [{"name": "f"}]}, "functions"),
                         ({"brand_new": 1}, "brand_new")]:
        with pytest.raises(UpstreamError) as err:
            await provider.chat(req({"messages": [{"role": "user", "content": "x"}], **extra}))
        assert err.value.status == 400 and json.loads(err.value.body)["error"]["param"] == param


async def test_embeddings(up, provider):
    res = await provider.embeddings({"input": ["a", "bb"], "model": "text-embedding-004", "dimensions": 4},
                                    "text-embedding-004", 5)
    out = CreateEmbeddingResponse.model_validate_json(res.body)
    assert [len(d.embedding) for d in out.data] == [4, 4] and out.usage.prompt_tokens > 0
    assert up.requests[-1].path == "/v1beta/models/text-embedding-004:batchEmbedContents"
    b64 = await provider.embeddings({"input": "a", "encoding_format": "base64"}, "text-embedding-004", 5)
    assert isinstance(json.loads(b64.body)["data"][0]["embedding"], str)


def test_clean_schema_inlines_refs():
    schema = {"type": "object", "$defs": {"P": {"type": "object", "properties": {"x": {"const": 1}},
                                                "additionalProperties": False, "title": "P"}},
              "properties": {"p": {"$ref": "#/$defs/P"}, "q": {"anyOf": [{"type": "string"}, {"type": "null"}]}}}
    assert tr.clean_schema(schema) == {"type": "object", "properties": {
        "p": {"type": "object", "properties": {"x": {"enum": [1]}}, "title": "P"},
        "q": {"anyOf": [{"type": "string"}, {"type": "null"}]}}}


async def test_fake_rejects_bad_shapes(up):
    """The fake is strict enough to catch translation bugs (else the tests above prove little)."""
    bad = [{"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]},
           {"contents": [{"role": "user", "parts": []}]},
           {"contents": [{"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}]},
           {"contents": [{"role": "user", "parts": [{"text": "x"}]}], "tools": [{"functionDeclarations": [
               {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "string"}},
                                            "additionalProperties": False}}]}]}]
    async with aiohttp.ClientSession() as s:
        for body in bad:
            async with s.post(f"{up.base_url}/v1beta/models/m:generateContent", json=body,
                              headers={"x-goog-api-key": "k"}) as r:
                assert r.status == 400 and (await r.json())["error"]["status"] == "INVALID_ARGUMENT"
