"""Routing against fake OpenAI-compatible upstreams (real HTTP): tags stripped, retries, fallback,
timeouts, load balancing, streaming pass-through, disconnects."""
from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from .conftest import client_for
from .fakes.openai_upstream import FakeOpenAI

KEY = "sk-upstream-secret-4242-do-not-store"


def server_toml(ups: dict[str, FakeOpenAI], aliases: str, extra: str = "") -> dict[str, str]:
    providers = "".join(f'[providers.{n}]\nkind = "openai"\nbase_url = "{u.base_url}"\napi_key_env = "UP_KEY"\n\n'
                        for n, u in ups.items())
    return {"modelux.toml": f'[routing]\ndefault = "main"\n\n{providers}{extra}', "main.toml": aliases}


@pytest.fixture
def ups():
    a, b = FakeOpenAI().start(), FakeOpenAI().start()
    yield {"a": a, "b": b}
    a.stop(), b.stop()


def test_tags_stripped_and_key_from_env_and_extra_fields_pass_through(make_server, ups):
    srv = make_server(server_toml(ups, '[aliases.x]\ntargets = [{ provider = "a", model = "gpt-4o-mini" }]\n'),
                      env={"UP_KEY": KEY})
    client = client_for(srv, api_key="client-key-must-not-be-forwarded")
    client.chat.completions.create(
        model="@x", messages=[{"role": "user", "content": "hi"}], n=2, stop=["END"], temperature=0.2,
        response_format={"type": "json_object"}, tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
        tool_choice="auto", extra_body={"mlx:tags": {"run_id": "r-strip"}, "some_vendor_field": {"keep": [1, 2]}},
        extra_headers={"x-mlx-tags": '{"agent": "a"}'})
    got = ups["a"].requests[-1]
    assert "mlx:tags" not in got.json and not any(h.startswith("x-mlx") for h in got.headers)
    assert got.json["model"] == "gpt-4o-mini"
    assert got.json["some_vendor_field"] == {"keep": [1, 2]} and got.json["n"] == 2 and got.json["stop"] == ["END"]
    assert got.json["response_format"] == {"type": "json_object"} and got.json["tool_choice"] == "auto"
    assert got.json["temperature"] == 0.2 and got.json["tools"][0]["function"]["name"] == "f"
    assert got.headers["authorization"] == f"Bearer {KEY}"


def test_fallback_on_500_and_retry_on_429(make_server, ups):
    aliases = ('[aliases.x]\ntargets = [{ provider = "a", model = "gpt-4o-mini" }, { provider = "b", model = "gpt-4o" }]\n'
               'retries = { attempts = 1, backoff_ms = 10 }\n')
    srv = make_server(server_toml(ups, aliases), env={"UP_KEY": KEY})
    client = client_for(srv)
    ups["a"].enqueue(status=500, n_times=2)
    raw = client.chat.completions.with_raw_response.create(model="@x", messages=[{"role": "user", "content": "hi"}])
    assert raw.parse().model == "gpt-4o" and raw.headers["x-mlx-served-by"] == "b/gpt-4o"
    call = srv.get(f"/mlx/v1/calls/{raw.headers['x-mlx-call-id']}").json()
    assert [(a["provider"], a["http_status"], a["next"]) for a in call["attempts"]] == [
        ("a", 500, "retry"), ("a", 500, "fallback"), ("b", 200, None)]
    assert call["provider"] == "b" and call["status"] == "ok"

    ups["a"].enqueue(status=429, headers={"retry-after": "0"})
    raw = client.chat.completions.with_raw_response.create(model="@x", messages=[{"role": "user", "content": "hi"}])
    call = srv.get(f"/mlx/v1/calls/{raw.headers['x-mlx-call-id']}").json()
    assert [(a["provider"], a["http_status"], a["category"]) for a in call["attempts"]] == [
        ("a", 429, "429"), ("a", 200, None)]


