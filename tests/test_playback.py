"""Playback end to end: a run recorded through the real server against a fake upstream, saved as a
cassette, and played back by a new server after the upstream is stopped (issue 12)."""
from __future__ import annotations

import json
import time

import anthropic
import httpx
import openai
import pytest

from .fakes.openai_upstream import FakeOpenAI
from .server import ServerProcess, write_config

UP_KEY = "sk-upstream-cassette-7731-never-store"
ENV_KEY = "sk-proj-env-key-5519-never-store"
TOOLS = [{"type": "function", "function": {"name": "lookup", "description": "look a thing up",
                                           "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]
MAIN = '''[aliases.planner]
targets = [{ provider = "up", model = "gpt-4o-mini" }]
[aliases.embedder]
targets = [{ provider = "up", model = "text-embedding-3-small" }]
[aliases.cached]
targets = [{ provider = "up", model = "gpt-4o-mini" }]
cache = { ttl = "2s" }
'''


def config_for(d, up: FakeOpenAI):
    return write_config(d, {"modelux.toml": f'[providers.up]\nkind = "openai"\nbase_url = "{up.base_url}"\n'
                                            'api_key_env = "UP_KEY"\n', "main.toml": MAIN})


def chats(up: FakeOpenAI) -> int:
    """Chat requests the upstream saw (the background search job may send it embeddings too)."""
    return sum(r.path.endswith("/chat/completions") for r in up.requests)


def clients(srv: ServerProcess):
    return (openai.OpenAI(base_url=srv.base_url, api_key="sk-client-not-stored", max_retries=0),
            anthropic.Anthropic(base_url=srv.url, api_key="sk-client-not-stored", max_retries=0))


def agent(srv: ServerProcess, run_id: str, flip_streams: bool = False) -> dict:
    """A small agent: plain, streamed, a tool call and its answer, embeddings, and a /v1/messages call.
    `flip_streams` streams what was recorded plain and the other way round."""
    c, a = clients(srv)
    tags = {"mlx:tags": {"run_id": run_id, "agent": "coder"}}
    out: dict = {}
    plan = [{"role": "system", "content": "You plan."}, {"role": "user", "content": "Plan: fix the failing test"}]
    if flip_streams:
        out["plain"] = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
            model="@planner", messages=plan, stream=True, extra_body=tags) if ch.choices)
    else:
        raw = c.chat.completions.with_raw_response.create(model="@planner", messages=plan, extra_body=tags)
        out["plain"] = raw.parse().choices[0].message.content
        out["plain_body"] = json.loads(raw.text)
    steps = [{"role": "user", "content": "Stream the steps, one per line"}]
    if flip_streams:
        r = c.chat.completions.create(model="@planner", messages=steps, extra_body=tags)
        out["streamed"], out["stream_tokens"] = r.choices[0].message.content, r.usage.completion_tokens
    else:
        chunks = list(c.chat.completions.create(model="@planner", messages=steps, stream=True,
                                                stream_options={"include_usage": True}, extra_body=tags))
        out["streamed"] = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        out["stream_tokens"] = chunks[-1].usage.completion_tokens
    msgs = [{"role": "user", "content": "Look up the failing test"}]
    t = c.chat.completions.create(model="@planner", messages=msgs, tools=TOOLS, tool_choice="required",
                                  extra_body=tags)
    tc = t.choices[0].message.tool_calls[0]
    out["tool_call"] = [tc.id, tc.function.name, tc.function.arguments]
    msgs += [{"role": "assistant", "content": None, "tool_calls": [tc.model_dump()]},
             {"role": "tool", "tool_call_id": tc.id, "content": "test_parse fails on empty input"}]
    out["after_tool"] = c.chat.completions.create(model="@planner", messages=msgs, tools=TOOLS,
                                                  extra_body=tags).choices[0].message.content
    e = c.embeddings.create(model="@embedder", input=["alpha", "beta"], extra_body=tags)
    out["vectors"] = [d.embedding for d in e.data]
    m = a.messages.create(model="@planner", max_tokens=200, messages=[{"role": "user", "content": "Summarise it"}],
                          extra_body=tags)
    out["messages"] = [m.content[0].text, m.stop_reason, m.usage.output_tokens]
    return out


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """The recording: one agent run against a live fake upstream, saved as a cassette; upstream stopped."""
    base = tmp_path_factory.mktemp("playback")
    up = FakeOpenAI().start()
    srv = ServerProcess(base / "rec-data", config_for(base / "config", up),
                        env={"UP_KEY": UP_KEY, "OPENAI_API_KEY": ENV_KEY, "ANTHROPIC_API_KEY": ENV_KEY}).start()
    try:
        out = agent(srv, "rec-1")
        srv.get("/mlx/v1/runs/rec-1")  # read-after-writes: the CLI reads the file the writer fills
        cassette = base / "coder.cassette"
        r = srv.cli("cassette", "save", "--run", "rec-1", "--out", str(cassette))
        run = srv.get("/mlx/v1/runs/rec-1").json()
        assert up.requests[0].headers["authorization"] == f"Bearer {UP_KEY}"
    finally:
        srv.stop()
        up.stop()
    assert "6 calls" in r.stdout, r.stdout
    yield {"base": base, "out": out, "cassette": cassette, "run": run, "config": base / "config"}


@pytest.fixture
def player(make_server, recorded):
    def make(*extra: str, config=None, **kw):
        return make_server(config_dir=config or recorded["config"], extra_args=["--cassette", str(kw.pop(
            "cassette", recorded["cassette"])), *extra], **kw)
    return make


def test_a_run_plays_back_offline_with_the_recorded_answers(player, recorded):
    srv = player()
    got = agent(srv, "play-1")
    assert got == recorded["out"]  # texts, tool-call ids and arguments, vectors, the whole plain body
    run = srv.get("/mlx/v1/runs/play-1").json()
    assert run["calls"] == 6 and run["errors"] == 0 and run["cost_usd"] == 0
    for step in run["steps"]:
        assert step["provider"] == "cassette" and step["cost_usd"] == 0 and step["priced"]
        assert step["decision"]["served_by"] == "cassette"
    saved = sum(s["decision"]["playback"]["saved_usd"] or 0 for s in run["steps"])  # embeddings: unpriced
    assert saved == pytest.approx(recorded["run"]["cost_usd"]) and saved > 0
    doc = json.loads(srv.cli("analytics", "--group-by", "agent", "--json").stdout)
    g = next(g for g in doc["groups"] if g["value"] == "coder")
    assert g["played_back_calls"] == 6 and g["saved_usd"] == pytest.approx(saved)
    # a played-back run saved again is the same cassette: who answered and what it cost are kept
    again = srv.data_dir / "again.cassette"
    srv.get("/mlx/v1/runs/play-1")  # read-after-writes
    srv.cli("cassette", "save", "--run", "play-1", "--out", str(again))
    assert again.read_bytes().splitlines()[1:] == recorded["cassette"].read_bytes().splitlines()[1:]


def test_streaming_switched_on_or_off_still_matches(player, recorded):
    srv = player()
    got = agent(srv, "play-flip", flip_streams=True)
    want = recorded["out"]
    assert got["plain"] == want["plain"] and got["streamed"] == want["streamed"]
    assert got["stream_tokens"] == want["stream_tokens"] and got["tool_call"] == want["tool_call"]


def test_cassette_holds_no_key_header_or_tag(recorded):
    data = recorded["cassette"].read_bytes()
    for secret in (UP_KEY, ENV_KEY, "sk-client-not-stored", "authorization", "bearer"):
        assert secret.encode() not in data and secret.encode() not in data.lower()
    calls = b"\n".join(data.splitlines()[1:])  # the header names the selected runs; the calls carry no tags
    assert b"rec-1" not in calls and b"mlx:tags" not in calls and b'"coder"' not in calls


def test_miss_in_error_mode_names_the_cassette_and_the_difference(player, recorded):
    srv = player()
    c, a = clients(srv)
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="@planner", messages=[{"role": "system", "content": "You plan."},
                                                              {"role": "user", "content": "Plan: fix the flaky test"}],
                                  extra_body={"mlx:tags": {"run_id": "miss-1"}})
    err = e.value.body
    assert e.value.status_code == 400 and err["code"] == "cassette_miss"
    assert str(recorded["cassette"]) in err["message"] and "messages[1]" in err["message"]
    assert "fix the failing test" in err["message"]  # the nearest recorded request's message
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="@planner", messages=[{"role": "system", "content": "You plan."},
                                                              {"role": "user", "content": "Plan: fix the failing test"}],
                                  temperature=0.3)
    assert "temperature: 0.3 (recorded: absent)" in e.value.body["message"]
    with pytest.raises(anthropic.BadRequestError) as e:
        a.messages.create(model="@planner", max_tokens=200, messages=[{"role": "user", "content": "Summarise again"}])
    assert e.value.body["error"]["code"] == "cassette_miss"
    step = srv.get("/mlx/v1/runs/miss-1").json()["steps"][0]
    assert step["status"] == "error" and step["http_status"] == 400 and "cassette_miss" in step["error"]


