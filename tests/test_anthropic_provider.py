"""AnthropicProvider against a real (fake) Anthropic server that validates every request."""
from __future__ import annotations

import json

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from modelux_local.config.schema import ProviderConfig
from modelux_local.errors import UpstreamError
from modelux_local.providers import anthropic_out as tr
from modelux_local.providers.anthropic import AnthropicProvider
from modelux_local.providers.base import ChatRequest
from tests.fakes.fake_anthropic import FakeAnthropic

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False}}}
PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


@pytest.fixture(scope="module")
def up():
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
async def provider(up, monkeypatch):
    monkeypatch.setenv("TEST_ANTHROPIC_KEY", "sk-ant-test-secret")
    p = AnthropicProvider("anthropic", ProviderConfig(kind="anthropic", base_url=up.base_url,
                                                      api_key_env="TEST_ANTHROPIC_KEY", max_tokens=321,
                                                      headers={"x-extra": "1"}))
    yield p
    await p.aclose()


def req(body: dict, stream: bool = False, timeout_s: float = 10.0) -> ChatRequest:
    return ChatRequest(body={"model": "claude-x", **body}, model="claude-x", stream=stream, timeout_s=timeout_s)


async def collect(stream) -> list[dict]:
    chunks = []
    async for raw in stream.events:
        ChatCompletionChunk.model_validate_json(raw)  # every chunk parses with the openai SDK's type
        chunks.append(json.loads(raw))
    return chunks


def reassemble(chunks: list[dict]) -> tuple[str, dict[int, dict], str | None, dict | None]:
    text, calls, finish, usage = "", {}, None, None
    for c in chunks:
        if c.get("usage"):
            usage = c["usage"]
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


async def test_text_with_system_headers_and_defaults(up, provider):
    up.enqueue(text="Hello there", input_tokens=20, output_tokens=3)
    res = await provider.chat(req({"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Use English."}]},
        {"role": "user", "content": "hi"}], "stop": "END", "temperature": 0.2, "user": "u-1"}))
    out = ChatCompletion.model_validate_json(res.body)
    assert out.choices[0].message.content == "Hello there"
    assert out.choices[0].finish_reason == "stop"
    sent = up.requests[-1]
    assert sent.headers["x-api-key"] == "sk-ant-test-secret"
    assert sent.headers["anthropic-version"] == "2023-06-01" and sent.headers["x-extra"] == "1"
    assert sent.json["system"] == "Be brief.\n\nUse English."
    assert sent.json["max_tokens"] == 321 and sent.json["stop_sequences"] == ["END"]
    assert sent.json["metadata"] == {"user_id": "u-1"}
    assert res.usage.input_tokens == 20 and res.usage.output_tokens == 3
    assert b"sk-ant-test-secret" not in res.body


async def test_multi_turn_merges_roles_and_images(up, provider):
    res = await provider.chat(req({"max_completion_tokens": 50, "messages": [
        {"role": "assistant", "content": "Hi! How can I help?"},
        {"role": "user", "content": "look"},
        {"role": "user", "content": [{"type": "text", "text": "at these"},
                                     {"type": "image_url", "image_url": {"url": PNG}},
                                     {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}}]},
        {"role": "assistant", "content": "Nice."},
        {"role": "user", "content": "thanks"}]}))
    assert res.status == 200
    msgs = up.requests[-1].json["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant", "user"]
    images = [b for b in msgs[2]["content"] if b["type"] == "image"]
    assert images[0]["source"]["type"] == "base64" and images[0]["source"]["media_type"] == "image/png"
    assert images[1]["source"] == {"type": "url", "url": "https://example.com/a.jpg"}
    assert up.requests[-1].json["max_tokens"] == 50


