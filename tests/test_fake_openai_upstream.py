"""Protocol fidelity of the fake OpenAI upstream: it speaks the wire format the official SDK
expects (completions, streams with and without usage, tool-call deltas, embeddings, error bodies
and statuses, timeouts and dropped connections as the SDK sees them), so a proxy test that fails
against the fake fails because of the proxy, and one that passes passed on the real format.

Only two tests here are not about the wire format, each kept for a reason: the fake records a
client that hangs up (proxy tests read `client_gone_at` to prove the proxy cancels upstream), and
the standalone entry point is what `scripts/bench` runs as its upstream. The fake's scripting
conveniences (queues, reset) are exercised by the proxy tests that use them, not tested here.
"""
from __future__ import annotations

import base64
import json
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from tests.fakes.openai_upstream import FakeOpenAI

ROOT = Path(__file__).resolve().parents[1]
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


@pytest.fixture(scope="module")
def up():
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(autouse=True)
def _clean(up):
    up.reset()
    up.chunk_delay_s = 0.0
    up.default_latency_s = 0.0


@pytest.fixture
def client(up):
    return OpenAI(base_url=up.base_url, api_key="sk-test", max_retries=0, timeout=5)


def raw_post(up, body: dict) -> bytes:
    req = urllib.request.Request(up.base_url + "/chat/completions", json.dumps(body).encode(),
                                 {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.read()


def test_plain_completion_echoes_and_counts(up, client):
    r = client.chat.completions.create(model="gpt-4o-mini", messages=[
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}])
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert r.model == "gpt-4o-mini"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == "echo: hi there"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens == len("be brief hi there") // 4 + 1
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    [rec] = up.requests
    assert (rec.method, rec.path) == ("POST", "/v1/chat/completions")
    assert rec.headers["authorization"] == "Bearer sk-test"
    assert rec.json["messages"][1]["content"] == "hi there"


def test_scripted_text_and_usage(up, client):
    up.enqueue(text="hello", prompt_tokens=12, completion_tokens=5, finish_reason="length")
    r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert r.choices[0].message.content == "hello"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.choices[0].finish_reason) == (12, 5, "length")


def test_stream_with_include_usage(up, client):
    up.chunk_delay_s = 0.01
    chunks = list(client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "one two three four"}],
        stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [c.choices[0].delta.content for c in chunks[1:] if c.choices and c.choices[0].delta.content]
    assert len(content) >= 5 and "".join(content) == "echo: one two three four"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1 and all(c.object == "chat.completion.chunk" for c in chunks)
    times = up.requests[0].chunk_times
    assert len(times) == len(chunks) and times[-1] - times[0] >= 0.01 * (len(chunks) - 2)


def test_stream_wire_format(up):
    wire = raw_post(up, {"model": "m", "stream": True, "messages": [{"role": "user", "content": "a b"}]}).decode()
    events = wire.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    payloads = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert all(e.startswith("data: {") for e in events[:-2])
    assert all("usage" not in p for p in payloads)  # without include_usage the key is absent
    assert payloads[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}


def test_tool_calls_plain_and_streamed(up, client):
    call = {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}
    up.enqueue(tool_calls=[call], n_times=2)
    msgs = [{"role": "user", "content": "weather?"}]
    r = client.chat.completions.create(model="m", messages=msgs, tools=[WEATHER_TOOL])
    [tc] = r.choices[0].message.tool_calls
    assert (tc.type, tc.function.name, tc.function.arguments) == ("function", "get_weather", call["arguments"])
    assert r.choices[0].finish_reason == "tool_calls" and r.choices[0].message.content is None
    # the SDK's stream helper accumulates deltas: it only gets this right with the documented delta shape
    with client.chat.completions.stream(model="m", messages=msgs, tools=[WEATHER_TOOL]) as stream:
        final = stream.get_final_completion()
    [stc] = final.choices[0].message.tool_calls
    assert (stc.id, stc.function.name, stc.function.arguments) == (tc.id, "get_weather", call["arguments"])
    assert final.choices[0].finish_reason == "tool_calls"


def test_forced_tool_choice_calls_the_tool(client):
    r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}],
                                       tools=[WEATHER_TOOL], tool_choice="required")
    assert r.choices[0].message.tool_calls[0].function.name == "get_weather"


def test_embeddings_float_and_base64(up, client):
    a = client.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"], dimensions=16)
    b = client.embeddings.create(model="text-embedding-3-small", input="alpha", dimensions=16,
                                 encoding_format="base64")
    assert [d.index for d in a.data] == [0, 1] and len(a.data[0].embedding) == 16
    assert a.usage.prompt_tokens == 4 and a.model == "text-embedding-3-small"
    vec = b.data[0].embedding
    if isinstance(vec, str):  # the SDK leaves base64 undecoded when asked for it explicitly
        vec = list(struct.unpack("<16f", base64.b64decode(vec)))
    assert vec == pytest.approx(a.data[0].embedding, abs=1e-6)
    assert a.data[0].embedding != a.data[1].embedding


def test_models(client):
    assert "gpt-4o-mini" in [m.id for m in client.models.list()]


def test_error_statuses(up, client):
    up.enqueue(status=500)
    up.enqueue(status=429, headers={"retry-after": "0"})
    up.enqueue(status=500)
    with pytest.raises(openai.InternalServerError) as e500:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert e500.value.body["type"] == "server_error"
    with pytest.raises(openai.RateLimitError) as e429:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert e429.value.response.headers["retry-after"] == "0" and e429.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.InternalServerError):  # a stream request gets the JSON error, not SSE
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True)
    assert client.chat.completions.create(model="m", messages=[{"role": "user", "content": "ok"}]).choices


def test_delay_disconnect_and_stream_failure(up, client):
    up.enqueue(delay_s=1.0)
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.2).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert time.monotonic() - started < 0.9
    up.enqueue(disconnect=True)
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    up.enqueue(stream_fail_after=2)
    got = []
    with pytest.raises(Exception):
        for c in client.chat.completions.create(model="m", messages=[{"role": "user", "content": "a b c d"}],
                                                stream=True):
            got.append(c)
    assert len(got) == 2 and len(up.requests[-1].chunk_times) == 2


def test_client_hanging_up_mid_stream_is_recorded(up, client):
    up.chunk_delay_s = 0.02
    stream = client.chat.completions.create(model="m", stream=True,
                                            messages=[{"role": "user", "content": " ".join(["w"] * 100)}])
    next(iter(stream))
    stream.close()
    deadline = time.monotonic() + 3
    while up.requests[-1].client_gone_at is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert up.requests[-1].client_gone_at is not None and len(up.requests[-1].chunk_times) < 50


async def test_async_client(up):
    client = AsyncOpenAI(base_url=up.base_url, api_key="k", max_retries=0)
    up.enqueue(text="from async")
    r = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert r.choices[0].message.content == "from async"
    stream = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "y z"}],
                                                  stream=True)
    assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == "echo: y z"
    await client.close()


def test_standalone_entry_point():
    with subprocess.Popen([sys.executable, "-m", "tests.fakes.openai_upstream", "--port", "0", "--latency-ms", "1"],
                          cwd=ROOT, stdout=subprocess.PIPE, text=True) as proc:
        try:
            base_url = proc.stdout.readline().rsplit(" ", 1)[-1].strip()
            assert base_url.startswith("http://127.0.0.1:")
            with OpenAI(base_url=base_url, api_key="k") as client:
                assert client.models.list().data
        finally:
            proc.terminate()
        assert proc.wait(5) == 0
