"""The TUI against a real server: traffic from the openai SDK, the TUI reading the same database.

One server per module (mock provider, no latency); each test drives `App.run_test()` with Pilot.
"""
from __future__ import annotations

import asyncio
import io
import time
import uuid

import pytest

from modelux_local.tui.app import ModeluxApp
from modelux_local.tui.data import DataSource
from modelux_local.tui.widgets import format as fmt

from .conftest import client_for
from .server import ServerProcess, write_config

SERVER_TOML = """\
[routing]
default = "live"

[providers.mock]
kind = "mock"
[providers.mock.models.mock-large]
latency_ms = 30
[providers.mock.models.mock-small]
latency_ms = 30

[[budgets]]
match = { agent = "tui-test" }
max_cost_usd = 0.50

[[budgets]]
match = { agent = "tiny" }
max_cost_usd = 0.00001

[anomalies]
loop_repeats = 3

# one replayed run of 30 ms mock calls: its latency delta is noise (first calls pay for warm-up)
[promotion]
max_p95_latency_increase_pct = 100000
"""
LIVE_TOML = """\
[aliases.planner]
targets = [{ provider = "mock", model = "mock-large" }]
[aliases.executor]
targets = [{ provider = "mock", model = "mock-small" }]
"""
# the same routes under another name (a new content version): a replay that must pass the gate
CANDIDATE_TOML = """\
description = "same models, new file"
[aliases.planner]
targets = [{ provider = "mock", model = "mock-large" }]
[aliases.executor]
targets = [{ provider = "mock", model = "mock-small" }]
[aliases.embedder]
targets = [{ provider = "mock", model = "mock-embed" }]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("tui-live")
    cfg = write_config(base / "config", {"modelux.toml": SERVER_TOML, "live.toml": LIVE_TOML,
                                            "candidate.toml": CANDIDATE_TOML})
    s = ServerProcess(base / "data", cfg)
    s.start()
    yield s
    s.stop()


def agent_run(server: ServerProcess, calls: int = 3, agent: str = "tui-test") -> str:
    """A small agent run through the proxy: a plan, then executor steps."""
    run_id = f"run_{uuid.uuid4().hex[:10]}"
    client = client_for(server)
    for i in range(calls):
        client.chat.completions.create(
            model="@planner" if i == 0 else "@executor",
            messages=[{"role": "user", "content": f"step {i} of the task"}],
            extra_body={"mlx:tags": {"run_id": run_id, "agent": agent}})
    return run_id


async def until(predicate, timeout: float = 15.0, what: str = "the expected state") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"the TUI did not reach {what} within {timeout}s")
        await asyncio.sleep(0.05)


def rendered(renderable, width: int) -> str:
    """What a Rich renderable looks like at `width` columns, as plain text."""
    from rich.console import Console

    console = Console(width=width, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def app_for(server: ServerProcess) -> ModeluxApp:
    return ModeluxApp(DataSource(server.db_path, server.config_dir))


async def test_runs_table_shows_a_new_run_with_its_cost_and_enter_opens_its_tree(server):
    run_id = agent_run(server, calls=3)
    expected = server.get(f"/mlx/v1/runs/{run_id}").json()  # the server's own figures (after its writer barrier)
    app = app_for(server)
    async with app.run_test(size=(120, 30)) as pilot:
        runs = app.screen
        await until(lambda: run_id in runs.shown, what=f"a row for {run_id}")
        table = runs.query_one("#runs")
        assert str(table.get_cell(run_id, "cost")) == fmt.money(expected["cost_usd"])
        assert expected["cost_usd"] > 0
        assert str(table.get_cell(run_id, "calls")) == "3"
        # the budget of agent=tui-test is $0.50: the meter shows the share spent
        assert f"{expected['cost_usd'] / 0.5 * 100:3.0f}%" in table.get_cell(run_id, "budget").plain

        table.move_cursor(row=table.get_row_index(run_id))
        await pilot.press("enter")
        await until(lambda: len(getattr(app.screen, "nodes", ())) == 3, what="a tree with 3 calls")
        tree = app.screen.query_one("#trace")
        assert [c.data[1]["alias"] for c in tree.root.children] == ["@planner", "@executor", "@executor"]
        assert all(len(c.children) == 1 for c in tree.root.children)  # one attempt each
        await pilot.press("down")  # the first call: its detail loads the stored request and response
        await until(lambda: (app.screen.shown_call or {}).get("alias") == "@planner", what="the call's detail")
        assert app.screen.shown_call["request"]["messages"][0]["content"] == "step 0 of the task"
        await pilot.press("escape")
        assert app.screen is runs


async def test_rows_update_in_place_and_the_cursor_stays_on_its_run(server):
    first = agent_run(server, calls=1)
    app = app_for(server)
    async with app.run_test(size=(120, 30)) as pilot:
        runs = app.screen
        table = runs.query_one("#runs")
        await until(lambda: first in runs.shown, what=f"a row for {first}")
        await pilot.press("down", "up")  # the user picks the run (the newest, on top)
        assert runs.current_run_id() == first
        # a new run starts (sorted newest first, it lands above) while the first one gets a call more
        newer = await asyncio.to_thread(agent_run, server, 1)
        client = client_for(server)
        await asyncio.to_thread(lambda: client.chat.completions.create(
            model="@executor", messages=[{"role": "user", "content": "one more"}],
            extra_body={"mlx:tags": {"run_id": first, "agent": "tui-test"}}))
        await until(lambda: newer in runs.shown and str(table.get_cell(first, "calls")) == "2",
                    what="the new run and the updated count")
        assert runs.current_run_id() == first
        assert table.get_row_index(newer) < table.get_row_index(first)


async def test_filter_by_tag_and_mark(server):
    mine = agent_run(server, calls=1, agent="filter-me")
    other = agent_run(server, calls=1)
    app = app_for(server)
    async with app.run_test(size=(120, 30)) as pilot:
        runs = app.screen
        await until(lambda: mine in runs.shown and other in runs.shown, what="both runs")
        await pilot.press("slash", *"agent=filter-me", "enter")
        await until(lambda: list(runs.shown) == [mine], what="only the filtered run")
        await pilot.press("space")
        assert runs.marked == {mine}
        await pilot.press("escape")  # clears the filter
        await until(lambda: other in runs.shown, what="the filter cleared")


async def test_a_loop_and_a_budget_abort_are_flagged_as_they_happen(server):
    import openai

    app = app_for(server)
    async with app.run_test(size=(120, 30)) as pilot:
        runs = app.screen
        await until(lambda: runs._seen_flags is not None, what="the first load")
        client = client_for(server)
        loop_id, tiny_id = f"run_loop{uuid.uuid4().hex[:6]}", f"run_tiny{uuid.uuid4().hex[:6]}"

        def traffic():
            for _ in range(3):  # the same request three times: [anomalies] loop_repeats = 3
                client.chat.completions.create(model="@executor", messages=[{"role": "user", "content": "again"}],
                                               extra_body={"mlx:tags": {"run_id": loop_id}})
            refused = 0
            for i in range(3):  # $0.00001 allows at most one small call
                try:
                    client.chat.completions.create(model="@planner", messages=[{"role": "user", "content": f"{i}"}],
                                                   extra_body={"mlx:tags": {"run_id": tiny_id, "agent": "tiny"}})
                except openai.APIStatusError as e:
                    assert e.status_code == 402
                    refused += 1
            return refused

        assert await asyncio.to_thread(traffic) >= 1
        await until(lambda: loop_id in runs.runs and "loop" in runs.runs[loop_id].anomalies, what="the loop flag")
        await until(lambda: tiny_id in runs.runs and runs.runs[tiny_id].status == "aborted", what="the abort")
        await pilot.pause()
        table = runs.query_one("#runs")
        assert table.get_cell(loop_id, "flags").plain == "loop"
        assert table.get_cell(tiny_id, "flags").plain == "max_cost_usd=1e-05"  # the limit it hit
        assert str(table.get_cell(tiny_id, "status")) == "aborted"
        toasts = [str(n.message) for n in app._notifications]
        assert f"{loop_id}: loop" in toasts and any(t.startswith(f"{tiny_id}: aborted") for t in toasts), toasts


async def test_a_refused_config_edit_appears_on_the_configs_screen_with_file_and_line(server):
    path = server.config_dir / "live.toml"
    good = path.read_text()
    app = app_for(server)
    try:
        async with app.run_test(size=(120, 30)) as pilot:
            await pilot.press("c")
            screen = app.screen
            await until(lambda: getattr(screen, "state", None) is not None, what="the configs screen")
            assert screen.state.reload.ok and [c.name for c in screen.state.configs] == ["candidate", "live"]
            path.write_text(good + '\n[aliases.broken]\ntargets = [{ provider = "mock", model = "x" }]\nretriez = 3\n')
            await until(lambda: not screen.state.reload.ok, what="the refused edit")
            r = screen.state.reload
            assert r.file == str(path) and r.line == 8 and "unknown key 'retriez'" in r.message
            # the server refused it too and keeps serving the last good config
            await until(lambda: server.get("/mlx/v1/config").json()["reload"]["ok"] is False, what="server refusal")
            assert [c.name for c in screen.state.configs] == ["candidate", "live"]  # the last good set stays on screen
    finally:
        path.write_text(good)


async def test_r_on_a_marked_run_replays_it_and_shows_the_diff_table_then_promotes(server):
    run_id = agent_run(server, calls=3)
    app = app_for(server)
    async with app.run_test(size=(120, 34)) as pilot:
        runs = app.screen
        table = runs.query_one("#runs")
        await until(lambda: run_id in runs.shown, what=f"a row for {run_id}")
        table.move_cursor(row=table.get_row_index(run_id))
        await pilot.press("space", "r")
        await until(lambda: app.screen.query("#choices"), what="the candidate chooser")
        assert app.screen.options == ["candidate", "live"]
        await pilot.press("enter")  # @candidate
        replay = app.screen
        await until(lambda: getattr(replay, "report", None) is not None, timeout=60, what="the replay report")
        report = replay.report
        assert report["runs_replayed"] == 1 and report["requests"] == 3 and report["candidate_config"] == "@candidate"
        diff = replay.query_one("#diff")
        assert [str(diff.get_row_at(i)[0]) for i in range(diff.row_count)] == [
            "mean cost/run", "p50 latency", "p95 latency", "error rate", "agent success"]
        assert str(diff.get_cell("mean cost/run", "CURRENT")) == fmt.money(report["current"]["mean_cost_per_run"])
        await until(lambda: replay.query_one("#replay-runs").row_count == 1, what="the per-run rows")

        await pilot.press("d")  # the per-step comparison of the replayed run
        await until(lambda: getattr(app.screen, "title_text", "").startswith("per-step diff"), what="the step diff")
        text = rendered(app.screen.body, 80)
        assert run_id in text and "@" not in app.screen.title_text
        # one row per call, both sides filled in (3 calls, each replayed on the same models)
        assert [line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│") and
                line.split("│")[1].strip()] == ["1", "2", "3"]
        assert text.count("mock/mock-large ✓") == 2 and "(not replayed)" not in text
        await pilot.press("escape")

        await pilot.press("p")  # promote, after a confirmation
        await until(lambda: app.screen.query("#yes"), what="the confirmation")
        await pilot.press("y")
        await until(lambda: any("now serves @candidate" in str(n.message) or n.title == "refused"
                                for n in app._notifications), what="the promotion's outcome")
        outcome = [n for n in app._notifications][-1]
        assert outcome.title == "done", outcome.message
    import json

    history = json.loads(server.cli("config", "history", "--json").stdout)["history"]
    assert [(h["action"], h["candidate"], h["replay_id"], h["reason"]) for h in history] == [
        ("promote", "@candidate", report["replay_id"], "promoted from the TUI")]