async def test_tools_round_trip(up, provider):
    messages = [{"role": "user", "content": "Weather in Paris and Rome?"}]
    first = await provider.chat(req({"messages": messages, "tools": [WEATHER], "tool_choice": "required",
                                     "parallel_tool_calls": False}))
    sent = up.requests[-1].json
    assert sent["tools"][0]["input_schema"]["required"] == ["city"]
    assert sent["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    out = ChatCompletion.model_validate_json(first.body)
    call = out.choices[0].message.tool_calls[0]
    assert out.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "sample"}
    messages += [out.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "18C, sunny"}]
    second = await provider.chat(req({"messages": messages, "tools": [WEATHER]}))
    final = ChatCompletion.model_validate_json(second.body)
    assert final.choices[0].message.content == "tool said: 18C, sunny"
    last = up.requests[-1].json["messages"][-1]
    assert last["content"][0] == {"type": "tool_result", "tool_use_id": call.id, "content": "18C, sunny"}


async def test_parallel_tool_results_merge_into_one_user_turn(up, provider):
    up.enqueue(text="both done")
    calls = [{"id": f"toolu_{i}", "type": "function", "function": {"name": "get_weather", "arguments": json.dumps({"city": c})}}
             for i, c in enumerate(["Paris", "Rome"])]
    await provider.chat(req({"tools": [WEATHER], "messages": [
        {"role": "user", "content": "both"},
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": "toolu_0", "content": "18C"},
        {"role": "tool", "tool_call_id": "toolu_1", "content": [{"type": "text", "text": "21C"}]},
        {"role": "user", "content": "and summarise"}]}))
    msgs = up.requests[-1].json["messages"]
    assert [b["type"] for b in msgs[2]["content"]] == ["tool_result", "tool_result", "text"]
    assert msgs[1]["content"][1]["input"] == {"city": "Rome"}


async def test_usage_with_cache_and_thinking(up, provider):
    up.enqueue(text="ok", thinking="hmm", input_tokens=10, output_tokens=40, cache_read=1000, cache_write=200)
    res = await provider.chat(req({"messages": [{"role": "user", "content": "hi"}]}))
    out = json.loads(res.body)
    assert out["choices"][0]["message"]["content"] == "ok"  # the thinking text stays out
    assert out["usage"]["prompt_tokens"] == 1210
    assert out["usage"]["prompt_tokens_details"] == {"cached_tokens": 1000, "cache_write_tokens": 200}
    assert res.usage.cached_tokens == 1000 and res.usage.cache_write_tokens == 200
    assert res.raw_usage["cache_read_input_tokens"] == 1000 and res.raw_usage["input_tokens"] == 10


async def test_streaming_text(up, provider):
    up.enqueue(text="one two three", input_tokens=9, output_tokens=4, cache_read=5)
    stream = await provider.chat_stream(req({"messages": [{"role": "user", "content": "count"}]}, stream=True))
    chunks = await collect(stream)
    text, calls, finish, usage = reassemble(chunks)
    assert text == "one two three" and not calls and finish == "stop"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"] == [] and usage["prompt_tokens"] == 14 and usage["completion_tokens"] == 4
    assert usage["prompt_tokens_details"]["cached_tokens"] == 5
    assert len(stream.raw_usage) == 2 and up.requests[-1].json["stream"] is True


async def test_streaming_tool_calls_reassembled(up, provider):
    up.enqueue(text="Let me check.", tool_use=[{"name": "get_weather", "input": {"city": "Paris"}},
                                               {"name": "get_weather", "input": {"city": "Rome, Lazio"}}])
    stream = await provider.chat_stream(req({"messages": [{"role": "user", "content": "w?"}],
                                             "tools": [WEATHER]}, stream=True))
    text, calls, finish, _ = reassemble(await collect(stream))
    assert text == "Let me check." and finish == "tool_calls"
    assert [json.loads(c["arguments"]) for c in calls.values()] == [{"city": "Paris"}, {"city": "Rome, Lazio"}]
    assert all(c["id"].startswith("toolu_") and c["name"] == "get_weather" for c in calls.values())