def test_miss_in_live_mode_routes_normally(player, recorded, tmp_path):
    up = FakeOpenAI().start()
    try:
        srv = player("--on-miss", "live", config=config_for(tmp_path / "live-config", up), env={"UP_KEY": UP_KEY})
        c, _ = clients(srv)
        raw = c.chat.completions.with_raw_response.create(model="@planner", messages=[
            {"role": "user", "content": "something new"}])
        assert raw.headers["x-mlx-served-by"] == "up/gpt-4o-mini" and chats(up) == 1
        raw = c.chat.completions.with_raw_response.create(model="@planner", messages=[
            {"role": "system", "content": "You plan."}, {"role": "user", "content": "Plan: fix the failing test"}])
        assert raw.headers["x-mlx-served-by"] == "cassette" and chats(up) == 1
    finally:
        up.stop()


def test_miss_in_record_mode_appends_atomically_and_plays_back_byte_identical(player, recorded, tmp_path):
    cassette = tmp_path / "grow.cassette"
    cassette.write_bytes(recorded["cassette"].read_bytes())
    before = cassette.read_bytes().splitlines()
    up = FakeOpenAI().start()
    body = {"model": "@planner", "stream": True, "messages": [{"role": "user", "content": "a brand new question"}]}
    try:
        srv = player("--on-miss", "record", cassette=cassette, config=config_for(tmp_path / "rec-config", up),
                     env={"UP_KEY": UP_KEY}, name="recorder")
        live = httpx.post(srv.base_url + "/chat/completions", json=body, timeout=30)
        assert live.headers["x-mlx-served-by"] == "up/gpt-4o-mini"
        deadline = time.monotonic() + 10
        while len(cassette.read_bytes().splitlines()) == len(before) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        up.stop()
    after = cassette.read_bytes().splitlines()
    assert after[:len(before)] == before and len(after) == len(before) + 1
    new = json.loads(after[-1])
    assert new["stream"] is True and new["events"] and new["request"]["messages"][0]["content"] == "a brand new question"
    assert not list(tmp_path.glob(".grow.cassette.*"))  # no temporary file left behind
    srv2 = player(cassette=cassette, name="replayer")
    played = httpx.post(srv2.base_url + "/chat/completions", json=body, timeout=30)
    assert played.headers["x-mlx-served-by"] == "cassette"
    assert played.content == live.content  # the recorded chunks, byte for byte


