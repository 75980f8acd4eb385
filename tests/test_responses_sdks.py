"""The README's /v1/responses recipes, run as written against the real server: the openai SDK, the
OpenAI Agents SDK with its defaults (on the mock, an OpenAI-compatible upstream, Anthropic, Gemini),
pydantic-ai's OpenAIResponsesModel; and native mode against the strict fake Responses upstream."""
from __future__ import annotations

import contextlib
import io
import json

import apsw
import httpx
import openai
import pytest

from modelux_local.config.loader import load_dir
from modelux_local.storage.bodies import decode_body

from ._responses_env import UPSTREAM_KEY, start_env, stop_env
from .server import write_config
from .test_readme_examples import example


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = start_env(tmp_path_factory.mktemp("responses-sdks"))
    yield e
    stop_env(e)


def run_recipe(env, name: str, replace: dict[str, str] | None = None) -> str:
    code = example(name).text.replace("http://127.0.0.1:4000", env.srv.url)
    for old, new in (replace or {}).items():
        code = code.replace(old, new)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, f"README:{name}", "exec"), {"__name__": f"readme_{name.replace('-', '_')}"})
    return out.getvalue()


def run_steps(env, run_id: str) -> list[dict]:
    return env.srv.get(f"/mlx/v1/runs/{run_id}").json()["steps"]


def test_readme_openai_sdk_recipe(env):
    out = run_recipe(env, "responses-sdk")
    assert len(out.strip()) > 20
    steps = run_steps(env, "run_demo_responses")
    assert [s["endpoint"] for s in steps] == ["responses", "responses"] and all(s["priced"] for s in steps)
    assert steps[0]["tags"] == {"run_id": "run_demo_responses", "agent": "weather"}


@pytest.mark.parametrize("alias", ["@planner", "@oai", "@claude", "@gemini"])
def test_readme_agents_sdk_recipe_on_every_kind(env, alias):
    """The Agents SDK unmodified, defaults kept: a function tool round trip, then a streamed run."""
    if alias == "@oai":  # a real model decides to call the tool; the fake is told to
        for _ in range(2):
            env.up.enqueue(tool_calls=[{"name": "get_weather", "arguments": '{"city": "Paris"}'}])
            env.up.enqueue(text="It is sunny, 21C.")
    run_id = f"run_agents_{alias[1:]}"
    out = run_recipe(env, "responses-agents", {"@planner": alias, "run_demo_agents": run_id})
    assert out.strip()
    steps = run_steps(env, run_id)
    # two runs of two model calls each: tool call, then the answer after the tool's output
    assert [s["endpoint"] for s in steps] == ["responses"] * 4, steps
    assert [s["stream"] for s in steps] == [False, False, True, True]
    assert all(s["status"] == "ok" and s["priced"] for s in steps)
    assert steps[0]["tags"] == {"run_id": run_id, "agent": "weather"}
    second = env.call(steps[1]["call_id"])
    sent = second["request"]["input"]  # the Agents SDK sends the whole history itself
    assert [i.get("type") for i in sent][-2:] == ["function_call", "function_call_output"]
    assert "sunny, 21C" in json.dumps(sent)
    if alias == "@claude":
        tool_result = env.ant.requests[-1].json["messages"][-1]["content"][0]
        assert tool_result["type"] == "tool_result" and "sunny, 21C" in json.dumps(tool_result)


def test_readme_pydantic_ai_recipe(env):
    out = run_recipe(env, "responses-pydantic-ai")
    assert "city=" in out and "summary=" in out
    env.srv.get("/mlx/v1/runs")  # waits for the writer (it batches calls for a few ms before committing)
    db = apsw.Connection(str(env.srv.db_path), flags=apsw.SQLITE_OPEN_READONLY)
    rows = db.execute("SELECT endpoint, status, request FROM calls ORDER BY started_at DESC LIMIT 2").fetchall()
    assert [(r[0], r[1]) for r in rows] == [("responses", "ok")] * 2
    last, first = (json.loads(decode_body(db, r[2])) for r in rows)  # stored encoded (messages once, zstd)
    assert first["tools"][0]["name"] == "get_weather" and first["text"]["format"]["type"] == "json_schema"
    assert last["input"][-1]["type"] == "function_call_output"


def test_readme_native_config_loads(tmp_path):
    cs = load_dir(write_config(tmp_path / "cfg", {
        "modelux.toml": example("responses-native").text,
        "main.toml": '[aliases.planner]\ntargets = [{ provider = "openai", model = "gpt-4o-mini" }]\n'}))
    assert cs.server.providers["openai"].responses == "native"


def test_native_mode_config_needs_the_openai_kind(tmp_path):
    from modelux_local.config.loader import ConfigError

    with pytest.raises(ConfigError, match="responses"):
        load_dir(write_config(tmp_path / "cfg", {
            "modelux.toml": '[providers.m]\nkind = "mock"\nresponses = "native"\n',
            "main.toml": '[aliases.planner]\ntargets = [{ provider = "m", model = "x" }]\n'}))


# ---------------------------------------------------------------- native mode

@pytest.fixture(scope="module")
def client(env):
    return openai.OpenAI(base_url=env.srv.base_url, api_key="sk-client-not-stored", max_retries=0)


