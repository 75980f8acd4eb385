"""Every run against its agent's history, through a real server: `expected` in the run detail and
`runs --json`, checked against percentiles computed here by hand from the history runs' own
summaries; then a looping agent, where the run detail's ratio, `runs --sort over_usual`, the TUI's
meter and the `anomaly.cost` webhook must all tell the same story."""
from __future__ import annotations

import json
import math
import time

import pytest

from modelux_local.tui.data import DataSource
from modelux_local.tui.widgets import format as fmt

from .conftest import client_for
from .fakes.webhook_receiver import WebhookReceiver
from .server import ServerProcess, write_config
from .test_readme_examples import _console, shape

MODELUX = """
[routing]
default = "default"

[providers.mock]
kind = "mock"

[anomalies]
cost_min_history = 6
cost_factor = 2.0

[runs]
idle_timeout_s = 0.6

[[webhooks]]
url = "{url}"
events = ["anomaly.cost", "run.completed"]
"""
ROUTING = """
[aliases.executor]
targets = [{ provider = "mock", model = "mock-small" }]

[aliases.planner]
targets = [{ provider = "mock", model = "mock-large" }]
"""
HISTORY_CALLS = [1, 2, 1, 1, 2, 1]   # p50 1 call, p90 2, p95 2: a run of 3 calls is past p95 and 2 x p50


