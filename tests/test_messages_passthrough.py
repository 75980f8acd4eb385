"""/v1/messages to an anthropic-kind target is passed through: the real server, the official
`anthropic` SDK as client, the strict FakeAnthropic (real HTTP) as upstream. Nothing the client
sent is lost, the upstream's events come back byte for byte, cache usage is priced at its own
rates, and routing (budgets, fallback) still applies. Plus: OpenAI chat in -> openai kind keeps
every field the client sent."""
from __future__ import annotations

import contextlib
import io
import json

import anthropic
import httpx
import openai
import pytest

from .fakes.fake_anthropic import FakeAnthropic, count_tokens, signature_for
from .fakes.openai_upstream import FakeOpenAI
from .server import ServerProcess, write_config

ANT_KEY = "sk-ant-upstream-5150-never-store"
CLIENT_KEY = "sk-ant-client-key-not-forwarded"
LONG_SYSTEM = "You are a meticulous travel agent. " * 160  # > 1024 tokens: cacheable
TOOLS = [{"name": "get_weather", "description": "Current weather for a city",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    ant, oai = FakeAnthropic(prompt_cache=True).start(), FakeOpenAI().start()
    base = tmp_path_factory.mktemp("passthrough")
    cfg = write_config(base / "config", {
        "modelux.toml": f'''[routing]
default = "main"

[providers.ant]
kind = "anthropic"
base_url = "{ant.base_url}"
api_key_env = "TEST_ANT_KEY"

[providers.up]
kind = "openai"
base_url = "{oai.base_url}"
api_key_env = "TEST_UP_KEY"

[[budgets]]
match = {{ agent = "pt-capped" }}
max_cost_usd = 0.002

[[budgets]]
match = {{ agent = "pt-tokens" }}
max_tokens = 3000
''',
        "main.toml": '''[aliases.haiku]
targets = [{ provider = "ant", model = "claude-haiku-4-5" }]
[aliases.claude]
targets = [{ provider = "ant", model = "claude-haiku-4-5" }]
[aliases.oai]
targets = [{ provider = "up", model = "gpt-4o-mini" }]
[aliases.resilient]
targets = [{ provider = "ant", model = "claude-haiku-4-5" }, { provider = "up", model = "gpt-4o-mini" }]
retries = { attempts = 0 }
''',
    })
    srv = ServerProcess(base / "data", cfg, env={"TEST_ANT_KEY": ANT_KEY, "TEST_UP_KEY": "sk-up"}).start()
    client = anthropic.Anthropic(base_url=srv.url, api_key=CLIENT_KEY, max_retries=0)
    yield srv, ant, oai, client
    srv.stop()
    ant.stop()
    oai.stop()


def call(srv: ServerProcess, call_id: str) -> dict:
    return srv.get(f"/mlx/v1/calls/{call_id}").json()


def test_cache_control_and_every_field_arrive_intact(env):
    srv, ant, _, client = env
    body = {
        "model": "@haiku", "max_tokens": 200, "temperature": 0.2, "service_tier": "auto",
        "system": [{"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral"}}],
        "tools": [{**TOOLS[0], "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        "tool_choice": {"type": "none"},
        "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "Rome is warm."},
             "title": "notes", "citations": {"enabled": True}},
            {"type": "text", "text": "What do my notes say?", "cache_control": {"type": "ephemeral"}}]}],
    }
    core = ("model", "max_tokens", "messages")
    raw = client.messages.with_raw_response.create(
        **{k: body[k] for k in core}, metadata={"user_id": "u-1", "agent": "cacher"},
        extra_body={"mlx:tags": {"run_id": "pt-run-1"}, **{k: v for k, v in body.items() if k not in core}})
    msg = raw.parse()
    assert msg.content[0].type == "text"
    sent = ant.requests[-1]
    # the body as the client sent it: model set to the target's, tags gone, nothing else changed
    assert sent.json == {**body, "model": "claude-haiku-4-5", "metadata": {"user_id": "u-1"}}
    assert sent.headers["x-api-key"] == ANT_KEY and CLIENT_KEY not in json.dumps(sent.headers)
    assert sent.headers["anthropic-version"] == raw.http_request.headers["anthropic-version"]  # the client's
    rec = call(srv, raw.headers["x-mlx-call-id"])
    assert rec["run_id"] == "pt-run-1" and rec["tags"]["agent"] == "cacher"
    assert rec["decision"]["format"] == {
        "in": "anthropic", "targets": [{"target": "ant/claude-haiku-4-5", "mode": "pass-through"}],
        "headers": {"anthropic-version": sent.headers["anthropic-version"]}}  # what the client sent, for replay
    assert rec["response"]["object"] == "chat.completion"  # the one shape every record's response has
    assert rec["response"]["choices"][0]["message"]["content"] == msg.content[0].text
    # the fake's simulated cache wrote the prefix: the record says so
    assert rec["decision"]["raw_usage"]["cache_creation_input_tokens"] > 1024


