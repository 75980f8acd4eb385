"""Runs recorded through /v1/messages (the anthropic SDK) replay like chat runs."""
from __future__ import annotations

import json

import anthropic

from .server import ROOT


def test_messages_calls_are_replayed_against_the_candidate(make_server):
    srv = make_server(config_dir=ROOT / "configs" / "example")
    client = anthropic.Anthropic(base_url=srv.url, api_key="local", max_retries=0)
    for i in range(2):
        client.messages.create(model="@executor", max_tokens=100, messages=[{"role": "user", "content": f"step {i}"}],
                               extra_body={"mlx:tags": {"run_id": "anthro-run", "agent": "claude-code"}})
    with client.messages.stream(model="@planner", max_tokens=100, messages=[{"role": "user", "content": "plan"}],
                                extra_body={"mlx:tags": {"run_id": "anthro-run"}}) as s:
        s.get_final_message()
    assert srv.get("/mlx/v1/runs/anthro-run").json()["calls"] == 3

    out = srv.cli("simulate", "--replay=1h", "--config=@agent-v3", "--run-id", "anthro-run", "--json")
    report = json.loads(out.stdout)
    assert report["runs_replayed"] == 1 and report["requests"] == 3
    replayed = srv.get(f"/mlx/v1/runs/anthro-run~r{report['replay_id']}").json()
    assert [s["status"] for s in replayed["steps"]] == ["ok", "ok", "ok"]
    assert all(s["original_call_id"] for s in replayed["steps"]) and replayed["steps"][2]["stream"] is True
    assert report["candidate"]["mean_cost_per_run"] < report["current"]["mean_cost_per_run"]
    assert report["quality"]["judged"] == 1 and report["quality"]["not_judged"] == 0  # messages answers compare too


def test_responses_calls_are_replayed_with_their_earlier_turns(make_server):
    """A /v1/responses chain replays as the chat calls it was routed as: the second call's replayed
    request holds the first turn (rebuilt from previous_response_id), not only its own input."""
    import openai

    srv = make_server(config_dir=ROOT / "configs" / "example")
    client = openai.OpenAI(base_url=srv.base_url, api_key="local", max_retries=0)
    tags = {"mlx:tags": {"run_id": "resp-run", "agent": "agents-sdk"}}
    first = client.responses.create(model="@executor", input="remember the word teal", extra_body=tags)
    client.responses.create(model="@executor", input="which word?", previous_response_id=first.id, extra_body=tags)
    assert srv.get("/mlx/v1/runs/resp-run").json()["calls"] == 2

    out = srv.cli("simulate", "--replay=1h", "--config=@agent-v3", "--run-id", "resp-run", "--json")
    report = json.loads(out.stdout)
    assert report["runs_replayed"] == 1 and report["requests"] == 2
    replayed = srv.get(f"/mlx/v1/runs/resp-run~r{report['replay_id']}").json()
    assert [s["status"] for s in replayed["steps"]] == ["ok", "ok"]
    second = srv.get(f"/mlx/v1/calls/{replayed['steps'][1]['call_id']}").json()
    texts = json.dumps(second["request"])
    assert "remember the word teal" in texts and "which word?" in texts