def test_timeout_moves_to_next_target_and_all_failing_gives_502(make_server, ups):
    aliases = ('[aliases.x]\ntargets = [{ provider = "a", model = "gpt-4o-mini", timeout_s = 0.3 }, '
               '{ provider = "b", model = "gpt-4o" }]\nretries = { attempts = 0 }\n')
    srv = make_server(server_toml(ups, aliases), env={"UP_KEY": KEY})
    client = client_for(srv)
    ups["a"].enqueue(delay_s=2.0)
    t0 = time.monotonic()
    r = client.chat.completions.create(model="@x", messages=[{"role": "user", "content": "hi"}])
    assert r.model == "gpt-4o" and time.monotonic() - t0 < 1.5

    ups["a"].enqueue(status=503)
    ups["b"].enqueue(disconnect=True)
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="@x", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 502
    body = e.value.response.json()["error"]
    assert body["code"] == "all_targets_failed" and "a/gpt-4o-mini" in body["message"] and "b/gpt-4o" in body["message"]
    assert [a["provider"] for a in body["attempts"]] == ["a", "b"]


def test_client_errors_pass_through_without_fallback(make_server, ups):
    aliases = '[aliases.x]\ntargets = [{ provider = "a", model = "gpt-4o-mini" }, { provider = "b", model = "gpt-4o" }]\n'
    srv = make_server(server_toml(ups, aliases), env={"UP_KEY": KEY})
    ups["a"].enqueue(status=400, error={"message": "bad temperature", "type": "invalid_request_error",
                                        "param": "temperature", "code": None})
    with pytest.raises(openai.BadRequestError, match="bad temperature"):
        client_for(srv).chat.completions.create(model="@x", messages=[{"role": "user", "content": "hi"}])
    assert len(ups["b"].requests) == 0


def test_weighted_loadbalance_splits_by_weight(make_server, ups):
    aliases = ('[aliases.x]\nstrategy = "loadbalance"\ntargets = [{ provider = "a", model = "m", weight = 3 }, '
               '{ provider = "b", model = "m", weight = 1 }]\n')
    srv = make_server(server_toml(ups, aliases), env={"UP_KEY": KEY})
    with httpx.Client(timeout=10) as h:
        for _ in range(200):
            h.post(srv.base_url + "/chat/completions", json={"model": "@x", "messages": [{"role": "user", "content": "x"}]})
    share = len(ups["a"].requests) / 200
    assert len(ups["a"].requests) + len(ups["b"].requests) == 200
    assert 0.62 < share < 0.88, share


def test_direct_and_provider_slash_model_route(make_server, ups):
    srv = make_server(server_toml(ups, '[aliases.x]\ntargets = [{ provider = "a", model = "gpt-4o-mini" }]\n'),
                      env={"UP_KEY": KEY})
    client = client_for(srv)
    client.chat.completions.create(model="b/gpt-4.1", messages=[{"role": "user", "content": "hi"}])
    assert ups["b"].requests[-1].json["model"] == "gpt-4.1"
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert ups["a"].requests[-1].json["model"] == "gpt-4o-mini"  # the model the config already routes to a


def test_stream_chunks_arrive_before_upstream_finishes(make_server, ups):
    srv = make_server(server_toml(ups, '[aliases.x]\ntargets = [{ provider = "a", model = "gpt-4o-mini" }]\n'),
                      env={"UP_KEY": KEY})
    ups["a"].enqueue(text="one two three four five six", chunk_delay_s=0.15)
    t0 = time.monotonic()
    stream = client_for(srv).chat.completions.create(model="@x", messages=[{"role": "user", "content": "hi"}],
                                                     stream=True, extra_body={"mlx:tags": {"run_id": "r-ttft"}})
    arrivals = [(time.monotonic() - t0, c) for c in stream]
    first_content = next(t for t, c in arrivals if c.choices and c.choices[0].delta.content)
    total = arrivals[-1][0]
    assert total > 0.8 and first_content < total / 3, (first_content, total)
    sent = ups["a"].requests[-1]
    assert sent.json["stream_options"] == {"include_usage": True}  # we ask for usage...
    assert all(c.choices for _, c in arrivals)  # ...and hide it from a client that did not
    step = srv.get("/mlx/v1/runs/r-ttft").json()["steps"][0]
    assert step["output_tokens"] > 0 and step["ttft_ms"] < step["latency_ms"] / 3


