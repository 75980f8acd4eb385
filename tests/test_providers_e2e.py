"""Anthropic and Gemini behind the same aliases, end to end: the real server, the official SDKs,
validating fake upstreams (real HTTP), and the store read back through the management API.

Costs are checked against the providers' published prices (USD per million tokens), computed
here from the usage the fake reported — not from the code under test.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import anthropic
import pytest

from .conftest import client_for
from .fakes.fake_anthropic import FakeAnthropic
from .fakes.fake_gemini import FakeGemini
from .server import ROOT, ServerProcess, write_config

ANTHROPIC_KEY = "sk-ant-test-secret-7731-never-store"
GEMINI_KEY = "AIza-test-secret-5519-never-store"
# Published prices per million tokens: input, output, cache read, cache write.
PRICES = {
    "claude-sonnet-4-5": (3.00, 15.00, 0.30, 3.75),
    "claude-haiku-4-5": (1.00, 5.00, 0.10, 1.25),
    "gemini-2.5-flash": (0.30, 2.50, 0.03, None),
}
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def anthropic_cost(model: str, u: dict) -> float:
    """u: Anthropic's usage object (input_tokens excludes cache reads and writes)."""
    inp, out, read, write = PRICES[model]
    return (u["input_tokens"] * inp + u["output_tokens"] * out + u.get("cache_read_input_tokens", 0) * read
            + u.get("cache_creation_input_tokens", 0) * write) / 1e6


def gemini_cost(model: str, u: dict) -> float:
    """u: Gemini's usageMetadata (promptTokenCount includes cached tokens; thoughts bill as output)."""
    inp, out, read, _ = PRICES[model]
    cached = u.get("cachedContentTokenCount", 0)
    output = u.get("candidatesTokenCount", 0) + u.get("thoughtsTokenCount", 0)
    return ((u["promptTokenCount"] - cached) * inp + cached * read + output * out) / 1e6


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    ant, gem = FakeAnthropic().start(), FakeGemini().start()
    base = tmp_path_factory.mktemp("providers")
    cfg = write_config(base / "config", {
        "modelux.toml": f'''[routing]
default = "agent-v2"

[providers.anthropic]
kind = "anthropic"
base_url = "{ant.base_url}"
api_key_env = "TEST_ANTHROPIC_KEY"

[providers.gemini]
kind = "gemini"
base_url = "{gem.base_url}"
api_key_env = "TEST_GEMINI_KEY"
''',
        "agent-v2.toml": '''description = "Sonnet plans, Haiku executes, Flash summarises"
[aliases.planner]
targets = [{ provider = "anthropic", model = "claude-sonnet-4-5" }]
[aliases.executor]
targets = [{ provider = "anthropic", model = "claude-haiku-4-5" }]
[aliases.summarizer]
targets = [{ provider = "gemini", model = "gemini-2.5-flash" }]
[aliases.resilient]
strategy = "fallback"
targets = [{ provider = "anthropic", model = "claude-haiku-4-5" }, { provider = "gemini", model = "gemini-2.5-flash" }]
retries = { attempts = 0 }
''',
    })
    srv = ServerProcess(base / "data", cfg, env={"TEST_ANTHROPIC_KEY": ANTHROPIC_KEY, "TEST_GEMINI_KEY": GEMINI_KEY})
    srv.start()
    yield srv, ant, gem
    srv.stop()
    ant.stop(), gem.stop()


def call_of(srv: ServerProcess, raw) -> dict:
    return srv.get(f"/mlx/v1/calls/{raw.headers['x-mlx-call-id']}").json()


def test_text_usage_and_cost_on_anthropic(env):
    srv, ant, _ = env
    ant.enqueue(text="Paris is sunny.", input_tokens=1200, output_tokens=80, cache_read=4000, cache_write=500)
    raw = client_for(srv).chat.completions.with_raw_response.create(
        model="@executor", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather?"}],
        extra_body={"mlx:tags": {"run_id": "run-ant-text"}})
    resp = raw.parse()
    assert resp.choices[0].message.content == "Paris is sunny." and resp.choices[0].finish_reason == "stop"
    # OpenAI convention: prompt_tokens counts cache reads and writes too
    assert resp.usage.prompt_tokens == 1200 + 4000 + 500 and resp.usage.completion_tokens == 80
    assert resp.usage.prompt_tokens_details.cached_tokens == 4000
    sent = ant.requests[-1]
    assert sent.json["system"] == "Be brief." and sent.json["model"] == "claude-haiku-4-5"
    assert sent.headers["x-api-key"] == ANTHROPIC_KEY and sent.headers["anthropic-version"]
    assert "mlx:tags" not in sent.json

    call = call_of(srv, raw)
    reported = {"input_tokens": 1200, "output_tokens": 80, "cache_read_input_tokens": 4000,
                "cache_creation_input_tokens": 500}
    assert call["decision"]["raw_usage"] == reported
    assert call["provider"] == "anthropic" and call["model"] == "claude-haiku-4-5" and call["priced"]
    assert call["input_tokens"] == 5700 and call["cached_tokens"] == 4000 and call["output_tokens"] == 80
    assert call["cost_usd"] == pytest.approx(anthropic_cost("claude-haiku-4-5", reported), abs=1e-12)
    assert call["cost_usd"] == pytest.approx((1200 * 1 + 4000 * 0.10 + 500 * 1.25 + 80 * 5) / 1e6, abs=1e-12)