def test_thinking_signature_round_trips_through_a_tool_loop(env):
    _, ant, _, client = env
    thinking = {"type": "enabled", "budget_tokens": 2048}
    messages = [{"role": "user", "content": "Weather in Oslo?"}]
    ant.enqueue(thinking="The user wants Oslo's weather: call the tool.",
                tool_use=[{"name": "get_weather", "input": {"city": "Oslo"}}])
    with client.messages.stream(model="@haiku", max_tokens=4096, thinking=thinking, tools=TOOLS,
                                messages=messages) as s:
        first = s.get_final_message()
    assert [b.type for b in first.content] == ["thinking", "tool_use"]
    assert first.content[0].signature == signature_for(first.content[0].thinking)
    use = first.content[1]
    messages += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "2°C, snow"}]}]
    second = client.messages.create(model="@haiku", max_tokens=4096, thinking=thinking, tools=TOOLS,
                                    messages=messages)
    assert second.content[-1].text == "tool said: 2°C, snow"  # the fake checked the signature: 400 otherwise
    back = ant.requests[-1].json["messages"][1]["content"][0]
    assert back == {"type": "thinking", "thinking": first.content[0].thinking,
                    "signature": first.content[0].signature}


def test_anthropic_beta_header_and_beta_fields_forwarded(env):
    _, ant, _, client = env
    edits = {"edits": [{"type": "clear_tool_uses_20250919"}]}
    with pytest.raises(anthropic.BadRequestError) as ei:  # without the beta the (strict) upstream refuses
        client.messages.create(model="@haiku", max_tokens=50, messages=[{"role": "user", "content": "hi"}],
                               extra_body={"context_management": edits})
    assert "context-management-2025-06-27" in ei.value.message
    msg = client.messages.create(model="@haiku", max_tokens=50, messages=[{"role": "user", "content": "hi"}],
                                 extra_body={"context_management": edits},
                                 extra_headers={"anthropic-beta": "context-management-2025-06-27,files-api-2025-04-14"})
    assert msg.content[0].text == "echo: hi"
    sent = ant.requests[-1]
    assert sent.headers["anthropic-beta"] == "context-management-2025-06-27,files-api-2025-04-14"
    assert sent.json["context_management"] == edits


def test_server_tool_passes_both_ways(env):
    _, ant, _, client = env
    ant.enqueue(server_tool="web_search", text="Found it.")
    tools = [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}]
    msg = client.messages.create(model="@haiku", max_tokens=300, tools=tools,
                                 messages=[{"role": "user", "content": "news about Rome"}])
    assert [b.type for b in msg.content] == ["server_tool_use", "web_search_tool_result", "text"]
    assert ant.requests[-1].json["tools"] == tools


def test_count_tokens_is_the_providers_number(env):
    srv, ant, _, client = env
    body = {"system": LONG_SYSTEM, "tools": TOOLS, "messages": [{"role": "user", "content": "How warm is Rome?"}]}
    raw = client.messages.with_raw_response.count_tokens(model="@haiku", **body)
    assert raw.headers["x-mlx-token-count"] == "exact"
    assert raw.parse().input_tokens == count_tokens({**body, "model": "claude-haiku-4-5"})
    assert ant.requests[-1].path == "/v1/messages/count_tokens"
    assert ant.requests[-1].json == {**body, "model": "claude-haiku-4-5"}
    # another kind: the estimate, marked as one
    est = client.messages.with_raw_response.count_tokens(model="@oai", **body)
    assert est.headers["x-mlx-token-count"] == "estimate" and est.headers["x-mlx-estimate-reason"]
    assert est.parse().input_tokens != raw.parse().input_tokens