def test_client_disconnect_cancels_upstream_and_records_client_closed(make_server, ups):
    srv = make_server(server_toml(ups, '[aliases.x]\ntargets = [{ provider = "a", model = "gpt-4o-mini" }]\n'),
                      env={"UP_KEY": KEY})
    ups["a"].enqueue(text=" ".join(f"w{i}" for i in range(40)), chunk_delay_s=0.1)
    with httpx.stream("POST", srv.base_url + "/chat/completions", timeout=10, json={
            "model": "@x", "stream": True, "messages": [{"role": "user", "content": "long"}],
            "mlx:tags": {"run_id": "r-gone"}}) as r:
        lines = r.iter_lines()
        got = [next(lines) for _ in range(6)]
    assert any(line.startswith("data: ") for line in got)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and ups["a"].requests[-1].client_gone_at is None:
        time.sleep(0.05)
    assert ups["a"].requests[-1].client_gone_at is not None, "the upstream request was not cancelled"
    for _ in range(50):
        run = srv.get("/mlx/v1/runs/r-gone")
        if run.status_code == 200:
            break
        time.sleep(0.1)
    step = run.json()["steps"][0]
    assert step["status"] == "client_closed"
    call = srv.get(f"/mlx/v1/calls/{step['call_id']}").json()
    partial = call["response"]["choices"][0]["message"]["content"]
    assert partial.startswith("w0") and "w39" not in partial