def test_text_usage_and_cost_on_gemini(env):
    srv, _, gem = env
    gem.enqueue(text="Summary.", prompt_tokens=900, output_tokens=60, cached=3000, thoughts=40)
    raw = client_for(srv).chat.completions.with_raw_response.create(
        model="@summarizer", messages=[{"role": "system", "content": "Summarise."}, {"role": "user", "content": "Notes"}])
    resp = raw.parse()
    assert resp.choices[0].message.content == "Summary."
    assert resp.usage.prompt_tokens == 3900 and resp.usage.completion_tokens == 100
    assert resp.usage.completion_tokens_details.reasoning_tokens == 40
    sent = gem.requests[-1]
    assert sent.path.endswith("/gemini-2.5-flash:generateContent") and sent.headers["x-goog-api-key"] == GEMINI_KEY
    assert sent.json["systemInstruction"]["parts"][0]["text"] == "Summarise."

    call = call_of(srv, raw)
    reported = call["decision"]["raw_usage"]
    assert reported == {"promptTokenCount": 3900, "candidatesTokenCount": 60, "totalTokenCount": 4000,
                        "cachedContentTokenCount": 3000, "thoughtsTokenCount": 40}
    assert call["provider"] == "gemini" and call["reasoning_tokens"] == 40 and call["cached_tokens"] == 3000
    assert call["cost_usd"] == pytest.approx(gemini_cost("gemini-2.5-flash", reported), abs=1e-12)
    assert call["cost_usd"] == pytest.approx((900 * 0.30 + 3000 * 0.03 + 100 * 2.50) / 1e6, abs=1e-12)


@pytest.mark.parametrize("alias,provider", [("@executor", "anthropic"), ("@summarizer", "gemini")])
def test_tools_round_trip(env, alias, provider):
    """call -> tool result -> answer; the fakes check that the tool result answers the call."""
    srv, ant, gem = env
    up = ant if provider == "anthropic" else gem
    client = client_for(srv)
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(model=alias, messages=messages, tools=TOOLS)
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "sample"}
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 18}'}]
    second = client.chat.completions.create(model=alias, messages=messages, tools=TOOLS)
    assert second.choices[0].finish_reason == "stop"
    assert "18" in second.choices[0].message.content and "tool said" in second.choices[0].message.content
    if provider == "anthropic":
        result = up.requests[-1].json["messages"][-1]["content"][0]
        assert result["type"] == "tool_result" and result["tool_use_id"] == call.id
    else:
        part = up.requests[-1].json["contents"][-1]["parts"][0]["functionResponse"]
        assert part["name"] == "get_weather" and part["response"] == {"temp_c": 18}


@pytest.mark.parametrize("alias,provider,model", [("@executor", "anthropic", "claude-haiku-4-5"),
                                                  ("@summarizer", "gemini", "gemini-2.5-flash")])