def _script(events: list[tuple[str, dict]]) -> bytes:
    return b"".join(f"event: {n}\ndata: {json.dumps(d)}\n\n".encode() for n, d in events)


def test_streamed_events_are_the_upstreams_bytes(env):
    srv, ant, _, client = env
    message = {"id": "msg_passthrough_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
               "content": [{"type": "thinking", "thinking": "Short.", "signature": signature_for("Short.")},
                           {"type": "text", "text": "Rome is warm and sunny today."},
                           {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Rome"}}],
               "stop_reason": "tool_use", "stop_sequence": None,
               "usage": {"input_tokens": 12, "output_tokens": 30, "cache_read_input_tokens": 900,
                         "cache_creation_input_tokens": 0}}
    events = FakeAnthropic.stream_events(message)
    upstream = _script(events)
    ant.enqueue(raw_sse=upstream)
    with httpx.stream("POST", f"{srv.url}/v1/messages", headers={"x-api-key": "k", "anthropic-version": "2023-06-01"},
                      json={"model": "@haiku", "max_tokens": 100, "stream": True, "tools": TOOLS,
                            "messages": [{"role": "user", "content": "Rome?"}]}) as r:
        got = b"".join(r.iter_bytes())
        call_id = r.headers["x-mlx-call-id"]
    assert got == upstream  # every event, name and data, byte for byte
    # and what the SDK parses from it equals what it parses from the upstream's own payloads
    ant.enqueue(raw_sse=upstream)
    with client.messages.create(model="@haiku", max_tokens=100, stream=True, tools=TOOLS,
                                messages=[{"role": "user", "content": "Rome?"}]) as stream:
        seen = [e.model_dump() for e in stream]
    assert seen == [_parse(d) for n, d in events if n != "ping"]  # the SDK skips pings
    rec = call(srv, call_id)
    assert rec["status"] == "ok" and rec["stream"] is True and rec["cached_tokens"] == 900
    message_out = rec["response"]["choices"][0]["message"]
    assert message_out["content"] == "Rome is warm and sunny today."
    assert message_out["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Rome"}'}


def _parse(data: dict) -> dict:
    from anthropic._models import construct_type
    from anthropic.types import RawMessageStreamEvent
    return construct_type(type_=RawMessageStreamEvent, value=data).model_dump()


def test_cost_uses_cache_read_and_both_cache_write_rates(env):
    srv, ant, _, client = env
    # claude-haiku-4-5 (genai-prices, USD per Mtok): input 1, output 5, cache read 0.1, 5m write 1.25, 1h write 2
    hand = (100 * 1 + 50 * 5 + 2000 * 0.1 + 500 * 1.25 + 300 * 2) / 1e6  # = 0.001775
    for stream in (False, True):
        ant.enqueue(text="ok", input_tokens=100, output_tokens=50, cache_read=2000, cache_write=800, cache_write_1h=300)
        raw = client.messages.with_raw_response.create(model="@haiku", max_tokens=50, stream=stream,
                                                       messages=[{"role": "user", "content": "price me"}])
        if stream:
            for _ in raw.parse():
                pass
        rec = call(srv, raw.headers["x-mlx-call-id"])
        assert rec["cost_usd"] == pytest.approx(hand, abs=1e-12), stream
        assert (rec["input_tokens"], rec["cached_tokens"], rec["output_tokens"]) == (2900, 2000, 50)
        assert rec["decision"]["prices"]["cache_write_1h_per_mtok"] == 2.0


def test_529_falls_back_to_openai_with_the_drop_in_the_trace(env):
    srv, ant, oai, client = env
    ant.enqueue(status=529)
    oai.enqueue(text="From the fallback.")
    raw = client.messages.with_raw_response.create(
        model="@resilient", max_tokens=50,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "hi"}], extra_body={"mlx:tags": {"run_id": "pt-fallback"}})
    assert raw.parse().content[0].text == "From the fallback."
    assert oai.requests[-1].json["messages"][0] == {"role": "system", "content": "Be brief."}
    rec = call(srv, raw.headers["x-mlx-call-id"])
    assert [(a["provider"], a["http_status"], a["next"]) for a in rec["attempts"]] == [
        ("ant", 529, "fallback"), ("up", 200, None)]
    targets = rec["decision"]["format"]["targets"]
    assert targets[0] == {"target": "ant/claude-haiku-4-5", "mode": "pass-through"}
    assert targets[1]["mode"] == "translated" and targets[1]["dropped"] == ["cache_control (1 marker)"]
    assert targets[1]["note"] == "cache_control (1 marker) dropped: fallback to up (openai)"
    assert "format: cache_control (1 marker) dropped: fallback to up (openai)" in srv.cli("trace", "pt-fallback").stdout


