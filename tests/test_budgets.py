"""Budgets through the real server: call caps, cost caps under concurrency, streams cut at the cap."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import apsw
import openai
import pytest

from .conftest import client_for
from .server import ServerProcess, write_config

MODELUX = """
[routing]
default = "default"

[providers.mock]
kind = "mock"

[providers.mock.models.mock-large]   # $3 / $15 per million tokens
latency_ms = 300
ttft_ms = 20

[[budgets]]
match = { agent = "three-calls" }
max_calls = 3

[[budgets]]
match = { agent = "cost-capped" }
max_cost_usd = 0.005

[[budgets]]
match = { agent = "stream-capped" }
max_cost_usd = 0.0003

[[budgets]]
match = { agent = "short-lived" }
max_duration_s = 0.8

[[budgets]]
match = { agent = "token-capped" }
max_tokens = 400

[[budgets]]
match = { agent = "reserving" }
max_calls = 100

[[budgets]]
match = { agent = "in-flight" }
max_cost_usd = 0.01

[providers.mock.models.mock-slow]
latency_ms = 2000

[prices."mock/mock-slow"]
input = 3.0
output = 15.0
"""
ROUTING = ('[aliases.planner]\ntargets = [{ provider = "mock", model = "mock-large" }]\n'
           '[aliases.slow]\ntargets = [{ provider = "mock", model = "mock-slow" }]\n')


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("budgets")
    s = ServerProcess(d / "data", write_config(d / "config", {"modelux.toml": MODELUX, "default.toml": ROUTING}))
    s.start()
    yield s
    s.stop()


def _ask(client, run_id: str, agent: str, content: str, **kw):
    return client.chat.completions.create(model="@planner", messages=[{"role": "user", "content": content}],
                                          extra_body={"mlx:tags": {"run_id": run_id, "agent": agent}}, **kw)


def _db(server) -> apsw.Connection:
    return apsw.Connection(str(server.db_path), flags=apsw.SQLITE_OPEN_READONLY)


def test_max_calls_refuses_the_fourth_call_and_every_later_one(server):
    client = client_for(server)
    for i in range(3):
        _ask(client, "b-calls", "three-calls", f"step {i}")
    for _ in range(2):
        with pytest.raises(openai.APIStatusError) as ei:
            _ask(client, "b-calls", "three-calls", "step 4")
        assert ei.value.status_code == 402
        assert ei.value.body["code"] == "run_budget_exceeded"
        assert "max_calls = 3" in ei.value.body["message"]
    run = server.get("/mlx/v1/runs/b-calls").json()
    assert run["status"] == "aborted" and "max_calls = 3" in run["abort_reason"]
    ok = [s for s in run["steps"] if s["status"] == "ok"]
    assert len(ok) == 3
    trace = ok[0]["decision"]["guards"][0]
    assert trace["guard"] == "budget" and trace["result"] == "allowed" and trace["budgets"] == [{"max_calls": 3}]
    refused = run["steps"][3]["decision"]["guards"][0]
    assert refused["result"] == "refused" and refused["run"]["calls"] == 3


def test_twenty_concurrent_calls_overspend_by_at_most_one_reservation(server):
    client = client_for(server)
    cap_nusd = 5_000_000  # max_cost_usd = 0.005

    def one(i: int):
        try:
            _ask(client, "b-cost", "cost-capped", f"concurrent call #{i}: summarise the quarterly numbers",
                 max_tokens=60)
            return 200
        except openai.APIStatusError as e:
            assert e.body["code"] == "run_budget_exceeded", e.body
            return e.status_code

    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(one, range(20)))
    assert statuses.count(200) >= 1 and statuses.count(402) >= 1, statuses
    server.get("/mlx/v1/runs/b-cost")  # waits for the writer
    with _db(server) as db:
        spent = db.execute("SELECT sum(cost_nusd) FROM calls WHERE run_id = 'b-cost' AND status = 'ok'").fetchone()[0]
        decisions = [r[0] for r in db.execute("SELECT decision FROM calls WHERE run_id = 'b-cost' AND status = 'ok'")]
    import json
    reservations = [json.loads(d)["guards"][0]["reservation"]["cost_usd"] for d in decisions]
    one_reservation = max(reservations) * 1e9
    # without the guard all 20 would pass (~$0.019); with it, the cap is reached but passed by < one reservation
    assert spent >= cap_nusd, (spent, statuses)
    assert spent - cap_nusd <= one_reservation, (spent, one_reservation)
    # the run is now over its cap for good: the next call is refused at once
    with pytest.raises(openai.APIStatusError) as ei:
        _ask(client, "b-cost", "cost-capped", "one more")
    assert ei.value.status_code == 402 and "max_cost_usd = 0.005" in ei.value.body["message"]
    assert server.get("/mlx/v1/runs/b-cost").json()["status"] == "aborted"


def test_a_stream_is_cut_when_it_crosses_the_cap(server):
    client = client_for(server)
    prompt = "Tell me about streaming budgets in detail"
    full = _ask(client, "b-stream-reference", "uncapped", prompt).choices[0].message.content
    got = ""
    with pytest.raises(openai.APIError) as ei:
        for chunk in _ask(client, "b-stream", "stream-capped", prompt, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                got += chunk.choices[0].delta.content
    assert ei.value.body["code"] == "run_budget_exceeded", ei.value.body
    assert "while streaming" in ei.value.body["message"]
    assert got and len(got) < len(full) and full.startswith(got)
    with pytest.raises(openai.APIStatusError) as ei:
        _ask(client, "b-stream", "stream-capped", "again")
    assert ei.value.status_code == 402 and ei.value.body["code"] == "run_budget_exceeded"
    run = server.get("/mlx/v1/runs/b-stream").json()
    cut = run["steps"][0]
    assert cut["status"] == "aborted" and cut["stream"] is True
    assert cut["decision"]["usage_estimated"] is True and cut["cost_usd"] > 0.0003
    assert run["status"] == "aborted"


def test_max_duration_counts_from_the_first_call(server):
    client = client_for(server)
    _ask(client, "b-duration", "short-lived", "first")
    time.sleep(0.9)
    with pytest.raises(openai.APIStatusError) as ei:
        _ask(client, "b-duration", "short-lived", "too late")
    assert ei.value.status_code == 402 and "max_duration_s = 0.8" in ei.value.body["message"]


def test_runs_without_a_matching_budget_are_not_limited(server):
    client = client_for(server)
    for i in range(5):
        _ask(client, "b-free", "uncapped", f"step {i}")
    run = server.get("/mlx/v1/runs/b-free").json()
    assert run["calls"] == 5 and run["status"] == "running"
    assert "guards" not in run["steps"][0]["decision"]


def test_max_tokens_refuses_the_first_call_after_the_run_reaches_it(server):
    client = client_for(server)
    used = []  # input + output tokens of each admitted call, as the SDK reports them
    for i in range(20):
        try:
            r = _ask(client, "b-tokens", "token-capped", f"step {i}: " + "tide table " * 50, max_tokens=50)
        except openai.APIStatusError as e:
            assert e.status_code == 402 and "max_tokens = 400" in e.body["message"], e.body
            break
        used.append(r.usage.prompt_tokens + r.usage.completion_tokens)
    else:
        raise AssertionError(f"never refused: {used}")
    assert sum(used) >= 400 > sum(used[:-1]), used  # refused exactly once the cap was reached
    assert server.get("/mlx/v1/runs/b-tokens").json()["status"] == "aborted"


def test_a_call_without_max_tokens_reserves_4096_output_tokens(server):
    client = client_for(server)
    _ask(client, "b-reserve", "reserving", "no limit set")
    _ask(client, "b-reserve", "reserving", "a limit set", max_tokens=77)
    _ask(client, "b-reserve", "reserving", "the newer name", max_completion_tokens=55)
    steps = server.get("/mlx/v1/runs/b-reserve").json()["steps"]
    res = [s["decision"]["guards"][0]["reservation"] for s in steps]
    assert [r["max_output_tokens"] for r in res] == [4096, 77, 55]
    assert all(r["tokens"] == r["prompt_tokens_estimate"] + r["max_output_tokens"] for r in res)
    # priced at mock-large's $15 per million output tokens (plus $3 per million for the prompt estimate)
    assert res[0]["cost_usd"] == pytest.approx((4096 * 15 + res[0]["prompt_tokens_estimate"] * 3) / 1e6)


def test_a_refusal_for_calls_in_flight_does_not_abort_the_run(server):
    """A call that reserves more than the cap is admitted alone; a second one while it runs is
    refused (402) but the run is not aborted: once the first settles well under the cap, calls go on."""
    client = client_for(server)
    ask = lambda content: client.chat.completions.create(  # noqa: E731
        model="@slow", messages=[{"role": "user", "content": content}], max_tokens=1000,
        extra_body={"mlx:tags": {"run_id": "b-inflight", "agent": "in-flight"}})
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(ask, "the long one")  # reserves 1000 x $15/M = $0.015 > $0.01 for 2 s
        time.sleep(0.7)
        assert not first.done()
        with pytest.raises(openai.APIStatusError) as ei:
            ask("while it runs")
        first.result()
    assert ei.value.status_code == 402 and ei.value.body["code"] == "run_budget_exceeded"
    assert "reserved by 1 calls in flight" in ei.value.body["message"]
    assert server.get("/mlx/v1/runs/b-inflight").json()["status"] == "running"
    ask("after it settled")
    run = server.get("/mlx/v1/runs/b-inflight").json()
    assert run["status"] == "running" and [s["status"] for s in run["steps"]] == ["ok", "aborted", "ok"]


def test_the_readme_examples_of_this_section_are_valid_config(tmp_path):
    """The TOML blocks of README's budgets section load as a config (with a provider and a route added)."""
    import re
    from pathlib import Path

    from modelux_local.config.loader import load_dir

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("<!-- section:budgets -->")[1].split("<!-- /section:budgets -->")[0]
    blocks = re.findall(r"```toml\n(.*?)```", section, re.S)
    assert len(blocks) == 3
    body = "\n".join(b.replace("# modelux.toml\n", "") for b in blocks)
    write_config(tmp_path, {"modelux.toml": '[routing]\ndefault = "default"\n[providers.mock]\nkind = "mock"\n' + body,
                            "default.toml": ROUTING})
    server = load_dir(tmp_path).server
    assert server.budgets[0].max_cost_usd == 0.5 and server.budgets[0].warn_at == 0.8
    assert server.anomalies.loop_repeats == 5 and server.webhooks[0].secret_env == "MODELUX_WEBHOOK_SECRET"