def test_streaming_tool_call_then_text_with_usage_and_cost(env, alias, provider, model):
    srv, ant, gem = env
    client = client_for(srv)
    messages = [{"role": "user", "content": "Weather in Oslo?"}]
    raw = client.chat.completions.with_raw_response.create(
        model=alias, messages=messages, tools=TOOLS, stream=True, stream_options={"include_usage": True},
        extra_body={"mlx:tags": {"run_id": f"run-stream-{provider}"}})
    chunks = list(raw.parse())
    call_id = raw.headers["x-mlx-call-id"]
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    calls = [tc for d in deltas for tc in (d.tool_calls or [])]
    assert calls[0].id and calls[0].function.name == "get_weather"
    args = "".join(tc.function.arguments or "" for tc in calls)
    assert json.loads(args) == {"city": "sample"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0

    messages += [{"role": "assistant", "content": None, "tool_calls": [
        {"id": calls[0].id, "type": "function", "function": {"name": "get_weather", "arguments": args}}]},
        {"role": "tool", "tool_call_id": calls[0].id, "content": "cold"}]
    stream = client.chat.completions.create(model=alias, messages=messages, tools=TOOLS, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert "tool said" in text and "cold" in text

    call = srv.get(f"/mlx/v1/calls/{call_id}").json()
    assert call["stream"] and call["status"] == "ok" and call["provider"] == provider and call["ttft_ms"] is not None
    assert call["response"]["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == args
    raw_usage = call["decision"]["raw_usage"]
    if provider == "anthropic":  # message_start's usage, then message_delta's output count
        final = {**raw_usage[0], **raw_usage[-1]}
        expected = anthropic_cost(model, final)
        assert call["output_tokens"] == final["output_tokens"]
    else:  # the last chunk's usageMetadata is the total
        final = raw_usage[-1]
        expected = gemini_cost(model, final)
        assert call["input_tokens"] == final["promptTokenCount"]
    assert call["cost_usd"] == pytest.approx(expected, abs=1e-12) and call["cost_usd"] > 0


def test_fallback_across_kinds_anthropic_529_to_gemini(env):
    srv, ant, gem = env
    ant.enqueue(status=529)
    gem.enqueue(text="from flash", prompt_tokens=50, output_tokens=5)
    raw = client_for(srv).chat.completions.with_raw_response.create(
        model="@resilient", messages=[{"role": "user", "content": "hello"}])
    assert raw.parse().choices[0].message.content == "from flash"
    assert raw.headers["x-mlx-served-by"] == "gemini/gemini-2.5-flash"
    call = call_of(srv, raw)
    assert [(a["provider"], a["model"], a["http_status"], a["category"], a["next"]) for a in call["attempts"]] == [
        ("anthropic", "claude-haiku-4-5", 529, "5xx", "fallback"), ("gemini", "gemini-2.5-flash", 200, None, None)]
    assert "overloaded" in call["attempts"][0]["error"]
    assert call["decision"]["attempts_made"] == 2 and call["decision"]["served_by"] == "gemini/gemini-2.5-flash"
    assert call["decision"]["order"] == ["anthropic/claude-haiku-4-5", "gemini/gemini-2.5-flash"]
    assert call["provider"] == "gemini" and call["cost_usd"] == pytest.approx((50 * 0.30 + 5 * 2.50) / 1e6, abs=1e-12)

    # the same chain through /v1/messages with the anthropic SDK, streamed: still one call, two attempts
    ant.enqueue(status=529)
    client = anthropic.Anthropic(base_url=srv.url, api_key="local", max_retries=0)
    with client.messages.stream(model="@resilient", max_tokens=64, messages=[{"role": "user", "content": "again"}]) as s:
        text = "".join(s.text_stream)
        headers = s.response.headers
    assert text == "echo: again"
    call = srv.get(f"/mlx/v1/calls/{headers['x-mlx-call-id']}").json()
    assert call["endpoint"] == "messages" and [a["provider"] for a in call["attempts"]] == ["anthropic", "gemini"]


def test_messages_endpoint_to_anthropic_upstream(env):
    """Anthropic format in and out, passed through to the anthropic kind."""
    srv, ant, _ = env
    ant.enqueue(text="Hi there.", input_tokens=20, output_tokens=4, cache_read=100)
    client = anthropic.Anthropic(base_url=srv.url, api_key="local", max_retries=0)
    msg = client.messages.create(model="@executor", max_tokens=50, system="Be kind.",
                                 messages=[{"role": "user", "content": "Hello"}])
    assert msg.content[0].text == "Hi there." and msg.stop_reason == "end_turn"
    assert (msg.usage.input_tokens, msg.usage.cache_read_input_tokens, msg.usage.output_tokens) == (20, 100, 4)
    sent = ant.requests[-1].json
    assert sent["max_tokens"] == 50 and sent["system"] == "Be kind." and sent["model"] == "claude-haiku-4-5"


def test_seed_agent_on_three_models_with_one_client(env):
    """The product page's agent.py, verbatim: each step shows its real provider, tokens and cost."""
    srv, _, _ = env
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "agent.py")], capture_output=True, text=True,
                         env={**os.environ, "MODELUX_BASE_URL": srv.base_url}, timeout=60, check=True)
    run_id = out.stdout.splitlines()[0]
    run = srv.get(f"/mlx/v1/runs/{run_id}").json()
    steps = run["steps"]
    assert [(s["alias"], s["provider"], s["model"]) for s in steps] == [
        ("@planner", "anthropic", "claude-sonnet-4-5"),
        *[("@executor", "anthropic", "claude-haiku-4-5")] * 3,
        ("@summarizer", "gemini", "gemini-2.5-flash")]
    for s in steps:
        assert s["status"] == "ok" and s["input_tokens"] > 0 and s["output_tokens"] > 0 and s["priced"]
        u = s["decision"]["raw_usage"]
        expected = gemini_cost(s["model"], u) if s["provider"] == "gemini" else anthropic_cost(s["model"], u)
        assert s["cost_usd"] == pytest.approx(expected, abs=1e-12)
    assert run["cost_usd"] == pytest.approx(sum(s["cost_usd"] for s in steps), abs=1e-9)
    assert run["calls"] == 5 and run["errors"] == 0


def test_provider_keys_never_reach_the_database(env):
    srv, _, _ = env
    client_for(srv).chat.completions.create(model="@executor", messages=[{"role": "user", "content": "x"}])
    srv.get("/mlx/v1/runs/none")  # the writer has drained (barrier) once this answers
    for path in srv.data_dir.glob("modelux.db*"):
        data = path.read_bytes()
        assert ANTHROPIC_KEY.encode() not in data and GEMINI_KEY.encode() not in data