def test_mid_stream_upstream_failure_ends_with_error_event(make_server, ups):
    srv = make_server(server_toml(ups, '[aliases.x]\ntargets = [{ provider = "a", model = "gpt-4o-mini" }]\n'),
                      env={"UP_KEY": KEY})
    ups["a"].enqueue(text="a b c d e f g h", stream_fail_after=3)
    r = httpx.post(srv.base_url + "/chat/completions", timeout=10, json={
        "model": "@x", "stream": True, "messages": [{"role": "user", "content": "x"}], "mlx:tags": {"run_id": "r-fail"}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and "error" in json.loads(events[-2])
    assert srv.get("/mlx/v1/runs/r-fail").json()["steps"][0]["status"] == "error"


def test_retry_after_is_honoured_and_a_long_one_falls_back(make_server, ups):
    aliases = ('[aliases.x]\ntargets = [{ provider = "a", model = "gpt-4o-mini" }, { provider = "b", model = "gpt-4o" }]\n'
               'retries = { attempts = 1, backoff_ms = 10 }\n')
    srv = make_server(server_toml(ups, aliases), env={"UP_KEY": KEY})
    client = client_for(srv)
    ups["a"].enqueue(status=429, headers={"retry-after": "0.6"})
    raw = client.chat.completions.with_raw_response.create(model="@x", messages=[{"role": "user", "content": "hi"}])
    first, second = ups["a"].requests[-2:]
    assert second.at - first.at >= 0.55, "the retry came before the upstream's Retry-After"
    call = srv.get(f"/mlx/v1/calls/{raw.headers['x-mlx-call-id']}").json()
    assert call["attempts"][0]["retry_after_s"] == 0.6 and call["attempts"][0]["next"] == "retry"

    ups["a"].enqueue(status=429, headers={"retry-after": "60"})
    t0 = time.monotonic()
    raw = client.chat.completions.with_raw_response.create(model="@x", messages=[{"role": "user", "content": "hi"}])
    assert time.monotonic() - t0 < 5 and raw.headers["x-mlx-served-by"] == "b/gpt-4o"
    call = srv.get(f"/mlx/v1/calls/{raw.headers['x-mlx-call-id']}").json()
    assert [(a["provider"], a["next"]) for a in call["attempts"]] == [("a", "fallback"), ("b", None)]


def test_a_provider_whose_key_variable_is_unset_is_skipped(make_server, ups):
    toml = server_toml(ups, '[aliases.x]\ntargets = [{ provider = "a", model = "gpt-4o-mini" }, '
                            '{ provider = "b", model = "gpt-4o" }]\n')
    toml["modelux.toml"] = toml["modelux.toml"].replace('api_key_env = "UP_KEY"', 'api_key_env = "UNSET_KEY_4242"', 1)
    srv = make_server(toml, env={"UP_KEY": KEY})
    raw = client_for(srv).chat.completions.with_raw_response.create(model="@x", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-mlx-served-by"] == "b/gpt-4o"
    assert ups["a"].requests == [] and len(ups["b"].requests) == 1
    attempts = srv.get(f"/mlx/v1/calls/{raw.headers['x-mlx-call-id']}").json()["attempts"]
    assert [(a["provider"], a["next"]) for a in attempts] == [("a", "fallback"), ("b", None)]
    assert "UNSET_KEY_4242" in attempts[0]["error"]


def test_connect_errors_are_retried_when_listed(make_server, ups):
    from .server import free_port

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there: connection refused
    def served(on: str):
        toml = server_toml(ups, '[aliases.x]\ntargets = [{ provider = "dead", model = "m" }, { provider = "b", model = "m" }]\n'
                                f'retries = {{ attempts = 1, backoff_ms = 10, on = {on} }}\n',
                           f'[providers.dead]\nkind = "openai"\nbase_url = "{dead}"\n')
        srv = make_server(toml, env={"UP_KEY": KEY}, name=f"connect-{len(on)}")
        raw = client_for(srv).chat.completions.with_raw_response.create(model="@x", messages=[{"role": "user", "content": "hi"}])
        assert raw.headers["x-mlx-served-by"] == "b/m"
        return [(a["provider"], a["category"], a["next"])
                for a in srv.get(f"/mlx/v1/calls/{raw.headers['x-mlx-call-id']}").json()["attempts"]]
    assert served('["connect"]') == [("dead", "connect", "retry"), ("dead", "connect", "fallback"), ("b", None, None)]
    assert served('["5xx"]') == [("dead", "connect", "fallback"), ("b", None, None)]


def test_loadbalance_falls_back_to_its_other_targets(make_server, ups):
    aliases = ('[aliases.x]\nstrategy = "loadbalance"\ntargets = [{ provider = "a", model = "m", weight = 1 }, '
               '{ provider = "b", model = "m", weight = 1 }]\nretries = { attempts = 0 }\n')
    srv = make_server(server_toml(ups, aliases), env={"UP_KEY": KEY})
    ups["a"].enqueue(status=500, n_times=100)
    client = client_for(srv)
    paths = []
    for _ in range(16):
        raw = client.chat.completions.with_raw_response.create(model="@x", messages=[{"role": "user", "content": "x"}])
        assert raw.headers["x-mlx-served-by"] == "b/m"
        paths.append([(a["provider"], a["next"]) for a in
                      srv.get(f"/mlx/v1/calls/{raw.headers['x-mlx-call-id']}").json()["attempts"]])
    assert [("a", "fallback"), ("b", None)] in paths and [("b", None)] in paths  # both picks, all served
    assert len(ups["a"].requests) == sum(len(p) == 2 for p in paths)


def test_body_tags_override_header_tags(make_server, ups):
    srv = make_server(server_toml(ups, '[aliases.x]\ntargets = [{ provider = "a", model = "gpt-4o-mini" }]\n'),
                      env={"UP_KEY": KEY})
    raw = client_for(srv).chat.completions.with_raw_response.create(
        model="@x", messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-mlx-tags": '{"run_id": "r-header", "agent": "from-header", "team": "ml"}',
                       "x-mlx-run-id": "r-header-2"},
        extra_body={"mlx:tags": {"run_id": "r-body", "agent": "from-body"}})
    call = srv.get(f"/mlx/v1/calls/{raw.headers['x-mlx-call-id']}").json()
    assert call["run_id"] == "r-body"
    assert call["tags"] == {"run_id": "r-body", "agent": "from-body", "team": "ml"}
