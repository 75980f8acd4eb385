"""The OpenAI wire API through the real server on the embedded default, with the official SDK."""
from __future__ import annotations

import json
import uuid

import httpx
import openai
import pytest

from .conftest import client_for

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "weather for a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]


@pytest.fixture(scope="module")
def client(default_server):
    return client_for(default_server)


def test_non_stream_records_call_with_tags_cost_and_trace(default_server, client):
    run_id = f"run_{uuid.uuid4().hex[:12]}"
    raw = client.chat.completions.with_raw_response.create(
        model="@planner", messages=[{"role": "user", "content": "Plan a trip to Lisbon"}],
        extra_body={"mlx:tags": {"run_id": run_id, "agent": "research-v2"}})
    resp = raw.parse()
    assert "Lisbon".lower() in resp.choices[0].message.content.lower()
    assert resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens > 0
    call_id = raw.headers["x-mlx-call-id"]

    call = default_server.get(f"/mlx/v1/calls/{call_id}").json()
    assert call["run_id"] == run_id and call["seq"] == 1
    assert call["alias"] == "@planner" and call["provider"] == "mock" and call["model"] == "mock-large"
    assert call["status"] == "ok" and call["http_status"] == 200 and call["stream"] is False
    assert call["input_tokens"] == resp.usage.prompt_tokens
    assert call["output_tokens"] == resp.usage.completion_tokens
    expected = (resp.usage.prompt_tokens * 3 + resp.usage.completion_tokens * 15) / 1e6  # mock-large $3/$15
    assert call["priced"] is True and call["cost_usd"] == pytest.approx(expected, abs=1e-12)
    assert call["request"]["mlx:tags"] == {"run_id": run_id, "agent": "research-v2"}  # stored as sent
    assert call["response"]["choices"][0]["message"]["content"] == resp.choices[0].message.content
    d = call["decision"]
    assert d["config"] == "default" and d["strategy"] == "fallback" and d["served_by"] == "mock/mock-large"
    assert d["prices"]["input_per_mtok"] == 3.0 and d["prices"]["output_per_mtok"] == 15.0
    assert call["attempts"] == [{"provider": "mock", "model": "mock-large", "status": "ok", "http_status": 200,
                                 "latency_ms": call["attempts"][0]["latency_ms"], "error": None, "category": None,
                                 "next": None}]
    assert call["config_version"] and call["started_at"].endswith("Z")

    run = default_server.get(f"/mlx/v1/runs/{run_id}").json()
    assert run["tags"] == {"run_id": run_id, "agent": "research-v2"}
    assert run["calls"] == 1 and run["status"] == "running"
    assert run["cost_usd"] == pytest.approx(expected, abs=1e-12)
    assert [s["call_id"] for s in run["steps"]] == [call_id]


def test_stream_hides_usage_chunk_unless_asked_and_still_records_usage(default_server, client):
    run_id = f"run_{uuid.uuid4().hex[:12]}"
    tags = {"mlx:tags": {"run_id": run_id}}
    msgs = [{"role": "user", "content": "stream me something"}]
    chunks = list(client.chat.completions.create(model="@executor", messages=msgs, stream=True, extra_body=tags))
    assert all(c.choices for c in chunks), "the usage-only chunk must be hidden when not requested"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text.startswith("About stream me something")
    assert chunks[-1].choices[0].finish_reason == "stop"

    with_usage = list(client.chat.completions.create(model="@executor", messages=msgs, stream=True, extra_body=tags,
                                                     stream_options={"include_usage": True}))
    assert with_usage[-1].choices == [] and with_usage[-1].usage.completion_tokens > 0

    steps = default_server.get(f"/mlx/v1/runs/{run_id}").json()["steps"]
    assert [s["stream"] for s in steps] == [True, True]
    assert steps[0]["output_tokens"] == with_usage[-1].usage.completion_tokens  # same request, deterministic mock
    assert steps[0]["ttft_ms"] is not None and steps[0]["ttft_ms"] <= steps[0]["latency_ms"]
    call = default_server.get(f"/mlx/v1/calls/{steps[0]['call_id']}").json()
    assert call["response"]["choices"][0]["message"]["content"] == text