def _until_refused(client, run_id: str, agent: str, limit: int = 10) -> int:
    """Calls until one is refused with 402; returns how many were admitted."""
    for n in range(limit):
        try:
            _ask(client, run_id, agent, "the same question")
        except openai.APIStatusError as e:
            assert e.status_code == 402 and e.body["code"] == "run_budget_exceeded", e.body
            return n
    return limit


def test_a_budget_added_by_a_config_reload_applies_from_the_next_call(make_server):
    srv = make_server({"modelux.toml": MODELUX, "default.toml": ROUTING}, name="reload-budget")
    client = client_for(srv)
    assert _until_refused(client, "late-0", "late", limit=3) == 3  # no budget matches yet
    (srv.config_dir / "modelux.toml").write_text(MODELUX + '\n[[budgets]]\nmatch = { agent = "late" }\nmax_calls = 2\n')
    deadline, n = time.monotonic() + 15, 0
    while _until_refused(client, f"late-probe-{n}", "late", limit=3) == 3:  # the watcher picks the edit up
        assert time.monotonic() < deadline, "the added budget never applied"
        n += 1
        time.sleep(0.2)
    assert _until_refused(client, "late-1", "late") == 2
    assert srv.get("/mlx/v1/runs/late-1").json()["abort_reason"].endswith("max_calls = 2 (2 calls made)")


