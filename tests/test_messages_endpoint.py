"""POST /v1/messages through the real server with the official `anthropic` SDK, routed to an
OpenAI-compatible upstream (FakeOpenAI, real HTTP) and to the built-in mock: text, tools,
streaming, tags, records, and errors in Anthropic's shape."""
from __future__ import annotations

import contextlib
import io
import json
import re

import anthropic
import httpx
import pytest

from modelux_local.config.loader import load_dir

from .fakes.openai_upstream import FakeOpenAI
from .server import ROOT, ServerProcess, write_config

CLIENT_KEY = "sk-client-key-3141-must-not-be-stored"
UPSTREAM_KEY = "sk-upstream-key-2718-never-store"
TOOLS = [{"name": "get_weather", "description": "Current weather",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    up = FakeOpenAI().start()
    base = tmp_path_factory.mktemp("messages")
    cfg = write_config(base / "config", {
        "modelux.toml": f'''[routing]
default = "main"

[providers.up]
kind = "openai"
base_url = "{up.base_url}"
api_key_env = "TEST_UP_KEY"

[providers.mock]
kind = "mock"
''',
        "main.toml": '''[aliases.oai]
targets = [{ provider = "up", model = "gpt-4o-mini" }]
[aliases.m]
targets = [{ provider = "mock", model = "mock-small" }]
[aliases.executor]
targets = [{ provider = "mock", model = "mock-small" }]
[aliases.twice]
targets = [{ provider = "up", model = "gpt-4o-mini" }, { provider = "up", model = "gpt-4o" }]
retries = { attempts = 0 }
''',
    })
    srv = ServerProcess(base / "data", cfg, env={"TEST_UP_KEY": UPSTREAM_KEY}).start()
    client = anthropic.Anthropic(base_url=srv.url, api_key=CLIENT_KEY, max_retries=0)
    yield srv, up, client
    srv.stop()
    up.stop()


def call(srv: ServerProcess, call_id: str) -> dict:
    return srv.get(f"/mlx/v1/calls/{call_id}").json()


def test_text_to_openai_upstream_with_tags_and_record(env):
    srv, up, client = env
    up.enqueue(text="Bonjour.", prompt_tokens=30, completion_tokens=3)
    raw = client.messages.with_raw_response.create(
        model="@oai", max_tokens=100, system="Answer in French.", stop_sequences=["END"],
        messages=[{"role": "user", "content": "Hello"}],
        metadata={"user_id": "user-7", "agent": "translator"},
        extra_body={"mlx:tags": {"run_id": "run-msg-1"}, "temperature": 0.3},
        extra_headers={"x-mlx-tags": '{"team": "infra"}'})
    msg = raw.parse()
    assert msg.content[0].text == "Bonjour." and msg.stop_reason == "end_turn" and msg.role == "assistant"
    assert msg.model == "gpt-4o-mini" and (msg.usage.input_tokens, msg.usage.output_tokens) == (30, 3)

    sent = up.requests[-1]
    assert sent.json["messages"] == [{"role": "system", "content": "Answer in French."},
                                     {"role": "user", "content": "Hello"}]
    assert sent.json["model"] == "gpt-4o-mini" and sent.json["max_tokens"] == 100 and sent.json["stop"] == ["END"]
    assert sent.json["temperature"] == 0.3 and sent.json["user"] == "user-7"
    assert "mlx:tags" not in sent.json and "metadata" not in sent.json
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"  # the client's key is not forwarded

    rec = call(srv, raw.headers["x-mlx-call-id"])
    assert rec["endpoint"] == "messages" and rec["status"] == "ok" and rec["alias"] == "@oai"
    assert rec["tags"] == {"run_id": "run-msg-1", "agent": "translator", "team": "infra"}
    assert rec["request"]["system"] == "Answer in French." and rec["request"]["max_tokens"] == 100
    assert rec["response"]["choices"][0]["message"]["content"] == "Bonjour."  # the OpenAI answer it came from
    assert (rec["input_tokens"], rec["output_tokens"]) == (30, 3) and rec["priced"] and rec["cost_usd"] > 0
    assert CLIENT_KEY not in json.dumps(rec)
    run = srv.get("/mlx/v1/runs/run-msg-1").json()
    assert run["calls"] == 1 and run["tags"]["agent"] == "translator"


def test_tools_round_trip_to_openai_upstream(env):
    srv, up, client = env
    up.enqueue(tool_calls=[{"name": "get_weather", "arguments": '{"city": "Paris"}'}])
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.messages.create(model="@oai", max_tokens=100, tools=TOOLS, messages=messages,
                                   tool_choice={"type": "any"})
    assert first.stop_reason == "tool_use"
    use = first.content[0]
    assert use.type == "tool_use" and use.name == "get_weather" and use.input == {"city": "Paris"}
    sent = up.requests[-1].json
    assert sent["tool_choice"] == "required" and sent["tools"][0]["function"]["parameters"] == TOOLS[0]["input_schema"]

    messages += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18C sunny"}]}]
    up.enqueue(text="It is 18C and sunny.")
    second = client.messages.create(model="@oai", max_tokens=100, tools=TOOLS, messages=messages)
    assert second.content[0].text == "It is 18C and sunny." and second.stop_reason == "end_turn"
    history = up.requests[-1].json["messages"]
    assert history[1]["tool_calls"][0] == {"id": use.id, "type": "function",
                                           "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    assert history[2] == {"role": "tool", "tool_call_id": use.id, "content": "18C sunny"}


def test_streaming_text_and_tool_use_from_openai_upstream(env):
    srv, up, client = env
    up.enqueue(text="one two three four", prompt_tokens=12, completion_tokens=4)
    with client.messages.stream(model="@oai", max_tokens=50, messages=[{"role": "user", "content": "count"}],
                                extra_headers={"x-mlx-run-id": "run-msg-stream"}) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
        call_id = stream.response.headers["x-mlx-call-id"]
    assert len(pieces) > 1 and "".join(pieces) == "one two three four"
    assert final.stop_reason == "end_turn" and (final.usage.input_tokens, final.usage.output_tokens) == (12, 4)
    assert up.requests[-1].json["stream"] is True
    rec = call(srv, call_id)
    assert rec["stream"] and rec["status"] == "ok" and rec["tags"] == {"run_id": "run-msg-stream"}
    assert rec["response"]["choices"][0]["message"]["content"] == "one two three four"
    assert rec["output_tokens"] == 4 and rec["ttft_ms"] is not None

    up.enqueue(tool_calls=[{"name": "get_weather", "arguments": '{"city": "Oslo, Norway"}'}])
    with client.messages.stream(model="@oai", max_tokens=50, tools=TOOLS,
                                messages=[{"role": "user", "content": "Oslo?"}]) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [(b.type, b.name, b.input) for b in final.content] == [("tool_use", "get_weather", {"city": "Oslo, Norway"})]


def test_mock_text_tools_and_streaming(env):
    _, _, client = env
    msg = client.messages.create(model="@m", max_tokens=100, messages=[{"role": "user", "content": "plan a trip"}])
    again = client.messages.create(model="@m", max_tokens=100, messages=[{"role": "user", "content": "plan a trip"}])
    assert msg.content[0].text and msg.content[0].text == again.content[0].text  # the mock is deterministic
    assert msg.model == "mock-small" and msg.usage.output_tokens > 0

    tool = client.messages.create(model="@m", max_tokens=100, tools=TOOLS,
                                  messages=[{"role": "user", "content": "weather in Rome"}])
    assert tool.stop_reason == "tool_use" and tool.content[-1].name == "get_weather"
    assert set(tool.content[-1].input) == {"city"}

    with client.messages.stream(model="@m", max_tokens=100,
                                messages=[{"role": "user", "content": "plan a trip"}]) as stream:
        text = "".join(stream.text_stream)
    assert text == msg.content[0].text


def test_count_tokens_estimate(env):
    _, _, client = env
    short = client.messages.count_tokens(model="@m", messages=[{"role": "user", "content": "hi"}])
    long = client.messages.count_tokens(model="@m", messages=[{"role": "user", "content": "word " * 400}], tools=TOOLS)
    assert 0 < short.input_tokens < 20 and long.input_tokens > 400


def test_errors_are_anthropic_shaped(env):
    srv, up, client = env
    with pytest.raises(anthropic.NotFoundError) as e:
        client.messages.create(model="@nope", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    err = e.value.body["error"]
    assert e.value.body["type"] == "error" and err["type"] == "not_found_error"
    assert "@oai" in err["message"] and "@m" in err["message"]

    with pytest.raises(anthropic.BadRequestError) as e:  # refused, never silently dropped
        client.messages.create(model="@oai", max_tokens=10, messages=[{"role": "user", "content": "x"}],
                               extra_body={"mcp_servers": [{"type": "url", "url": "http://x", "name": "x"}]})
    assert e.value.body["error"]["type"] == "invalid_request_error" and "mcp_servers" in e.value.body["error"]["message"]
    r = srv.post("/v1/messages", content=b"{not json")
    assert r.status_code == 400 and r.json()["type"] == "error"
    r = srv.post("/v1/messages", json={"model": "@oai", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
                                       "mlx:tags": {"run_id": 5}})
    assert r.status_code == 400 and "run_id" in r.json()["error"]["message"]

    up.enqueue(status=400, error={"error": {"message": "context too long", "type": "invalid_request_error"}})
    with pytest.raises(anthropic.BadRequestError) as e:  # an upstream 4xx passes through with its message
        client.messages.create(model="@oai", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert "context too long" in e.value.body["error"]["message"]

    up.enqueue(status=500, n_times=2)
    with pytest.raises(anthropic.APIStatusError) as e:
        client.messages.create(model="@twice", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 502 and e.value.body["error"]["type"] == "api_error"
    assert [a["model"] for a in e.value.body["error"]["attempts"]] == ["gpt-4o-mini", "gpt-4o"]


def test_aborted_run_is_refused_with_402(env):
    srv, _, client = env
    tags = {"mlx:tags": {"run_id": "run-msg-abort"}}
    client.messages.create(model="@m", max_tokens=10, messages=[{"role": "user", "content": "x"}], extra_body=tags)
    assert srv.post("/mlx/v1/runs/run-msg-abort/abort", json={"reason": "test"}).status_code == 204
    with pytest.raises(anthropic.APIStatusError) as e:
        client.messages.create(model="@m", max_tokens=10, messages=[{"role": "user", "content": "x"}], extra_body=tags)
    assert e.value.status_code == 402 and e.value.body["error"]["code"] == "run_aborted"
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "billing_error"


def test_upstream_dying_mid_stream_is_an_error_event(env):
    srv, up, client = env
    up.enqueue(text="a b c d e f g h", stream_fail_after=3)
    with pytest.raises(anthropic.APIStatusError) as e:
        with client.messages.stream(model="@oai", max_tokens=50, messages=[{"role": "user", "content": "x"}]) as s:
            call_id = s.response.headers["x-mlx-call-id"]
            for _ in s:
                pass
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "api_error"
    assert "connection failed" in e.value.body["error"]["message"]
    rec = call(srv, call_id)
    assert rec["status"] == "error" and rec["stream"]


def test_raw_sse_event_sequence(env):
    """The exact event order Anthropic documents, as a plain HTTP client sees it."""
    srv, up, _ = env
    up.enqueue(text="hi there")
    with httpx.stream("POST", srv.url + "/v1/messages", timeout=10, json={
            "model": "@oai", "max_tokens": 20, "stream": True, "messages": [{"role": "user", "content": "x"}]}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        names = [line[7:] for line in r.iter_lines() if line.startswith("event: ")]
    assert names[0] == "message_start" and names[1] == "content_block_start"
    assert set(names[2:-3]) == {"content_block_delta"}
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]


def test_output_config_translates_and_hints_are_ignored(env):
    _, up, client = env
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    msg = client.messages.create(
        model="@oai", max_tokens=50, messages=[{"role": "user", "content": "x"}],
        output_config={"format": {"type": "json_schema", "schema": schema}, "effort": "max"},
        cache_control={"type": "ephemeral"}, service_tier="auto")
    sent = up.requests[-1].json
    assert sent["response_format"] == {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    assert sent["reasoning_effort"] == "high"
    assert not {"cache_control", "service_tier", "output_config"} & set(sent)
    assert json.loads(msg.content[0].text) == {"echo": "x"}
    with pytest.raises(anthropic.BadRequestError) as e:  # a residency constraint cannot be kept: refused
        client.messages.create(model="@oai", max_tokens=5, messages=[{"role": "user", "content": "x"}],
                               inference_geo="eu")
    assert "inference_geo" in e.value.body["error"]["message"]


def test_modelux_token_accepted_as_bearer_or_x_api_key(make_server):
    srv = make_server(None, name="token", env={"MODELUX_TOKEN": "local-secret-token"})
    body = {"model": "@executor", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    assert srv.post("/v1/messages", json=body).status_code == 401
    assert srv.post("/v1/messages", json=body, headers={"x-api-key": "wrong"}).status_code == 401
    assert srv.post("/v1/messages", json=body, headers={"x-api-key": "local-secret-token"}).status_code == 200
    sdk = anthropic.Anthropic(base_url=srv.url, api_key="local-secret-token", max_retries=0)  # sends a bearer
    assert sdk.messages.create(**body).content[0].text


def readme_blocks(lang: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("<!-- section:providers -->")[1].split("<!-- /section:providers -->")[0]
    return re.findall(rf"```{lang}\n(.*?)```", section, re.S)


def test_readme_provider_configs_load(tmp_path):
    server_toml, routing_toml = readme_blocks("toml")
    cs = load_dir(write_config(tmp_path / "cfg", {"modelux.toml": server_toml, "agent-v2.toml": routing_toml}))
    kinds = {name: p.kind for name, p in cs.server.providers.items()}
    assert kinds == {"openai": "openai", "local": "openai", "anthropic": "anthropic", "gemini": "gemini", "mock": "mock"}
    assert cs.server.providers["mock"].models["mock-small"].error_status == 529
    assert sorted(cs.routing["agent-v2"].aliases) == ["executor", "planner", "summarizer"]


def test_readme_messages_snippet_runs(env):
    srv, _, _ = env
    (snippet,) = readme_blocks("python")
    assert 'base_url="http://127.0.0.1:4000"' in snippet
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(snippet.replace("http://127.0.0.1:4000", srv.url), {})
    assert len(out.getvalue().strip()) > 10
    run = srv.get("/mlx/v1/runs/run_demo_messages").json()
    assert run["calls"] == 1 and run["tags"] == {"run_id": "run_demo_messages", "agent": "research-v2"}
    assert run["steps"][0]["endpoint"] == "messages" and run["steps"][0]["alias"] == "@executor"
