"""POST /v1/responses through the real server with the openai SDK's `client.responses`: the mock,
an OpenAI-compatible upstream and Anthropic behind aliases (translated to chat), conversation
state, streaming events, refusals, tags, budgets and the record."""
from __future__ import annotations

import json
import time
import typing

import apsw
import httpx
import openai
import pytest
from openai.types.responses import ResponseStreamEvent

from modelux_local.storage.responses_store import chat_body_for_call

from ._responses_env import UPSTREAM_KEY, start_env, stop_env

WEATHER = [{"type": "function", "name": "get_weather", "description": "Current weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
# event type -> the openai SDK's model of it, to validate each event we send against its own class
EVENT_CLASSES = {typing.get_args(c.model_fields["type"].annotation)[0]: c
                 for c in typing.get_args(typing.get_args(ResponseStreamEvent)[0])}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = start_env(tmp_path_factory.mktemp("responses"))
    yield e
    stop_env(e)


@pytest.fixture(scope="module")
def client(env):
    return openai.OpenAI(base_url=env.srv.base_url, api_key="sk-client-not-stored", max_retries=0)


def sse_events(srv, body: dict) -> list[dict]:
    """The raw SSE events of a streamed call, each validated by the openai SDK's event union."""
    events = []
    with httpx.stream("POST", srv.base_url + "/responses", json=body, timeout=30) as r:
        assert r.status_code == 200, r.read()
        name = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                ev = json.loads(line[6:])
                assert ev["type"] == name
                EVENT_CLASSES[ev["type"]].model_validate(ev)
                events.append(ev)
    return events


def test_plain_text_with_instructions_tags_and_record(env, client):
    raw = client.responses.with_raw_response.create(
        model="@oai", input="Hello", instructions="Answer in French.", max_output_tokens=50, temperature=0.2,
        metadata={"agent": "translator", "step": "1"}, extra_body={"mlx:tags": {"run_id": "resp-run-1"}},
        extra_headers={"x-mlx-tags": '{"team": "infra"}'})
    r = raw.parse()
    assert r.object == "response" and r.status == "completed" and r.output_text == "echo: Hello"
    assert r.id.startswith("resp_") and r.model == "gpt-4o-mini" and r.instructions == "Answer in French."
    assert r.metadata == {"agent": "translator", "step": "1"}
    assert r.usage.input_tokens > 0 and r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    sent = env.up.requests[-1].json
    assert sent["messages"] == [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hello"}]
    assert sent["max_tokens"] == 50 and sent["temperature"] == 0.2
    assert not {"metadata", "mlx:tags", "instructions", "input"} & set(sent)  # tags never reach the upstream
    rec = env.call(raw.headers["x-mlx-call-id"])
    assert rec["endpoint"] == "responses" and rec["status"] == "ok" and rec["priced"] and rec["cost_usd"] > 0
    assert rec["tags"] == {"team": "infra", "agent": "translator", "step": "1", "run_id": "resp-run-1"}
    assert rec["request"]["input"] == "Hello" and rec["request"]["mlx:tags"] == {"run_id": "resp-run-1"}
    assert rec["response"]["object"] == "chat.completion" and rec["decision"]["served_by"] == "up/gpt-4o-mini"
    assert UPSTREAM_KEY not in json.dumps(rec) and "sk-client-not-stored" not in json.dumps(rec)


def test_tool_round_trip_through_previous_response_id(env, client):
    first = client.responses.create(model="@claude", input="Weather in Paris?", tools=WEATHER,
                                    instructions="Use tools.")
    call = first.output[0]
    assert call.type == "function_call" and call.name == "get_weather" and json.loads(call.arguments)["city"]
    second = client.responses.create(model="@claude", previous_response_id=first.id, tools=WEATHER,
                                     input=[{"type": "function_call_output", "call_id": call.call_id,
                                             "output": "sunny, 21C"}])
    assert second.previous_response_id == first.id and "sunny, 21C" in second.output_text
    sent = env.ant.requests[-1].json  # the strict Anthropic fake checked tool_use / tool_result pairing
    assert "system" not in sent  # instructions are not inherited
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["messages"][1]["content"][0]["type"] == "tool_use"
    assert sent["messages"][2]["content"][0] == {"type": "tool_result", "tool_use_id": call.call_id,
                                                 "content": "sunny, 21C"}
    # a third turn continues from the second, which holds the whole chain
    third = client.responses.create(model="@planner", previous_response_id=second.id, input="thanks")
    assert third.status == "completed"
    items = client.responses.input_items.list(second.id)
    assert [i.type for i in items.data] == ["function_call_output"] and items.data[0].id


def test_state_get_delete_and_404s(env, client):
    r = client.responses.create(model="@planner", input=[{"role": "user", "content": [
        {"type": "input_text", "text": "first"}, {"type": "input_text", "text": " words"}]}])
    assert client.responses.retrieve(r.id).output_text == r.output_text
    client.responses.delete(r.id)
    for fn in (lambda: client.responses.retrieve(r.id), lambda: client.responses.delete(r.id),
               lambda: client.responses.input_items.list(r.id)):
        with pytest.raises(openai.NotFoundError):
            fn()
    with pytest.raises(openai.NotFoundError) as ei:
        client.responses.create(model="@planner", input="again", previous_response_id=r.id)
    assert ei.value.body["param"] == "previous_response_id"
    # store: false answers but is not kept
    off = client.responses.create(model="@planner", input="do not keep", store=False)
    assert off.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(off.id)


def test_structured_output_json_schema(env, client):
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
              "required": ["city", "population"], "additionalProperties": False}
    r = client.responses.create(model="@planner", input="Biggest city in France?",
                                text={"format": {"type": "json_schema", "name": "city", "schema": schema,
                                                 "strict": True}})
    data = json.loads(r.output_text)
    assert set(data) == {"city", "population"} and isinstance(data["population"], int)
    client.responses.create(model="@oai", input="json please", text={"format": {"type": "json_object"}})
    assert env.up.requests[-1].json["response_format"] == {"type": "json_object"}


def test_stream_text_events_and_sequence_numbers(env):
    events = sse_events(env.srv, {"model": "@oai", "input": "stream this text please", "stream": True})
    types = [e["type"] for e in events]
    assert types[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert types[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == "echo: stream this text please" == events[-4]["text"]
    done = events[-1]["response"]
    assert done["status"] == "completed" and done["output"][0]["content"][0]["text"] == text
    assert done["usage"]["input_tokens"] > 0 and done["usage"]["output_tokens"] > 0
    assert "cached_tokens" in done["usage"]["input_tokens_details"]


def test_stream_tool_call_with_sdk(env, client):
    env.ant.enqueue(tool_use=[{"name": "get_weather", "input": {"city": "Rome"}}], cache_read=40, input_tokens=10)
    with client.responses.stream(model="@claude", input="Weather in Rome?", tools=WEATHER) as stream:
        kinds = [ev.type for ev in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds and "response.function_call_arguments.done" in kinds
    call = final.output[0]
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "Rome"}
    assert final.usage.input_tokens_details.cached_tokens == 40  # Anthropic's cache reads, in Responses usage
    again = client.responses.create(model="@claude", previous_response_id=final.id, tools=WEATHER,
                                    input=[{"type": "function_call_output", "call_id": call.call_id, "output": "rain"}])
    assert "rain" in again.output_text


@pytest.mark.parametrize("body, param", [
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]}, "tools[0].type"),
    ({"background": True}, "background"),
    ({"conversation": "conv_123"}, "conversation"),
    ({"prompt": {"id": "pmpt_1"}}, "prompt"),
    ({"frobnicate": 1}, "frobnicate"),
    ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input[0].content[0].type"),
    ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
    ({"previous_response_id": "resp_unknown"}, "previous_response_id"),
    ({"mlx:tags": "not-an-object"}, "mlx:tags"),
])
def test_refusals_name_the_parameter(env, body, param):
    r = httpx.post(env.srv.base_url + "/responses", json={"model": "@planner", "input": "hi", **body}, timeout=30)
    assert r.status_code in (400, 404), r.text
    err = r.json()["error"]
    assert err["param"] == param and err["message"], err


def test_agents_sdk_defaults_are_accepted(env):
    """What the Agents SDK and others send by default: translated or ignored, never refused."""
    body = {"model": "@planner", "input": [{"role": "user", "content": "hi"}], "include": [],
            "store": True, "truncation": "disabled", "parallel_tool_calls": True, "tool_choice": "auto",
            "prompt_cache_key": "k", "service_tier": "auto", "reasoning": {"effort": "low", "summary": "auto"},
            "text": {"format": {"type": "text"}, "verbosity": "medium"}, "safety_identifier": "u1",
            "stream_options": {"include_obfuscation": False}, "top_p": 1, "user": "u2"}
    r = httpx.post(env.srv.base_url + "/responses", json=body, timeout=30)
    assert r.status_code == 200, r.text


def test_budget_cuts_a_stream_with_response_failed(env, client):
    events = sse_events(env.srv, {"model": "@planner", "input": "Tell me about streaming budgets in detail",
                                  "stream": True, "metadata": {"agent": "stream-capped", "run_id": "resp-budget"}})
    types = [e["type"] for e in events]
    got = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert types[-2:] == ["error", "response.failed"] and "response.completed" not in types
    assert events[-2]["code"] == "run_budget_exceeded" and "while streaming" in events[-2]["message"]
    assert events[-1]["response"]["status"] == "failed"
    failed = events[-1]["response"]["error"]
    assert failed["code"] == "rate_limit_exceeded" and "max_cost_usd" in failed["message"] and got
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    with pytest.raises(openai.APIStatusError) as ei:
        client.responses.create(model="@planner", input="again",
                                metadata={"agent": "stream-capped", "run_id": "resp-budget"})
    assert ei.value.status_code == 402 and ei.value.body["code"] == "run_budget_exceeded"
    run = env.srv.get("/mlx/v1/runs/resp-budget").json()
    assert run["steps"][0]["status"] == "aborted" and run["steps"][0]["endpoint"] == "responses"


def test_stream_record_is_assembled_and_priced(env, client):
    raw = client.responses.with_raw_response.create(model="@planner", input="a streamed record", stream=True)
    for _ in raw.parse():
        pass
    rec = env.call(raw.headers["x-mlx-call-id"])
    assert rec["endpoint"] == "responses" and rec["stream"] and rec["status"] == "ok"
    assert rec["priced"] and rec["output_tokens"] > 0 and rec["response"]["choices"][0]["message"]["content"]


def test_reasoning_content_becomes_a_reasoning_item(env, client):
    """An OpenAI-compatible server's reasoning_content: a reasoning item, streamed as its summary."""
    env.up.enqueue(reasoning="First, think.", text="Answer.")
    r = client.responses.create(model="@oai", input="why?", reasoning={"effort": "high"})
    assert [i.type for i in r.output] == ["reasoning", "message"] and r.output[0].summary[0].text == "First, think."
    assert env.up.requests[-1].json["reasoning_effort"] == "high"
    env.up.enqueue(reasoning="Step one. Step two.", text="Done.")
    events = sse_events(env.srv, {"model": "@oai", "input": "why?", "stream": True})
    types = [e["type"] for e in events]
    assert types.index("response.reasoning_summary_part.added") < types.index("response.reasoning_summary_text.done") \
        < types.index("response.output_text.delta")
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.reasoning_summary_text.delta")
    final = events[-1]["response"]["output"]
    assert deltas == "Step one. Step two." == final[0]["summary"][0]["text"] and final[1]["content"][0]["text"] == "Done."


def test_gemini_streamed_tool_round_trip_with_cache_and_reasoning_tokens(env, client):
    env.gem.enqueue(function_calls=[{"name": "get_weather", "args": {"city": "Oslo"}}])
    with client.responses.stream(model="@gemini", input="Weather in Oslo?", tools=WEATHER) as stream:
        final = stream.get_final_response()
    call = final.output[0]
    assert call.type == "function_call" and json.loads(call.arguments)["city"]
    env.gem.enqueue(text="Cold in Oslo.", cached=50, thoughts=7)
    again = client.responses.create(model="@gemini", previous_response_id=final.id, tools=WEATHER,
                                    input=[{"type": "function_call_output", "call_id": call.call_id, "output": "-3C"}])
    assert again.output_text == "Cold in Oslo."
    assert again.usage.input_tokens_details.cached_tokens == 50 and again.usage.output_tokens_details.reasoning_tokens == 7
    parts = env.gem.requests[-1].json["contents"]  # the strict fake checked functionCall / functionResponse pairing
    assert [c["role"] for c in parts] == ["user", "model", "user"] and "functionResponse" in parts[2]["parts"][0]


def test_state_survives_a_restart_and_is_read_from_the_database(make_server):
    srv = make_server()
    c = openai.OpenAI(base_url=srv.base_url, api_key="k", max_retries=0)
    # no native provider here: a refusal is answered before routing, and nothing is recorded
    r = httpx.post(srv.base_url + "/responses", timeout=30,
                   json={"model": "@planner", "input": "x", "tools": [{"type": "file_search"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools[0].type" and "x-mlx-call-id" not in r.headers
    first = c.responses.create(model="@planner", input=[{"role": "user", "content": "remember the word tangerine"}])
    srv.stop()
    srv.start()  # same data dir: the in-memory copy is gone, the table is not
    assert c.responses.retrieve(first.id).output_text == first.output_text
    raw = c.responses.with_raw_response.create(model="@planner", input="what was the word?",
                                               previous_response_id=first.id)
    srv.get("/mlx/v1/calls/" + raw.headers["x-mlx-call-id"])  # read-your-writes: the queue is written
    chat_body = chat_body_for_call(apsw.Connection(str(srv.db_path)), raw.headers["x-mlx-call-id"])
    assert chat_body["model"] == "@planner"
    sent = chat_body["messages"]  # what replay re-runs: the earlier turn included
    assert [m["role"] for m in sent] == ["user", "assistant", "user"] and "tangerine" in sent[0]["content"]
    assert sent[1]["content"] == first.output_text


def test_upstream_failures_mid_stream_and_before(env):
    env.up.enqueue(text="one two three four five six", stream_fail_after=3)
    events = sse_events(env.srv, {"model": "@oai", "input": "cut me", "stream": True})
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
    assert events[-1]["response"]["error"]["code"] == "server_error"
    env.up.enqueue(status=500, n_times=10)
    r = httpx.post(env.srv.base_url + "/responses", json={"model": "@oai", "input": "fail"}, timeout=60)
    env.up.reset()
    assert r.status_code == 502 and r.json()["error"]["code"] == "all_targets_failed"
    assert r.json()["error"]["attempts"], r.text
    env.up.enqueue(status=400)
    r = httpx.post(env.srv.base_url + "/responses", json={"model": "@oai", "input": "fail"}, timeout=30)
    up_error = env.up.requests[-1]  # an upstream 4xx passes through, with its status and message
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error" and up_error


def test_a_repeated_responses_turn_is_flagged_as_a_loop(env, client):
    """Anomalies read Responses requests too: the same input five times in one run is a loop."""
    for _ in range(5):
        client.responses.create(model="@planner", input=[{"role": "user", "content": "try again"}],
                                metadata={"run_id": "resp-loop", "agent": "looper"})
    env.srv.get("/mlx/v1/runs/resp-loop")  # read-your-writes
    deadline = time.monotonic() + 10
    while "loop" not in env.srv.get("/mlx/v1/runs/resp-loop").json()["anomalies"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert env.srv.get("/mlx/v1/runs/resp-loop").json()["anomalies"] == ["loop"]