def hand_percentile(values: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks, written out."""
    v = sorted(values)
    pos = (len(v) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("expected")
    receiver = WebhookReceiver().start()
    cdir = write_config(d / "config", {"modelux.toml": MODELUX.format(url=receiver.url), "default.toml": ROUTING})
    server = ServerProcess(d / "data", cdir).start()
    client = client_for(server)
    for i, n in enumerate(HISTORY_CALLS):
        for k in range(n):
            _ask(client, f"hist-{i}", f"usual task {i}, step {k}" + " with detail" * i)
    receiver.wait_for(lambda r: sum(e["run"]["run_id"].startswith("hist-") for e in r.events("run.completed"))
                      == len(HISTORY_CALLS), timeout=15)
    # from now on runs stay running (the hot-reloaded idle timeout), as an agent's runs do while it works
    before = server.get("/mlx/v1/config").json()["reload"]["at"]
    (cdir / "modelux.toml").write_text(MODELUX.format(url=receiver.url).replace("idle_timeout_s = 0.6",
                                                                                "idle_timeout_s = 300"))
    deadline = time.monotonic() + 15
    while server.get("/mlx/v1/config").json()["reload"]["at"] == before:
        assert time.monotonic() < deadline, "the config edit was not reloaded"
        time.sleep(0.1)
    time.sleep(1.5)  # the anomaly watcher's history refresh follows completions (at most once a second)
    yield server, receiver, client
    server.stop()
    receiver.stop()


def _ask(client, run_id: str, text: str, agent: str = "steady"):
    return client.chat.completions.create(model="@executor", messages=[{"role": "user", "content": text}],
                                          extra_body={"mlx:tags": {"run_id": run_id, "agent": agent}})


def test_expected_is_the_agents_percentiles_computed_by_hand(env):
    server, _, client = env
    history = [server.get(f"/mlx/v1/runs/hist-{i}").json() for i in range(len(HISTORY_CALLS))]
    assert [h["calls"] for h in history] == HISTORY_CALLS and all(h["status"] == "completed" for h in history)
    _ask(client, "probe-1", "a first step")
    e = server.get("/mlx/v1/runs/probe-1").json()["expected"]
    costs, calls = [h["cost_usd"] for h in history], [h["calls"] for h in history]
    durations = [h["duration_ms"] for h in history]
    assert e["agent"] == "steady" and e["history_runs"] == 6 and e["judged"]
    for q in (50, 90):
        assert e["cost_usd"][f"p{q}"] == pytest.approx(hand_percentile(costs, q), rel=1e-6, abs=1e-9)
        assert e["calls"][f"p{q}"] == pytest.approx(hand_percentile(calls, q))
        assert e["duration_ms"][f"p{q}"] == pytest.approx(hand_percentile(durations, q), abs=0.2)
    run = server.get("/mlx/v1/runs/probe-1").json()
    ratio = max(run["cost_usd"] / hand_percentile(costs, 90), 1 / hand_percentile(calls, 90))
    assert e["over_usual"] == pytest.approx(ratio, abs=1e-3)
    listed = {r["run_id"]: r for r in server.get("/mlx/v1/runs", params={"tag": "agent:steady"}).json()["runs"]}
    assert listed["probe-1"]["expected"] == e  # the list and the detail say the same
    other = server.get("/mlx/v1/runs/hist-0").json()
    assert other["expected"]["agent"] == "steady"


def test_a_looping_run_the_ratio_the_meter_and_anomaly_cost_agree(env):
    server, receiver, client = env
    _ask(client, "calm-1", "one quiet step")
    fired = None
    for k in range(6):
        _ask(client, "loop-1", f"try again, attempt {k}")
        run = server.get("/mlx/v1/runs/loop-1").json()
        if "cost" in run["anomalies"]:
            fired = run
            break
    assert fired is not None, "no cost anomaly for a run far past its agent's history"
    hook = receiver.wait_for(lambda r: [e for e in r.events("anomaly.cost") if e["run"]["run_id"] == "loop-1"],
                             timeout=5)[0]
    history = [server.get(f"/mlx/v1/runs/hist-{i}").json() for i in range(len(HISTORY_CALLS))]
    costs, calls = [h["cost_usd"] for h in history], [h["calls"] for h in history]
    d = hook["detail"]
    for what, values, now in (("cost", costs, fired["cost_usd"]), ("calls", calls, fired["calls"])):
        past = now > hand_percentile(values, 95) + 1e-12 and now > 2.0 * hand_percentile(values, 50) + 1e-12
        assert past == (what in d["over"]), (what, now, values)  # fired for what is past p95 and 2 x the median
    by_cost, by_calls = fired["cost_usd"] / hand_percentile(costs, 90), fired["calls"] / hand_percentile(calls, 90)
    e = fired["expected"]
    assert e["over_usual"] == pytest.approx(max(by_cost, by_calls), abs=1e-3) and e["over_usual"] > 1  # past p95: past p90
    assert e["over_usual_by"] == ("cost" if by_cost > by_calls else "calls")
    assert d["expected"] == e  # what fired is what the run detail shows
    assert d["cost_factor"] == 2.0 and d["history_runs"] == 6
    ratio, by = e["over_usual"], e["over_usual_by"]

    out = server.cli("runs", "--sort", "over_usual", "--json")
    runs = json.loads(out.stdout)["runs"]
    assert [r["run_id"] for r in runs][:2] == ["loop-1", "calm-1"]  # running runs, furthest past usual first
    assert all(r["status"] == "running" for r in runs)
    assert runs[0]["expected"]["over_usual"] == e["over_usual"]
    (cmd,), (shown,) = _console("runs-over-usual")  # README's example, run here where a loop is under way
    table = server.cli(*cmd.split()[1:]).stdout.splitlines()
    assert table[0].split() == shown[0].split()
    assert table[1].startswith(f"x{ratio:.2f} {by}") and table[1].split()[2:5] == ["running", "loop-1", "steady"]
    assert table[2].split()[2:5] == ["running", "calm-1", "steady"]
    assert len(shape(table[1])) == len(shape(shown[1]))  # the README's row has every column

    data = DataSource(server.db_path, server.config_dir)
    row = next(r for r in data.runs() if r.run_id == "loop-1")
    assert row.usual == pytest.approx(e["over_usual"], abs=1e-3) and row.budget_use[1] == "usual"
    assert fmt.meter(row.budget_use[0], limit="usual", running=True).plain.endswith(f"x{ratio:.1f} of usual")

    trace = server.cli("trace", "loop-1").stdout
    assert "usual for steady (6 runs, 30d)" in trace and f"this run: x{ratio:.2f} {by} of p90" in trace


def test_bad_anomaly_thresholds_are_refused_with_the_key_named(tmp_path):
    from modelux_local.config.loader import load_dir
    from modelux_local.errors import ConfigError

    for bad, key in (("cost_factor = 0.5", "anomalies.cost_factor"), ("cost_factor = nan", "anomalies.cost_factor"),
                     ("cost_min_history = 0", "anomalies.cost_min_history")):
        cdir = write_config(tmp_path / key.replace(".", "_") / bad[:6], {"modelux.toml": f"[anomalies]\n{bad}\n"})
        with pytest.raises(ConfigError) as ei:
            load_dir(cdir)
        assert key in ei.value.message


def test_where_the_money_went_by_alias_model_and_repeated_prompt(env):
    server, _, client = env
    same = [{"role": "system", "content": "You are a tool-using agent with a long system prompt. " * 8},
            {"role": "user", "content": "Check the inventory for item 42."}]
    for _ in range(3):  # an agent resending its whole prompt: calls 2 and 3 repeat all of call 1's
        client.chat.completions.create(model="@executor", messages=same,
                                       extra_body={"mlx:tags": {"run_id": "spend-1", "agent": "spender"}})
    client.chat.completions.create(model="@planner", messages=[{"role": "user", "content": "Plan the next step."}],
                                   extra_body={"mlx:tags": {"run_id": "spend-1", "agent": "spender"}})
    steps = server.get("/mlx/v1/runs/spend-1").json()["steps"]
    tin = [s["input_tokens"] for s in steps]
    b = DataSource(server.db_path, server.config_dir).run_breakdown("spend-1")
    by_alias = {line.name: line for line in b.by_alias}
    assert by_alias["@executor"].calls == 3 and by_alias["@planner"].calls == 1
    assert by_alias["@executor"].input_tokens == sum(tin[:3])
    assert {line.name: line.calls for line in b.by_model} == {"mock/mock-large": 1, "mock/mock-small": 3}
    assert b.repeats.input_tokens == sum(tin) and b.repeats.repeated_tokens == tin[1] + tin[2]
    prices = server.get(f"/mlx/v1/calls/{steps[1]['call_id']}").json()["decision"]["prices"]
    rate, cached = prices["input_per_mtok"], prices["cached_input_per_mtok"]
    assert b.repeats.saving_max_nusd == round(tin[1] * rate * 1000) + round(tin[2] * rate * 1000)
    assert b.repeats.saving_nusd == round(tin[1] * (rate - cached) * 1000) + round(tin[2] * (rate - cached) * 1000)
    trace = server.cli("trace", "spend-1").stdout
    share = (tin[1] + tin[2]) / sum(tin)
    assert f"repeated prompt: {share:.0%} of input tokens" in trace and "by alias: @planner $" in trace

    doc = json.loads(server.cli("analytics", "--group-by", "agent", "--by-model", "--json").stdout)
    spender = next(g for g in doc["groups"] if g["value"] == "spender")
    models = {m["name"]: m for m in spender["by_model"]}
    assert models["mock/mock-small"]["calls"] == 3 and models["mock/mock-large"]["calls"] == 1
    assert sum(m["input_tokens"] for m in models.values()) == sum(tin) == spender["input_tokens"]
    assert sum(m["cost_usd"] for m in models.values()) == pytest.approx(spender["cost_usd"])
    api = server.get("/mlx/v1/analytics", params={"group_by": "agent", "by_model": "1"}).json()
    assert next(g for g in api["groups"] if g["value"] == "spender")["by_model"] == spender["by_model"]


def test_a_run_without_an_agent_tag_is_compared_with_runs_of_its_first_alias(tmp_path):
    """Untagged runs are judged against the untagged runs that started with the same alias."""
    from modelux_local.config.loader import load_dir
    from modelux_local.pricing import PriceBook
    from modelux_local.storage.db import open_db
    from modelux_local.storage.history import agent_history, run_agents
    from modelux_local.storage.record_rows import write_calls

    from .test_tui_support import NOW, _call, write_configs

    cfg = write_configs(tmp_path / "cfg")
    cs = load_dir(cfg)
    kw = {"cs": cs, "prices": PriceBook(cs.server.prices, cs.server.providers)}
    recs = []
    for j, n_calls in enumerate([1, 2, 3, 4]):
        for n in range(1, n_calls + 1):  # the first call @planner, the rest @executor
            rec = _call(n, f"run_anon{j:02d}", "-", NOW - 3600 + j * 60 + n, "@planner" if n == 1 else "@executor",
                        "mock-small", 100, 10, **kw)
            rec.tags = {"run_id": rec.run_id}
            recs.append(rec)
    tagged = _call(1, "run_tagd99", "tagged", NOW - 10, "@planner", "mock-small", 100, 10, **kw)
    conn = open_db(tmp_path / "modelux.db")
    with conn:
        write_calls(conn, [*recs, tagged])
        conn.execute("UPDATE runs SET status = 'completed' WHERE run_id LIKE 'run_anon%'")  # as the lifecycle does
    assert run_agents(conn, ["run_anon00", "run_anon03", "run_tagd99"]) == {
        "run_anon00": "@planner", "run_anon03": "@planner", "run_tagd99": "tagged"}
    h = agent_history(conn, agents=["@planner"], now=NOW)["@planner"]
    assert h.runs == 4 and h.calls_p50 == hand_percentile([1, 2, 3, 4], 50) and h.calls_p90 == hand_percentile([1, 2, 3, 4], 90)
    assert set(agent_history(conn, now=NOW)) == {"@planner"}  # the tagged run is running: no history yet
    conn.close()