def test_identical_requests_are_answered_in_recorded_order(make_server, tmp_path):
    up = FakeOpenAI().start()
    up.enqueue(text="first answer")
    up.enqueue(text="second answer")
    cfg = config_for(tmp_path / "config", up)
    ask = [{"role": "user", "content": "try again"}]
    try:
        srv = make_server(config_dir=cfg, env={"UP_KEY": UP_KEY}, name="rec")
        c, _ = clients(srv)
        for _ in range(2):
            c.chat.completions.create(model="@planner", messages=ask, extra_body={"mlx:tags": {"run_id": "twice"}})
        srv.get("/mlx/v1/runs/twice")  # read-after-writes
        srv.cli("cassette", "save", "--run", "twice", "--out", str(tmp_path / "twice.cassette"))
    finally:
        up.stop()
    srv = make_server(config_dir=cfg, name="play", extra_args=["--cassette", str(tmp_path / "twice.cassette")])
    c, _ = clients(srv)

    def ask_in(run_id: str) -> str:
        return c.chat.completions.create(model="@planner", messages=ask,
                                         extra_body={"mlx:tags": {"run_id": run_id}}).choices[0].message.content

    assert [ask_in("p1"), ask_in("p1")] == ["first answer", "second answer"]
    with pytest.raises(openai.BadRequestError) as e:
        ask_in("p1")
    assert "recorded 2 time(s)" in e.value.body["message"] and "request number 3" in e.value.body["message"]
    assert ask_in("p2") == "first answer"  # every run starts from the first recorded answer