def test_untranslatable_body_refused_by_a_translating_fallback(env):
    srv, ant, _, client = env
    ant.enqueue(status=529)
    with pytest.raises(anthropic.BadRequestError) as ei:
        client.messages.create(model="@resilient", max_tokens=50,
                               tools=[{"type": "web_search_20250305", "name": "web_search"}],
                               messages=[{"role": "user", "content": "news"}])
    rec = call(srv, ei.value.response.headers["x-mlx-call-id"])
    assert [a["provider"] for a in rec["attempts"]] == ["ant", "up"]
    refused = rec["decision"]["format"]["targets"][1]
    assert refused["mode"] == "refused" and "tool" in refused["reason"] and refused["reason"] in ei.value.message


def test_budget_counts_a_passed_through_stream_and_cuts_it(env):
    srv, ant, _, client = env
    ant.enqueue(text="word " * 3000, input_tokens=10, output_tokens=3000)
    got = ""
    with pytest.raises(anthropic.APIStatusError) as ei:
        with client.messages.stream(model="@haiku", max_tokens=4000, messages=[{"role": "user", "content": "go"}],
                                    metadata={"agent": "pt-capped"}, extra_body={"mlx:tags": {"run_id": "pt-b1"}}) as s:
            for text in s.text_stream:
                got += text
    assert "while streaming" in str(ei.value)
    assert got and len(got) < len("word " * 3000)
    run = srv.get("/mlx/v1/runs/pt-b1").json()
    assert run["steps"][0]["status"] == "aborted" and run["status"] == "aborted"
    # a settled pass-through stream counts its tokens: the next call is refused
    ant.enqueue(text="ok", input_tokens=2500, output_tokens=600)
    with client.messages.stream(model="@haiku", max_tokens=700, messages=[{"role": "user", "content": "a"}],
                                metadata={"agent": "pt-tokens"}, extra_body={"mlx:tags": {"run_id": "pt-b2"}}) as s:
        assert s.get_final_text() == "ok"
    with pytest.raises(anthropic.APIStatusError) as ei:
        client.messages.create(model="@haiku", max_tokens=10, messages=[{"role": "user", "content": "b"}],
                               metadata={"agent": "pt-tokens"}, extra_body={"mlx:tags": {"run_id": "pt-b2"}})
    assert ei.value.status_code == 402


def test_openai_chat_to_openai_kind_loses_nothing(env):
    srv, _, oai, _ = env
    client = openai.OpenAI(base_url=srv.base_url, api_key="k", max_retries=0)
    fields = {"prompt_cache_key": "agent-7-session", "reasoning_effort": "low", "service_tier": "flex",
              "store": True, "metadata": {"purpose": "pt-test"}, "safety_identifier": "user-hash-1"}
    client.chat.completions.create(model="@oai", messages=[{"role": "user", "content": "hi"}], **fields)
    sent = oai.requests[-1].json
    assert {k: sent.get(k) for k in fields} == fields


