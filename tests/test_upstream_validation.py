"""Upstream answers are checked before they count as success (real server, fake upstreams over
real HTTP): a 200 that is not a chat completion, a stream that is cut, carries an error event or
never says [DONE], are `upstream_invalid` errors. Before the first relayed byte they are retried
or fall back; after it the stream ends with an error event. Each is recorded with the real status.
A target's `stream_timeout_s` ends a trickling stream as a recorded timeout."""
from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from .conftest import client_for
from .fakes.openai_upstream import FakeOpenAI

KEY = "sk-upstream-validation"


@pytest.fixture(scope="module")
def ups():
    a, b = FakeOpenAI().start(), FakeOpenAI().start()
    yield {"a": a, "b": b}
    a.stop(), b.stop()


@pytest.fixture(scope="module")
def srv(ups, tmp_path_factory):
    from .server import ServerProcess, write_config

    providers = "".join(f'[providers.{n}]\nkind = "openai"\nbase_url = "{u.base_url}"\napi_key_env = "UP_KEY"\n\n'
                        for n, u in ups.items())
    aliases = ('[aliases.fb]\ntargets = [{ provider = "a", model = "m-a" }, { provider = "b", model = "m-b" }]\n'
               'retries = { attempts = 0 }\n\n'
               '[aliases.retry]\ntargets = [{ provider = "a", model = "m-a" }]\nretries = { attempts = 1, backoff_ms = 1 }\n\n'
               '[aliases.solo]\ntargets = [{ provider = "a", model = "m-a" }]\nretries = { attempts = 0 }\n\n'
               '[aliases.slow]\ntargets = [{ provider = "a", model = "m-a", stream_timeout_s = 1.0 }]\n'
               'retries = { attempts = 0 }\n')
    d = tmp_path_factory.mktemp("validation")
    cdir = write_config(d / "config", {"modelux.toml": f'[routing]\ndefault = "main"\n\n{providers}',
                                       "main.toml": aliases})
    s = ServerProcess(d / "data", cdir, env={"UP_KEY": KEY})
    s.start()
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def _clean(ups):
    for u in ups.values():
        u.reset()
        u.chunk_delay_s = 0.0


def call_of(srv, call_id: str) -> dict:
    return srv.get(f"/mlx/v1/calls/{call_id}").json()