def test_dev_cache_hit_and_expiry(make_server, tmp_path):
    up = FakeOpenAI().start()
    try:
        srv = make_server(config_dir=config_for(tmp_path / "config", up), env={"UP_KEY": UP_KEY})
        c, _ = clients(srv)
        ask = [{"role": "user", "content": "cache me"}]

        def served(model: str, run_id: str, **headers) -> str:
            raw = c.chat.completions.with_raw_response.create(
                model=model, messages=ask, extra_body={"mlx:tags": {"run_id": run_id, "agent": "dev"}},
                extra_headers=headers)
            return raw.headers["x-mlx-served-by"]

        assert served("@cached", "c1") == "up/gpt-4o-mini"
        assert served("@cached", "c2") == "cache" and chats(up) == 1
        assert served("@cached", "c2", **{"x-mlx-cache": "0"}) == "up/gpt-4o-mini"  # a request may opt out
        time.sleep(2.2)  # past the alias's ttl
        assert served("@cached", "c3") == "up/gpt-4o-mini" and chats(up) == 3
        # an alias without `cache`: only a request asking for it
        assert served("@planner", "c4") == "up/gpt-4o-mini"
        assert served("@planner", "c4") == "up/gpt-4o-mini"
        assert served("@planner", "c4", **{"x-mlx-cache": "1"}) == "up/gpt-4o-mini"
        assert served("@planner", "c4", **{"x-mlx-cache": "1"}) == "cache" and chats(up) == 6
    finally:
        up.stop()
    step = srv.get("/mlx/v1/runs/c2").json()["steps"][0]
    assert step["decision"]["playback"]["source"] == "cache" and step["cost_usd"] == 0
    doc = json.loads(srv.cli("analytics", "--group-by", "agent", "--json").stdout)
    g = next(g for g in doc["groups"] if g["value"] == "dev")
    assert g["cache_hits"] == 2 and g["saved_usd"] > 0
    assert "2 cache hits" in srv.cli("analytics", "--group-by", "agent").stdout


def test_bad_inputs_get_clear_errors(tmp_path, recorded):
    import subprocess
    import sys

    from .server import ROOT

    def run(*args):
        return subprocess.run([sys.executable, "-m", "modelux_local", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=60)

    broken = tmp_path / "broken.cassette"
    broken.write_text(recorded["cassette"].read_text().replace('"stream":false', '"stream":fals', 1))
    r = run("serve", "--headless", "--port", "0", "--data-dir", str(tmp_path / "d"), "--cassette", str(broken))
    assert r.returncode == 1 and f"{broken}:2: not JSON" in r.stderr
    r = run("cassette", "save", "--out", str(tmp_path / "x.cassette"), "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 2 and "say which runs: --run ID, --tag K=V and/or --since 24h" in r.stderr
    r = run("cassette", "save", "--run", "nope", "--out", str(tmp_path / "x.cassette"),
            "--data-dir", str(recorded["base"] / "rec-data"))
    assert r.returncode == 1 and "no answered calls in the selected runs (0 runs matched)" in r.stderr
    assert not (tmp_path / "x.cassette").exists()
    r = run("cassette", "show", str(tmp_path / "absent.cassette"))
    assert r.returncode == 1 and "cannot read cassette" in r.stderr
    r = run("serve", "--headless", "--data-dir", str(tmp_path / "d"), "--cassette", str(broken), "--on-miss", "maybe")
    assert r.returncode == 2 and "invalid choice: 'maybe'" in r.stderr