def test_tools_round_trip(client):
    msgs = [{"role": "user", "content": "What's the weather in Paris?"}]
    first = client.chat.completions.create(model="@executor", messages=msgs, tools=TOOLS)
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    assert "city" in json.loads(call.function.arguments)
    msgs += [first.choices[0].message.model_dump(exclude_none=True),
             {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'}]
    second = client.chat.completions.create(model="@executor", messages=msgs, tools=TOOLS)
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.content

    streamed = list(client.chat.completions.create(model="@executor", messages=msgs[:1], tools=TOOLS, stream=True))
    args = "".join(c.choices[0].delta.tool_calls[0].function.arguments or ""
                   for c in streamed if c.choices and c.choices[0].delta.tool_calls)
    assert json.loads(args) == json.loads(call.function.arguments)


def test_embeddings_and_models(client):
    e = client.embeddings.create(model="@embedder", input=["a cat sat", "a cat sat", "quantum flux"])
    v = [d.embedding for d in e.data]
    assert len(v) == 3 and len(v[0]) == 256 and v[0] == v[1] and v[0] != v[2]
    assert e.usage.prompt_tokens > 0
    ids = [m.id for m in client.models.list()]
    assert {"@planner", "@executor", "@summarizer", "@judge", "@embedder"} <= set(ids)
    assert "mock/mock-large" in ids


def test_tags_from_headers(default_server, client):
    run_id = f"run_{uuid.uuid4().hex[:12]}"
    client.chat.completions.create(model="@executor", messages=[{"role": "user", "content": "hi"}],
                                   extra_headers={"x-mlx-run-id": run_id, "x-mlx-tags": '{"agent": "hdr", "tenant": "t1"}'})
    run = default_server.get(f"/mlx/v1/runs/{run_id}").json()
    assert run["tags"] == {"run_id": run_id, "agent": "hdr", "tenant": "t1"}


@pytest.mark.parametrize("body,status,needle", [
    ({"model": "@planner", "messages": [], "mlx:tags": {f"k{i}": "v" for i in range(33)}}, 400, "at most 32"),
    ({"model": "@planner", "messages": [], "mlx:tags": {"run_id": "x" * 257}}, 400, "at most 256"),
    ({"model": "@planner", "messages": [], "mlx:tags": {"run_id": 7}}, 400, "must be a string"),
    ({"model": "@planner", "messages": [], "mlx:tags": ["run_id"]}, 400, "JSON object"),
    ({"messages": []}, 400, "'model' is required"),
    ({"model": "@nope", "messages": [{"role": "user", "content": "x"}]}, 404, "@planner"),
])
def test_bad_requests_get_clear_openai_shaped_errors(default_server, body, status, needle):
    r = httpx.post(default_server.base_url + "/chat/completions", json=body)
    assert r.status_code == status
    err = r.json()["error"]
    assert needle in err["message"] and set(err) >= {"message", "type", "code", "param"}


def test_bad_json_and_bad_tag_header(default_server, client):
    r = httpx.post(default_server.base_url + "/chat/completions", content=b'{"model": "@planner", ',
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    with pytest.raises(openai.BadRequestError, match="x-mlx-tags header is not valid JSON"):
        client.chat.completions.create(model="@planner", messages=[{"role": "user", "content": "x"}],
                                       extra_headers={"x-mlx-tags": "{nope"})
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="@nope", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "model_not_found"


def test_unknown_call_and_run_are_404(default_server):
    assert default_server.get("/mlx/v1/calls/call_nope").status_code == 404
    r = default_server.get("/mlx/v1/runs/run_nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_healthz(default_server):
    h = default_server.get("/healthz").json()
    assert h["status"] == "ok" and h["version"] and h["write_failures"] == 0


def test_body_over_the_limit_is_413_openai_shaped(make_server):
    srv = make_server({"modelux.toml": '[providers.mock]\nkind = "mock"\n\n[limits]\nmax_body_mb = 0.01\n',
                       "main.toml": '[aliases.x]\ntargets = [{ provider = "mock", model = "mock-small" }]\n'})
    big = {"model": "@x", "messages": [{"role": "user", "content": "x" * 20_000}]}
    r = httpx.post(srv.base_url + "/chat/completions", json=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    assert "max_body_mb" in r.json()["error"]["message"]
    ok = httpx.post(srv.base_url + "/chat/completions", json={**big, "messages": [{"role": "user", "content": "hi"}]})
    assert ok.status_code == 200


def test_an_unknown_alias_inside_a_run_is_a_step_of_that_run(default_server, client):
    run_id = f"run_{uuid.uuid4().hex[:12]}"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="@plannr", messages=[{"role": "user", "content": "x"}],
                                       extra_body={"mlx:tags": {"run_id": run_id}})
    client.chat.completions.create(model="@planner", messages=[{"role": "user", "content": "x"}],
                                   extra_body={"mlx:tags": {"run_id": run_id}})
    run = default_server.get(f"/mlx/v1/runs/{run_id}").json()
    assert run["calls"] == 2 and run["errors"] == 1
    bad = run["steps"][0]
    assert (bad["alias"], bad["status"], bad["http_status"], bad["provider"]) == ("@plannr", "error", 404, None)
    assert "known aliases" in bad["error"] and bad["decision"]["strategy"] == "unresolved"