def test_spend_survives_a_restart(make_server):
    """Two calls spend 2/2.5 of the cap; after a restart the third is admitted and the fourth refused
    (counting from zero after the restart would admit it: 1 call < 2.5)."""
    srv = make_server({"modelux.toml": MODELUX, "default.toml": ROUTING}, name="restart-budget")
    client = client_for(srv)
    _ask(client, "persist-ref", "reference", "the same question")
    one = srv.get("/mlx/v1/runs/persist-ref").json()["cost_usd"]
    cap = one * 2.5
    (srv.config_dir / "modelux.toml").write_text(
        MODELUX + f'\n[[budgets]]\nmatch = {{ agent = "persist" }}\nmax_cost_usd = {cap!r}\n')
    deadline, n = time.monotonic() + 15, 0
    while _until_refused(client, f"persist-probe-{n}", "persist", limit=4) == 4:  # wait for the reload
        assert time.monotonic() < deadline, "the budget never applied"
        n += 1
    for _ in range(2):
        _ask(client, "persist-run", "persist", "the same question")
    assert srv.get("/mlx/v1/runs/persist-run").json()["cost_usd"] == pytest.approx(2 * one)
    srv.stop()
    srv.start()
    time.sleep(0.5)  # the budget state of recent runs is reloaded in the background at start
    assert _until_refused(client, "persist-run", "persist") == 1
    run = srv.get("/mlx/v1/runs/persist-run").json()
    assert run["status"] == "aborted" and "max_cost_usd" in run["abort_reason"]
    assert [s["status"] for s in run["steps"]] == ["ok", "ok", "ok", "aborted"]