async def test_stream_error_event_raises(up, provider):
    up.enqueue(text="a b c d e f", stream_error_after=5)
    stream = await provider.chat_stream(req({"messages": [{"role": "user", "content": "x"}]}, stream=True))
    with pytest.raises(UpstreamError) as err:
        await collect(stream)
    assert err.value.category == "5xx" and err.value.upstream_status == 529


async def test_stream_error_at_start_raises_before_returning(up, provider):
    up.enqueue(text="a", stream_error_after=0)
    with pytest.raises(UpstreamError) as err:
        await provider.chat_stream(req({"messages": [{"role": "user", "content": "x"}]}, stream=True))
    assert err.value.category == "5xx"


@pytest.mark.parametrize("status,category,otype", [(529, "5xx", "server_error"), (500, "5xx", "server_error"),
                                                   (429, "429", "rate_limit_error"),
                                                   (400, None, "invalid_request_error"),
                                                   (401, None, "invalid_request_error")])
async def test_http_errors_map(up, provider, status, category, otype):
    for stream in (False, True):
        up.enqueue(status=status, message="upstream says no")
        with pytest.raises(UpstreamError) as err:
            if stream:
                await provider.chat_stream(req({"messages": [{"role": "user", "content": "x"}]}, stream=True))
            else:
                await provider.chat(req({"messages": [{"role": "user", "content": "x"}]}))
        e = err.value
        assert e.category == category and e.upstream_status == status
        body = json.loads(e.body)
        assert body["error"]["type"] == otype and body["error"]["message"] == "upstream says no"
        assert set(body["error"]) == {"message", "type", "code", "param"}
        if category is None:
            assert e.status == status  # passes through to the client with its own status


async def test_validation_400_from_fake_passes_through(up, provider):
    with pytest.raises(UpstreamError) as err:  # Anthropic allows temperature up to 1 only
        await provider.chat(req({"messages": [{"role": "user", "content": "x"}], "temperature": 1.7}))
    assert err.value.category is None and err.value.status == 400
    assert "temperature" in json.loads(err.value.body)["error"]["message"]


async def test_timeout_and_connect_errors(up, provider, monkeypatch):
    up.enqueue(delay_s=1.0)
    with pytest.raises(UpstreamError) as err:
        await provider.chat(req({"messages": [{"role": "user", "content": "x"}]}, timeout_s=0.2))
    assert err.value.category == "timeout" and err.value.upstream_status is None
    up.enqueue(delay_s=1.0)
    with pytest.raises(UpstreamError) as err:
        await provider.chat_stream(req({"messages": [{"role": "user", "content": "x"}]}, stream=True, timeout_s=0.2))
    assert err.value.category == "timeout"
    dead = AnthropicProvider("a2", ProviderConfig(kind="anthropic", base_url="http://127.0.0.1:9",
                                                  api_key_env="TEST_ANTHROPIC_KEY"))
    try:
        with pytest.raises(UpstreamError) as err:
            await dead.chat(req({"messages": [{"role": "user", "content": "x"}]}))
        assert err.value.category == "connect"
        assert "sk-ant-test-secret" not in str(err.value)
    finally:
        await dead.aclose()


async def test_refusals_are_clear_400s(provider):
    cases = [({"n": 2}, "n"), ({"logprobs": True}, "logprobs"), ({"audio": {"voice": "x"}}, "audio"),
             ({"frequency_penalty": 0.5}, "frequency_penalty"), ({"some_new_field": 1}, "some_new_field"),
             ({"response_format": {"type": "grammar"}}, "response_format")]
    for extra, param in cases:
        with pytest.raises(UpstreamError) as err:
            await provider.chat(req({"messages": [{"role": "user", "content": "x"}], **extra}))
        e = err.value
        assert e.status == 400 and e.category is None
        assert json.loads(e.body)["error"]["param"] == param
    # explicitly-off values of refused fields and harmless fields are accepted
    body = tr.request_to_anthropic({"messages": [{"role": "user", "content": "x"}], "n": 1, "logprobs": False,
                                    "seed": 3, "stream_options": {"include_usage": True}, "store": False},
                                   "m", 10)
    assert set(body) == {"model", "messages", "max_tokens"}


