"""Playback of /v1/responses: a chained Responses run recorded, saved and played back by a server
whose upstream is gone, with the same answers and its steps served by the cassette (issue 12)."""
from __future__ import annotations

import openai

from .fakes.openai_upstream import FakeOpenAI
from .server import write_config

MAIN = '[aliases.planner]\ntargets = [{ provider = "up", model = "gpt-4o-mini" }]\n'


def _run(srv, run_id: str, stream: bool) -> list[str]:
    client = openai.OpenAI(base_url=srv.base_url, api_key="local", max_retries=0)
    tags = {"mlx:tags": {"run_id": run_id}}
    first = client.responses.create(model="@planner", input="name a colour", extra_body=tags)
    texts = [first.output_text]
    if stream:
        with client.responses.stream(model="@planner", input="and another", previous_response_id=first.id,
                                     extra_body=tags) as s:
            texts.append(s.get_final_response().output_text)
    else:
        texts.append(client.responses.create(model="@planner", input="and another", previous_response_id=first.id,
                                             extra_body=tags).output_text)
    return texts


def test_a_responses_chain_plays_back_from_the_cassette(make_server, tmp_path):
    up = FakeOpenAI().start()
    up.enqueue(text="teal")
    up.enqueue(text="ochre")
    config = write_config(tmp_path / "config", {
        "modelux.toml": f'[providers.up]\nkind = "openai"\nbase_url = "{up.base_url}"\napi_key_env = "UP_KEY"\n',
        "main.toml": MAIN})
    try:
        rec = make_server(config_dir=config, name="rec", env={"UP_KEY": "sk-up"})
        assert _run(rec, "resp-rec", stream=False) == ["teal", "ochre"]
        assert rec.get("/mlx/v1/runs/resp-rec").json()["calls"] == 2  # read-after-writes: both are stored
        cassette = tmp_path / "resp.cassette"
        rec.cli("cassette", "save", "--run", "resp-rec", "--out", str(cassette))
    finally:
        up.stop()
    play = make_server(config_dir=config, name="play", env={"UP_KEY": "sk-up"},
                       extra_args=["--cassette", str(cassette)])
    assert _run(play, "resp-play", stream=True) == ["teal", "ochre"]  # streamed now: still matches
    steps = play.get("/mlx/v1/runs/resp-play").json()["steps"]
    assert [(s["endpoint"], s["provider"], s["status"]) for s in steps] == [("responses", "cassette", "ok")] * 2
    run = play.get("/mlx/v1/runs/resp-play").json()
    assert run["played_back_calls"] == 2 and run["cost_usd"] == 0
    listed = next(line for line in play.cli("runs").stdout.splitlines() if "resp-play" in line)
    assert "(playback)" in listed
    assert "playback: 2 of 2 calls answered from a recording" in play.cli("trace", "resp-play").stdout

    from modelux_local.tui.data import DataSource  # the TUI's runs table marks the run too

    rows = {r.run_id: r.played_back for r in DataSource(play.db_path, None).runs()}
    assert rows["resp-play"] is True
