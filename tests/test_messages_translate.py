"""anthropic_in: the Anthropic Messages format in and out, checked with the official SDKs' parsers."""
from __future__ import annotations

import json

import anthropic
import pytest
from anthropic.types import Message
from anthropic.types.shared import ErrorResponse
from openai import OpenAI

from modelux_local.errors import BadRequest
from modelux_local.providers import _gemini_translate as gtr
from modelux_local.providers import anthropic_out as atr
from modelux_local.providers.anthropic_in import (
    OpenAIChunksToAnthropicEvents,
    anthropic_request_to_openai,
    openai_error_to_anthropic,
    openai_response_to_anthropic,
)
from tests.fakes.fake_anthropic import FakeAnthropic, validate
from tests.fakes.openai_upstream import FakeOpenAI

TOOLS = [{"name": "get_weather", "description": "Weather", "input_schema": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
HISTORY = {
    "model": "@planner", "max_tokens": 200, "system": [{"type": "text", "text": "Be brief."}],
    "metadata": {"user_id": "u1", "run_id": "r-42", "mlx:tags": {"agent": "planner"}},
    "stop_sequences": ["END"], "temperature": 0.5, "tools": TOOLS,
    "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
    "thinking": {"type": "enabled", "budget_tokens": 4000},
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                                     {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                  "data": "AAAA"}}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"},
                                          {"type": "text", "text": "Checking."},
                                          {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                           "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                                     {"type": "text", "text": "And tomorrow?"}]},
    ],
}


@pytest.fixture(scope="module")
def fake_anthropic():
    with FakeAnthropic() as fake:
        yield fake


def test_request_to_openai():
    body, tags = anthropic_request_to_openai(HISTORY)
    assert tags == {"run_id": "r-42", "agent": "planner"}
    assert body["user"] == "u1" and body["stop"] == ["END"] and body["max_tokens"] == 200
    assert body["tool_choice"] == "auto" and body["parallel_tool_calls"] is False
    assert body["reasoning_effort"] == "medium"
    assert body["tools"][0]["function"]["parameters"]["required"] == ["city"]
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "user"]
    assert body["messages"][1]["content"][1]["image_url"]["url"] == "data:image/png;base64,AAAA"
    call = body["messages"][2]["tool_calls"][0]
    assert call["id"] == "toolu_1" and json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert body["messages"][3] == {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"}


def test_round_trip_to_anthropic_passes_the_fake_validation():
    """Anthropic in -> OpenAI -> Anthropic out (the anthropic provider): still a valid request."""
    body, _ = anthropic_request_to_openai({**HISTORY, "thinking": None, "temperature": 0.5})
    again = atr.request_to_anthropic(body, "claude-x", 1024)
    validate({"x-api-key": "k", "anthropic-version": "2023-06-01"}, again)
    assert again["messages"][2]["content"][0]["type"] == "tool_result"
    assert again["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    # and to Gemini: the tool result finds its function name from the history
    g = gtr.request_to_gemini(body)
    assert g["contents"][2]["parts"][0]["functionResponse"]["name"] == "get_weather"


def test_refused_and_invalid_inputs():
    with pytest.raises(BadRequest) as err:
        anthropic_request_to_openai({**HISTORY, "mcp_servers": [{}]})
    assert err.value.param == "mcp_servers"
    with pytest.raises(BadRequest):
        anthropic_request_to_openai({"model": "m", "max_tokens": 5, "messages": [
            {"role": "user", "content": [{"type": "document", "source": {}}]}]})
    with pytest.raises(BadRequest):
        anthropic_request_to_openai({"model": "m", "max_tokens": 5, "messages": []})


def test_response_to_anthropic_parses_with_sdk():
    openai_resp = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-x",
                   "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                       "role": "assistant", "content": "Let me look.",
                       "tool_calls": [{"id": "call_1", "type": "function",
                                       "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}}]}}],
                   "usage": {"prompt_tokens": 120, "completion_tokens": 9, "total_tokens": 129,
                             "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 5}}}
    msg = Message.model_validate(openai_response_to_anthropic(openai_resp, "@planner"))
    assert msg.model == "@planner" and msg.stop_reason == "tool_use"
    assert msg.content[0].text == "Let me look." and msg.content[1].input == {"city": "Rome"}
    assert (msg.usage.input_tokens, msg.usage.cache_read_input_tokens, msg.usage.cache_creation_input_tokens) == (15, 100, 5)


def test_error_to_anthropic():
    for status, etype in [(400, "invalid_request_error"), (401, "authentication_error"), (429, "rate_limit_error"),
                          (529, "overloaded_error"), (502, "api_error"), (402, "billing_error")]:
        out = openai_error_to_anthropic(status, b'{"error": {"message": "boom", "type": "x"}}')
        ErrorResponse.model_validate(out)
        assert out["error"] == {"type": etype, "message": "boom"}
    assert openai_error_to_anthropic(500, None)["error"]["message"] == "HTTP 500"


def _openai_chunks(**enqueue) -> list[dict]:
    """Real OpenAI chunks: the openai SDK streaming from the fake OpenAI upstream."""
    with FakeOpenAI() as up:
        up.enqueue(**enqueue)
        client = OpenAI(base_url=up.base_url, api_key="k")
        stream = client.chat.completions.create(model="gpt-x", messages=[{"role": "user", "content": "hi"}],
                                                stream=True, stream_options={"include_usage": True})
        return [c.model_dump(exclude_none=True) for c in stream]


def _replay(fake: FakeAnthropic, events: list[bytes]):
    fake.enqueue(raw_sse=b"".join(events))
    client = anthropic.Anthropic(base_url=fake.base_url, api_key="k", max_retries=0)
    with client.messages.stream(model="@planner", max_tokens=100,
                                messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    return text, final


def test_stream_events_text_parse_with_sdk(fake_anthropic):
    chunks = _openai_chunks(text="Hello from the other side", prompt_tokens=30, completion_tokens=6)
    conv = OpenAIChunksToAnthropicEvents("@planner")
    events = [e for c in chunks for e in conv.feed(c)] + conv.finish()
    text, final = _replay(fake_anthropic, events)
    assert text == "Hello from the other side"
    assert final.stop_reason == "end_turn" and final.model == "@planner"
    assert final.usage.input_tokens == 30 and final.usage.output_tokens == 6


def test_stream_events_tool_use_parse_with_sdk(fake_anthropic):
    chunks = _openai_chunks(text="Checking both.", tool_calls=[
        {"name": "get_weather", "arguments": '{"city": "Paris, France"}'},
        {"name": "get_time", "arguments": '{"tz": "Europe/Rome"}'}])
    conv = OpenAIChunksToAnthropicEvents("@planner")
    events = [e for c in chunks for e in conv.feed(c)] + conv.finish()
    text, final = _replay(fake_anthropic, events)
    assert text == "Checking both." and final.stop_reason == "tool_use"
    uses = [b for b in final.content if b.type == "tool_use"]
    assert [(u.name, u.input) for u in uses] == [("get_weather", {"city": "Paris, France"}),
                                                 ("get_time", {"tz": "Europe/Rome"})]
    assert [e.split(b"\n")[0] for e in events][:2] == [b"event: message_start", b"event: content_block_start"]


def test_stream_events_from_anthropic_provider_chunks(fake_anthropic):
    """Our own Anthropic->OpenAI stream translation fed back into the Anthropic event writer."""
    upstream = FakeAnthropic.stream_events({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "stop_reason": "tool_use",
        "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 7, "cache_read_input_tokens": 3},
        "content": [{"type": "text", "text": "ok then"},
                    {"type": "tool_use", "id": "toolu_9", "name": "f", "input": {"a": [1, 2]}}]})
    back = atr.StreamTranslator("claude-x", "anthropic")
    chunks = [json.loads(c) for name, data in upstream for c in back.feed(name, data)] + \
             [json.loads(c) for c in back.finish_chunks()]
    conv = OpenAIChunksToAnthropicEvents("@executor")
    events = [e for c in chunks for e in conv.feed(c)] + conv.finish()
    text, final = _replay(fake_anthropic, events)
    assert text == "ok then" and final.content[1].input == {"a": [1, 2]} and final.content[1].id == "toolu_9"
    assert final.usage.input_tokens == 12 and final.usage.cache_read_input_tokens == 3


def test_non_stream_via_sdk(fake_anthropic):
    fake_anthropic.enqueue(body=openai_response_to_anthropic({
        "choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "cut"}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1}}, "@summarizer"))
    client = anthropic.Anthropic(base_url=fake_anthropic.base_url, api_key="k", max_retries=0)
    msg = client.messages.create(model="@summarizer", max_tokens=1, messages=[{"role": "user", "content": "x"}])
    assert msg.content[0].text == "cut" and msg.stop_reason == "max_tokens"


def test_fake_anthropic_rejects_bad_shapes():
    ok = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    validate(headers, ok)
    bad = [{**ok, "n": 2}, {**ok, "max_tokens": 0}, {k: v for k, v in ok.items() if k != "max_tokens"},
           {**ok, "messages": [{"role": "assistant", "content": "x"}]},
           {**ok, "messages": [{"role": "user", "content": "x"}, {"role": "user", "content": "y"}]},
           {**ok, "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"}]}]},
           {**ok, "messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]},
           {**ok, "tools": [{"name": "f", "parameters": {}}]}]
    for body in bad:
        with pytest.raises(Exception):
            validate(headers, body)
    with pytest.raises(PermissionError):
        validate({"anthropic-version": "2023-06-01"}, ok)