def test_native_forwards_the_body_and_prices_responses_usage(env, client):
    env.nat.enqueue(text="native answer", input_tokens=1000, output_tokens=200, cached_tokens=400,
                    reasoning_tokens=50)
    raw = client.responses.with_raw_response.create(
        model="@native", input="hi", tools=[{"type": "web_search"}], include=["reasoning.encrypted_content"],
        metadata={"agent": "nat", "mlx:tags": {"run_id": "run-native-1"}},  # tags
        extra_body={"mlx:tags": {"step": "one"}})
    r = raw.parse()
    assert r.output_text == "native answer" and [i.type for i in r.output] == ["web_search_call", "message"]
    sent = env.nat.requests[-1]
    assert sent.json["model"] == "gpt-4o-mini" and sent.json["tools"] == [{"type": "web_search"}]
    assert sent.json["metadata"] == {"agent": "nat"} and "mlx:tags" not in sent.json
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    rec = env.call(raw.headers["x-mlx-call-id"])
    assert rec["endpoint"] == "responses" and rec["provider"] == "nat" and rec["priced"]
    assert (rec["input_tokens"], rec["output_tokens"], rec["cached_tokens"], rec["reasoning_tokens"]) == (1000, 200, 400, 50)
    assert rec["decision"]["raw_usage"]["input_tokens_details"]["cached_tokens"] == 400
    assert rec["response"]["object"] == "chat.completion"
    assert rec["response"]["choices"][0]["message"]["content"] == "native answer"
    assert rec["tags"] == {"agent": "nat", "run_id": "run-native-1", "step": "one"}
    assert UPSTREAM_KEY not in json.dumps(rec)
    # state is the upstream's; the answer is mirrored for GET
    assert client.responses.retrieve(r.id).output_text == "native answer"
    again = client.responses.create(model="@native", input="more", previous_response_id=r.id)
    assert env.nat.requests[-1].json["previous_response_id"] == r.id and again.output_text == "echo: more"


def test_native_stream_passes_events_and_records_the_answer(env, client):
    env.nat.enqueue(text="streamed natively", input_tokens=30, output_tokens=5)
    raw = client.responses.with_raw_response.create(model="@native", input="go", stream=True)
    events = list(raw.parse())
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))  # the upstream's, untouched
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "streamed natively"
    rec = env.call(raw.headers["x-mlx-call-id"])
    assert rec["stream"] and rec["status"] == "ok" and (rec["input_tokens"], rec["output_tokens"]) == (30, 5)
    assert rec["response"]["choices"][0]["message"]["content"] == "streamed natively"


def test_native_tool_call_stream_and_agents_sdk(env):
    out = run_recipe(env, "responses-agents", {"@planner": "@native", "run_demo_agents": "run_agents_native"})
    assert out.strip()
    steps = run_steps(env, "run_agents_native")
    assert len(steps) == 4 and all(s["provider"] == "nat" and s["status"] == "ok" for s in steps)
    streamed_call = env.call(steps[2]["call_id"])["response"]["choices"][0]["message"]
    assert streamed_call["tool_calls"][0]["function"]["name"] == "get_weather"


def test_native_failure_falls_back_to_a_translated_target(env, client):
    env.nat.enqueue(status=500)
    raw = client.responses.with_raw_response.create(model="@native-then-mock", input="fallback please")
    assert raw.headers["x-mlx-served-by"] == "mock/mock-small" and raw.parse().output_text
    # a hosted tool only a native target can run: the translated fallback refuses it, naming the tool
    env.nat.enqueue(status=500)
    r = httpx.post(env.srv.base_url + "/responses", timeout=30, json={
        "model": "@native-then-mock", "input": "search", "tools": [{"type": "web_search"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools[0].type", r.text


@pytest.mark.parametrize("alias", ["@claude", "@native"])
def test_agents_sdk_chaining_with_previous_response_id(env, alias):
    """The Agents SDK's server-side chaining: later calls send only new items and previous_response_id;
    the earlier turns come from our state (translated) or the upstream's (native)."""
    import asyncio

    from agents import Agent, ModelSettings, Runner, function_tool, set_default_openai_client, set_tracing_disabled

    set_default_openai_client(openai.AsyncOpenAI(base_url=env.srv.base_url, api_key="k", max_retries=0))
    set_tracing_disabled(True)

    @function_tool
    def get_weather(city: str) -> str:
        """The current weather in a city."""
        return f"hail in {city}"

    run_id = f"run_chain_{alias[1:]}"
    agent = Agent(name="w", instructions="Use the tool.", model=alias, tools=[get_weather],
                  model_settings=ModelSettings(metadata={"run_id": run_id}))
    async def both():
        first = await Runner.run(agent, "Weather in Bergen?", auto_previous_response_id=True)
        return first, await Runner.run(agent, "And tomorrow?", previous_response_id=first.last_response_id)

    first, second = asyncio.run(both())
    assert first.final_output and second.final_output
    steps = run_steps(env, run_id)
    requests = [env.call(s["call_id"])["request"] for s in steps]
    assert "previous_response_id" not in requests[0]
    assert all(r["previous_response_id"] for r in requests[1:])
    assert [i.get("type") for i in requests[1]["input"]] == ["function_call_output"]  # only the new item
    if alias == "@claude":  # the whole conversation reached Anthropic, rebuilt from the stored turns
        sent = env.ant.requests[-1].json["messages"]
        assert "Bergen" in json.dumps(sent[0]) and "hail in" in json.dumps(sent)