BAD_BODIES = {
    "html": dict(raw=b"<html><body>502 Bad Gateway</body></html>", content_type="text/html"),
    "empty": dict(raw=b""),
    "cut json": dict(raw=b'{"id": "chatcmpl-1", "object": "chat.completion", "choi'),
    "no choices": dict(body={"id": "x", "object": "chat.completion"}),
    "in-band error": dict(body={"error": {"message": "overloaded, try later", "type": "server_error"}}),
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_a_bad_200_falls_back_and_is_recorded_as_upstream_invalid(srv, ups, case):
    ups["a"].enqueue(**BAD_BODIES[case])
    raw = client_for(srv).chat.completions.with_raw_response.create(model="@fb", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-mlx-served-by"] == "b/m-b" and raw.parse().choices[0].message.content == "echo: hi"
    call = call_of(srv, raw.headers["x-mlx-call-id"])
    first = call["attempts"][0]
    assert (first["status"], first["http_status"], first["category"], first["next"]) == (
        "error", 200, "upstream_invalid", "fallback"), first
    assert call["status"] == "ok" and call["provider"] == "b"


def test_a_bad_200_is_retried_and_alone_gives_a_502(srv, ups):
    ups["a"].enqueue(raw=b"<html>oops</html>", content_type="text/html")
    raw = client_for(srv).chat.completions.with_raw_response.create(model="@retry", messages=[{"role": "user", "content": "x"}])
    call = call_of(srv, raw.headers["x-mlx-call-id"])
    assert [(a["http_status"], a["next"]) for a in call["attempts"]] == [(200, "retry"), (200, None)]

    ups["a"].enqueue(body={"error": {"message": "quota exhausted inside a 200"}})
    with pytest.raises(openai.APIStatusError) as e:
        client_for(srv).chat.completions.create(model="@solo", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 502 and "an error inside a 200 answer: quota exhausted inside a 200" in e.value.response.text
    call = call_of(srv, e.value.response.headers["x-mlx-call-id"])
    assert call["status"] == "error" and call["attempts"][0]["category"] == "upstream_invalid"


def test_bad_embeddings_answer_falls_back(srv, ups):
    ups["a"].enqueue(body={"object": "list"})  # no data
    r = srv.post("/v1/embeddings", json={"model": "@fb", "input": "x"})
    assert r.status_code == 200 and r.json()["data"][0]["embedding"]
    call = call_of(srv, r.headers["x-mlx-call-id"])
    assert [(a["provider"], a["category"]) for a in call["attempts"]] == [("a", "upstream_invalid"), ("b", None)]


BAD_STREAMS_BEFORE_FIRST_BYTE = {
    "html": dict(raw=b"<html>maintenance</html>", content_type="text/html"),
    "json error": dict(raw=b'{"error": {"message": "no streams today"}}', content_type="application/json"),
    "only done": dict(raw=b"data: [DONE]\n\n", content_type="text/event-stream"),
    "empty": dict(raw=b"", content_type="text/event-stream"),
    "cut at once": dict(truncate_after=0),
    "error first": dict(error_event_after=0),
}


@pytest.mark.parametrize("case", sorted(BAD_STREAMS_BEFORE_FIRST_BYTE))
def test_a_stream_bad_from_the_start_falls_back(srv, ups, case):
    ups["a"].enqueue(**BAD_STREAMS_BEFORE_FIRST_BYTE[case])
    with client_for(srv).chat.completions.with_streaming_response.create(
            model="@fb", messages=[{"role": "user", "content": "one two"}], stream=True) as resp:
        text = "".join(c.choices[0].delta.content or "" for c in resp.parse() if c.choices)
        call_id, served = resp.headers["x-mlx-call-id"], resp.headers["x-mlx-served-by"]
    assert served == "b/m-b" and text == "echo: one two"
    call = call_of(srv, call_id)
    assert call["attempts"][0]["category"] == "upstream_invalid" and call["attempts"][0]["http_status"] == 200
    assert call["status"] == "ok"


MID_STREAM = {
    "cut mid-json": dict(truncate_after=3),
    "no [DONE]": dict(omit_done=True),
    "in-band error": dict(error_event_after=2),
}


@pytest.mark.parametrize("case", sorted(MID_STREAM))
def test_a_stream_that_breaks_after_relaying_ends_with_an_error_event(srv, ups, case):
    ups["a"].enqueue(text="a b c d e f", **MID_STREAM[case])
    r = httpx.post(srv.base_url + "/chat/completions", timeout=10, json={
        "model": "@fb", "stream": True, "messages": [{"role": "user", "content": "x"}],
        "mlx:tags": {"run_id": f"r-mid-{case}"}})
    assert r.status_code == 200
    events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    err = json.loads(events[-2])["error"]
    assert err["code"] == "upstream_invalid", err
    step = srv.get(f"/mlx/v1/runs/r-mid-{case}").json()["steps"][0]
    call = call_of(srv, step["call_id"])
    assert call["status"] == "error" and call["http_status"] == 200 and "upstream_invalid" in call["error"]
    assert len(ups["b"].requests) == 0  # bytes were relayed: no fallback any more


def test_a_good_stream_is_still_ok(srv, ups):
    chunks = list(client_for(srv).chat.completions.create(
        model="@fb", messages=[{"role": "user", "content": "fine"}], stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].usage.completion_tokens > 0
    assert len(ups["b"].requests) == 0


def test_stream_timeout_ends_a_trickling_stream_as_a_recorded_timeout(srv, ups):
    ups["a"].enqueue(text=" ".join(f"w{i}" for i in range(60)), chunk_delay_s=0.1)  # ~6 s, each gap short
    t0 = time.monotonic()
    r = httpx.post(srv.base_url + "/chat/completions", timeout=30, json={
        "model": "@slow", "stream": True, "messages": [{"role": "user", "content": "x"}],
        "mlx:tags": {"run_id": "r-trickle"}})
    took = time.monotonic() - t0
    assert took < 4.5, took  # stream_timeout_s = 1.0; the whole stream would take ~6 s
    events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    err = json.loads(events[-2])["error"]
    assert "stream_timeout_s" in err["message"] and err["code"] == "timeout"
    assert any("w1" in e for e in events[:-2])  # what came before the deadline was relayed
    call = call_of(srv, srv.get("/mlx/v1/runs/r-trickle").json()["steps"][0]["call_id"])
    assert call["status"] == "error" and call["http_status"] == 504 and "timed out" in call["error"]
    time.sleep(0.5)
    assert ups["a"].requests[-1].client_gone_at is not None  # the upstream was hung up on


# -- the translating kinds, provider against its fake vendor server ------------------------------

@pytest.fixture
async def vendors(monkeypatch):
    from modelux_local.config.schema import ProviderConfig
    from modelux_local.providers.anthropic import AnthropicProvider
    from modelux_local.providers.gemini import GeminiProvider
    from tests.fakes.fake_anthropic import FakeAnthropic
    from tests.fakes.fake_gemini import FakeGemini

    monkeypatch.setenv("V_ANTHROPIC_KEY", "sk-ant-v")
    monkeypatch.setenv("V_GEMINI_KEY", "AIza-v")
    with FakeAnthropic() as fa, FakeGemini() as fg:
        a = AnthropicProvider("ant", ProviderConfig(kind="anthropic", base_url=fa.base_url, api_key_env="V_ANTHROPIC_KEY"))
        g = GeminiProvider("gem", ProviderConfig(kind="gemini", base_url=fg.base_url, api_key_env="V_GEMINI_KEY"))
        yield {"anthropic": (a, fa), "gemini": (g, fg)}
        await a.aclose()
        await g.aclose()


def _req(stream: bool = False):
    from modelux_local.providers.base import ChatRequest

    return ChatRequest({"model": "m-1", "messages": [{"role": "user", "content": "x"}]}, "m-1", stream, 5.0)


VENDOR_BAD = {
    "anthropic": [({"body": {"type": "error", "error": {"type": "overloaded_error", "message": "busy now"}}}, "busy now"),
                  ({"body": {}}, "not a Messages API message"),
                  ({"body": {"type": "message", "content": 5}}, "not a Messages API message"),
                  ({"raw_sse": b"<html>gateway</html>"}, "message_stop"),
                  ({"raw_sse": b"event: message_start\ndata: {nope\n\n"}, "not a JSON object")],
    "gemini": [({"body": {"error": {"code": 500, "message": "backend hiccup"}}}, "backend hiccup"),
               ({"body": {}}, "not a generateContent answer"),
               ({"raw_sse": b"<html>gateway</html>"}, "without any chunk"),
               ({"raw_sse": b'data: {"candidates": [{"content": {"parts": [{"text": "par"}]}}]}\n\n'}, "finishReason")],
}


@pytest.mark.parametrize("kind", sorted(VENDOR_BAD))
async def test_translating_kinds_call_a_bad_200_upstream_invalid(vendors, kind):
    from modelux_local.errors import UpstreamError

    provider, fake = vendors[kind]
    for reply, words in VENDOR_BAD[kind]:
        fake.enqueue(**reply)
        with pytest.raises(UpstreamError) as e:
            if "raw_sse" in reply:
                stream = await provider.chat_stream(_req(stream=True))
                [c async for c in stream.events]
            else:
                await provider.chat(_req())
        assert e.value.category == "upstream_invalid" and words in e.value.message, (reply, e.value.message)
        assert e.value.upstream_status == 200