def test_multi_step_run_cached_share_matches_direct(env):
    """A 5-step tool loop with a cached system prompt: through the gateway and straight to the
    fake, the same share of input tokens is read from the cache."""
    srv, ant, _, client = env
    direct = anthropic.Anthropic(base_url=ant.base_url, api_key=ANT_KEY, max_retries=0)
    shares = {}
    for name, c, model, system in (("gateway", client, "@haiku", LONG_SYSTEM + " (gateway)"),
                                   ("direct", direct, "claude-haiku-4-5", LONG_SYSTEM + " (direct)")):
        messages: list[dict] = [{"role": "user", "content": "Plan a 5-city trip, checking the weather in each."}]
        read = total = 0
        for step in range(5):
            last = step == 4
            if not last:
                ant.enqueue(tool_use=[{"name": "get_weather", "input": {"city": f"city-{step}"}}])
            msg = c.messages.create(model=model, max_tokens=300, tools=TOOLS,
                                    system=[{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
                                    messages=messages, extra_body={"mlx:tags": {"run_id": "pt-loop"}} if name == "gateway" else None)
            u = msg.usage
            read += u.cache_read_input_tokens or 0
            total += u.input_tokens + (u.cache_read_input_tokens or 0) + (u.cache_creation_input_tokens or 0)
            if last:
                break
            use = next(b for b in msg.content if b.type == "tool_use")
            messages += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in msg.content]},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                                       "content": "sunny"}]}]
        shares[name] = read / total
    print(f"\ncached-token share: gateway {shares['gateway']:.1%}, direct {shares['direct']:.1%}")
    assert shares["gateway"] == pytest.approx(shares["direct"], abs=0.01) and shares["gateway"] > 0.5
    run = srv.get("/mlx/v1/runs/pt-loop").json()
    cached = sum(s["cached_tokens"] for s in run["steps"])
    assert cached / run["input_tokens"] == pytest.approx(shares["gateway"], abs=1e-9)  # the run's own figure
    trace = srv.cli("trace", "pt-loop").stdout
    assert f"prompt cache: {cached:,} of {run['input_tokens']:,} input tokens read from cache" in trace


def test_readme_passthrough_snippet_runs(env):
    from .test_readme_examples import example

    srv, ant, _, _ = env
    snippet = example("messages-passthrough").text
    assert 'base_url="http://127.0.0.1:4000"' in snippet
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(snippet.replace("http://127.0.0.1:4000", srv.url), {})
    first, second, count = out.getvalue().splitlines()
    written, read = int(first.split()[0]), int(second.split()[1])
    assert written > 1024 and read == written  # the second call read what the first wrote
    assert ant.requests[-1].path == "/v1/messages/count_tokens" and int(count) > 0
    trace = srv.cli("trace", "run_cached").stdout
    assert f"prompt cache: {read:,} of" in trace


def test_replay_passes_a_messages_call_through_too(env):
    """Replaying a cached run keeps its cache_control: the candidate's cost is the cached one."""
    srv, ant, _, client = env
    system = [{"type": "text", "text": LONG_SYSTEM + " (replay)", "cache_control": {"type": "ephemeral"}}]
    for q in ("first", "second"):
        client.messages.create(model="@haiku", max_tokens=50, system=system,
                               messages=[{"role": "user", "content": q}], extra_body={"mlx:tags": {"run_id": "pt-replay"}})
    n = len(ant.requests)
    report = json.loads(srv.cli("simulate", "--replay=1h", "--config=@main", "--run-id", "pt-replay", "--eval", "json_valid", "--json").stdout)
    assert report["runs_replayed"] == 1 and report["requests"] == 2
    replayed_bodies = [r.json for r in ant.requests[n:] if r.path == "/v1/messages"]
    assert len(replayed_bodies) == 2 and all(b["system"] == system for b in replayed_bodies)
    steps = srv.get(f"/mlx/v1/runs/pt-replay~r{report['replay_id']}").json()["steps"]
    assert [s["status"] for s in steps] == ["ok", "ok"] and all(s["cached_tokens"] > 1024 for s in steps)
    assert steps[0]["decision"]["format"]["targets"][0]["mode"] == "pass-through"