async def test_response_format_becomes_instruction(up, provider):
    await provider.chat(req({"messages": [{"role": "user", "content": "x"}],
                             "response_format": {"type": "json_schema", "json_schema": {
                                 "name": "a", "schema": {"type": "object"}}}}))
    assert "valid JSON" in up.requests[-1].json["system"] and '{"type":"object"}' in up.requests[-1].json["system"]


async def test_embeddings_refused(provider):
    with pytest.raises(UpstreamError) as err:
        await provider.embeddings({"input": "x"}, "claude-x", 5)
    assert err.value.status == 400 and err.value.category is None
    assert "anthropic has no embeddings API" in str(err.value)


async def test_missing_key_is_reported_without_leaking(up, monkeypatch):
    monkeypatch.delenv("NOPE_KEY", raising=False)
    p = AnthropicProvider("a3", ProviderConfig(kind="anthropic", base_url=up.base_url, api_key_env="NOPE_KEY"))
    with pytest.raises(UpstreamError) as err:
        await p.chat(req({"messages": [{"role": "user", "content": "x"}]}))
    assert "NOPE_KEY" in str(err.value) and err.value.category == "config"
    await p.aclose()


async def test_dropped_and_truncated_streams_are_connect_errors(up, provider):
    up.enqueue(disconnect=True)
    with pytest.raises(UpstreamError) as err:
        await provider.chat(req({"messages": [{"role": "user", "content": "x"}]}))
    assert err.value.category == "connect"
    # a stream that stops before message_stop is an error, not a silently short answer
    up.enqueue(raw_sse=b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","model":"c",'
                       b'"usage":{"input_tokens":1,"output_tokens":1}}}\n\n'
                       b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                       b'"delta":{"type":"text_delta","text":"par"}}\n\n')
    stream = await provider.chat_stream(req({"messages": [{"role": "user", "content": "x"}]}, stream=True))
    with pytest.raises(UpstreamError) as err:
        await collect(stream)
    assert err.value.category == "upstream_invalid" and "message_stop" in str(err.value)


async def test_stream_close_mid_way(up, provider):
    """close() hangs up on the upstream: the fake finds its client gone and stops writing."""
    import asyncio
    import time

    up.enqueue(text=" ".join(["w"] * 200), chunk_delay_s=0.02)
    stream = await provider.chat_stream(req({"messages": [{"role": "user", "content": "x"}]}, stream=True))
    first = await stream.events.__anext__()
    assert json.loads(first)["choices"][0]["delta"]["role"] == "assistant"
    closed = time.monotonic()
    await stream.close()
    deadline = time.monotonic() + 5
    while up.requests[-1].client_gone_at is None:
        assert time.monotonic() < deadline, "the upstream kept streaming after close()"
        await asyncio.sleep(0.02)
    assert up.requests[-1].client_gone_at - closed < 2


async def test_sse_parser_handles_any_split():
    from modelux_local.providers._sse import iter_sse
    wire = (b": comment\r\nevent: a\r\ndata: {\"x\": 1}\r\n\r\nid: 7\ndata: line1\ndata: line2\n\n"
            b"data:" + b"y" * 300_000 + b"\n\ndata: tail-without-blank-line")

    class Body:  # what iter_sse reads: aiohttp's StreamReader.iter_any()
        def __init__(self, size):
            self.size = size

        async def iter_any(self):
            for i in range(0, len(wire), self.size):
                yield wire[i:i + self.size]

    for size in (1, 3, 7, 64, len(wire)):
        events = [(e.event, e.data) async for e in iter_sse(Body(size))]
        assert events == [("a", '{"x": 1}'), ("", "line1\nline2"), ("", "y" * 300_000), ("", "tail-without-blank-line")]
