"""Pilot tests of what a user of the TUI hit at 80x24 and 160x48 (issue 6's walkthrough), over the
deterministic demo database of test_tui_support, with rows written while the app is open."""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from modelux_local.config.loader import load_dir
from modelux_local.pricing import PriceBook
from modelux_local.storage.db import open_db
from modelux_local.storage.record_rows import write_calls
from modelux_local.tui.app import ModeluxApp
from modelux_local.tui.data import DataSource, RunRow
from modelux_local.tui.widgets import format as fmt

from .test_tui_support import NOW, _call, build_db, write_configs


@pytest.fixture
def demo(tmp_path):
    cfg = write_configs(tmp_path / "cfg")
    build_db(tmp_path, cfg)
    return tmp_path, cfg


def app_on(data_dir: Path, cfg: Path, **kw) -> ModeluxApp:
    return ModeluxApp(DataSource(data_dir / "modelux.db", cfg, clock=lambda: NOW), **kw)


def add_calls(data_dir: Path, cfg: Path, *calls: tuple) -> None:
    """Writes calls the way the server does: (n, run_id, agent, seconds before NOW)."""
    cs = load_dir(cfg)
    prices = PriceBook(cs.server.prices, cs.server.providers)
    recs = [_call(n, run_id, agent, NOW - ago, "@executor", "mock-small", 100, 20, cs=cs, prices=prices)
            for n, run_id, agent, ago in calls]
    conn = open_db(data_dir / "modelux.db")
    with conn:
        write_calls(conn, recs)
    conn.close()


async def until(predicate, timeout: float = 10.0, what: str = "the expected state") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"the TUI did not reach {what} within {timeout}s")
        await asyncio.sleep(0.05)


def loaded(app) -> bool:
    return bool(app.screen.query("#runs")) and len(app.screen.shown) == 4


async def test_at_80_columns_every_column_fits_and_at_160_all_of_them_show(demo):
    for (w, h), narrow in (((80, 24), True), ((160, 48), False)):
        app = app_on(*demo)
        async with app.run_test(size=(w, h)):
            await until(lambda: loaded(app), what="4 rows")
            table = app.screen.query_one("#runs")
            assert app.screen.narrow is narrow
            # nothing scrolls sideways out of sight (before: the run id scrolled away with `end`)
            assert table.virtual_size.width <= table.size.width, (w, table.virtual_size, table.size)
            assert str(table.get_cell("run_abort004", "status")) == (" ✗" if narrow else "aborted")
            # the abort's flag names the limit, short; the status column already says "aborted"
            assert table.get_cell("run_abort004", "flags").plain == "max_cost_usd"
            if not narrow:
                assert {"tokens", "errors", "duration", "age"} <= set(app.screen.columns)


async def test_a_run_flagged_after_it_was_shown_turns_yellow_and_its_flag_is_not_cut(demo):
    data_dir, cfg = demo
    app = app_on(data_dir, cfg)
    async with app.run_test(size=(80, 24)):
        await until(lambda: loaded(app), what="4 rows")
        table = app.screen.query_one("#runs")
        assert str(table.get_cell("run_summary002", "run").style) == ""
        conn = open_db(data_dir / "modelux.db")
        with conn:  # what the anomaly hook writes when a loop is spotted
            conn.execute("UPDATE runs SET anomalies = ? WHERE run_id = 'run_summary002'",
                         (json.dumps(["loop", "cost_outlier"]),))
        conn.close()
        await until(lambda: "loop" in app.screen.runs["run_summary002"].anomalies, what="the new flag")
        await asyncio.sleep(0.1)
        # Text equality ignores the base style: the id stayed uncoloured before the fix
        assert str(table.get_cell("run_summary002", "run").style) == "bold yellow"
        flags = table.get_cell("run_summary002", "flags").plain
        assert flags == "loop, cost_outlier"
        assert table.columns["flags"].content_width >= len(flags)  # the column grew (it kept the header's 5)


async def test_tab_moves_to_the_detail_pane_which_then_scrolls(demo):
    app = app_on(*demo)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(lambda: loaded(app), what="4 rows")
        table = app.screen.query_one("#runs")
        table.move_cursor(row=table.get_row_index("run_research01"))
        await pilot.press("enter")
        await until(lambda: len(getattr(app.screen, "nodes", ())) == 3, what="the tree")
        await pilot.press("down")
        await until(lambda: (app.screen.shown_call or {}).get("call_id") == "call_ch01_01", what="the call")
        await pilot.press("tab")
        scroll = app.screen.query_one("#detail-scroll")
        assert app.focused is scroll  # the screen-level focus_next did not exist: tab did nothing
        assert scroll.max_scroll_y > 0
        await pilot.press("pagedown")
        assert scroll.scroll_y > 0
        await pilot.press("shift+tab")
        assert app.focused is app.screen.query_one("#trace")


async def test_the_cursor_follows_the_newest_run_until_the_user_picks_one(demo):
    data_dir, cfg = demo
    app = app_on(data_dir, cfg)
    async with app.run_test(size=(100, 24)) as pilot:
        await until(lambda: loaded(app), what="4 rows")
        screen = app.screen
        add_calls(data_dir, cfg, (1, "run_new00005", "research-v2", 5))
        await until(lambda: "run_new00005" in screen.shown, what="the new run")
        assert screen.current_run_id() == "run_new00005"  # on top, under the cursor
        await pilot.press("down")  # the user picks run_abort004
        picked = screen.current_run_id()
        add_calls(data_dir, cfg, (1, "run_new00006", "research-v2", 2))
        await until(lambda: "run_new00006" in screen.shown, what="the second new run")
        assert screen.current_run_id() == picked


async def test_an_empty_database_says_where_to_point_the_client(tmp_path):
    app = ModeluxApp(DataSource(tmp_path / "modelux.db", None), subtitle="serving http://127.0.0.1:4999/v1 · log x")
    async with app.run_test(size=(80, 24)):
        box = app.screen.query_one("#runs-empty")
        await until(lambda: box.display, what="the empty state")
        text = str(box.render())
        assert "No runs yet" in text and 'base_url="http://127.0.0.1:4999/v1"' in text and "mlx:tags" in text


async def test_a_refused_config_edit_is_flagged_on_the_runs_screen(demo):
    data_dir, cfg = demo
    app = app_on(data_dir, cfg)
    async with app.run_test(size=(100, 24)):
        await until(lambda: loaded(app), what="4 rows")
        status = app.screen.query_one("#runs-status")
        (cfg / "agent-v2.toml").write_text((cfg / "agent-v2.toml").read_text() + "\n[aliases.judge]\ntargetz = 1\n")
        await until(lambda: "config edit refused" in str(status.render()), what="the refusal")
        assert "agent-v2.toml:9" in str(status.render())


async def test_an_idle_database_is_not_read_again_every_second(demo):
    data_dir, cfg = demo
    app = app_on(data_dir, cfg)
    async with app.run_test(size=(80, 24)):
        await until(lambda: loaded(app), what="4 rows")
        reads = []
        real = app.data.runs
        app.data.runs = lambda *a, **k: reads.append(1) or real(*a, **k)
        await asyncio.sleep(2.5)  # REFRESH_S = 1: two ticks, nothing written
        assert reads == []
        add_calls(data_dir, cfg, (1, "run_new00007", "x", 1))
        await until(lambda: "run_new00007" in app.screen.shown, what="the write to be read")
        assert len(reads) == 1


async def test_rollback_with_nothing_to_roll_back_says_so_without_asking(demo):
    app = app_on(*demo)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(lambda: loaded(app), what="4 rows")
        await pilot.press("c")
        await pilot.press("b")
        await pilot.pause()
        assert not app.screen.query("#yes")
        assert any("nothing to roll back" in str(n.message) for n in app._notifications)


def test_runs_lists_an_old_run_still_active_and_the_pulse_counts_spend_incrementally(demo):
    data_dir, cfg = demo
    ds = DataSource(data_dir / "modelux.db", cfg, clock=lambda: NOW)
    before = ds.pulse().spend_today_usd
    # the two most recently started runs, plus run_research01: started 5 min ago but still active
    assert {r.run_id for r in ds.runs(limit=2)} == {"run_abort004", "run_loop0003", "run_research01"}
    add_calls(data_dir, cfg, (1, "run_new00008", "x", 1))
    conn = open_db(data_dir / "modelux.db")
    cost = conn.execute("SELECT cost_nusd FROM calls WHERE run_id = 'run_new00008'").fetchone()[0]
    conn.execute("UPDATE runs SET replay_id = 'r1' WHERE run_id = 'run_new00008'")  # a replay is not "running"
    conn.close()
    pulse = ds.pulse()
    assert round((pulse.spend_today_usd - before) * 1e9) == cost > 0
    assert pulse.runs_running == 2  # research01 and loop0003, not the replayed run


def test_the_budget_meter_shows_the_limit_the_run_is_closest_to():
    row = dict(run_id="r", agent=None, tags={}, status="aborted", started_at=0, last_at=0, calls=3, errors=0,
               retries=0, tokens=900, cost_usd=0.002, duration_s=1.0, anomalies=(), abort_reason=None)
    assert RunRow(**row, budget_usd=0.01).budget_use == pytest.approx((0.2, "cost"))
    assert RunRow(**row, budget_usd=0.01, budget_calls=3).budget_use == (1.0, "calls")
    assert RunRow(**row, budget_usd=None).budget_use is None
    assert fmt.meter(1.0, 5, "calls").plain == "█████ 100% calls"
    assert fmt.abort_label("run 'r' exceeded its budget: max_calls = 3 (3 calls made)") == "max_calls=3"
    assert fmt.abort_label("the agent is stuck retrying the same search forever") == "the agent is stuck re…"


def test_a_refused_call_has_no_route_in_its_tree_label():
    from modelux_local.tui.screens.run import call_label

    step = {"seq": 4, "alias": "@executor", "status": "aborted", "attempts": [], "provider": None, "model": None,
            "input_tokens": None, "output_tokens": None, "cost_usd": None, "latency_ms": 0.0}
    assert call_label(step).plain == "#4 @executor aborted refused before routing"  # was "… — 0ms — → None/None"



async def test_the_filter_finds_runs_older_than_the_loaded_ones(demo):
    from modelux_local.tui.data import RUNS_LIMIT
    data_dir, cfg = demo
    # one old run of a rare agent, then more newer runs than the table loads
    add_calls(data_dir, cfg, (9000, "run_needle", "needle-agent", 5000.0),
              *[(9001 + i, f"run_hay{i:03d}", "hay", 4000.0 - i) for i in range(RUNS_LIMIT + 5)])
    app = app_on(data_dir, cfg)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(lambda: len(app.screen.runs) >= RUNS_LIMIT, what="the newest runs loaded")
        assert "run_needle" not in app.screen.runs
        await pilot.press("slash", *"agent=needle-agent", "enter")
        await until(lambda: list(app.screen.shown) == ["run_needle"], what="the old run found by its tag")
        await pilot.press("escape")
        await pilot.press("slash", *"needle", "enter")
        await until(lambda: list(app.screen.shown) == ["run_needle"], what="the old run found by a word")


def _order(app) -> list[str]:
    table = app.screen.query_one("#runs")
    return [row.key.value for row in table.ordered_rows]


async def test_s_cycles_the_sort_and_shift_s_reverses_it(demo):
    """The expected orders come from the database, not from the screen's own rows."""
    import apsw

    data_dir, cfg = demo
    conn = apsw.Connection(str(data_dir / "modelux.db"), flags=apsw.SQLITE_OPEN_READONLY)
    by = {col: dict(conn.execute(f"SELECT run_id, {col} FROM runs")) for col in ("started_at", "cost_nusd", "calls")}
    conn.close()

    def sorted_by(col: str, descending: bool = True) -> bool:
        values = [by[col][run_id] for run_id in _order(app)]  # ties may come in either order
        return len(values) == 4 and values == sorted(values, reverse=descending)

    app = app_on(data_dir, cfg)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(lambda: loaded(app), what="4 rows")
        assert sorted_by("started_at")
        await pilot.press("s")
        assert app.screen.sort_by == "cost" and sorted_by("cost_nusd")
        await pilot.press("S")
        assert sorted_by("cost_nusd", descending=False)
        await pilot.press("s")
        assert app.screen.sort_by == "calls" and sorted_by("calls")
        assert "sorted by calls ↓" in str(app.screen.query_one("#runs-status").render())


async def test_help_keys_open_and_close_the_help(demo):
    from modelux_local.tui.screens.dialogs import HelpScreen
    from modelux_local.tui.screens.runs import RunsScreen

    app = app_on(*demo)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(lambda: loaded(app), what="4 rows")
        for open_key, close_key in (("question_mark", "escape"), ("f1", "question_mark"), ("question_mark", "q")):
            await pilot.press(open_key)
            await until(lambda: isinstance(app.screen, HelpScreen), what=f"help after {open_key}")
            await pilot.press(close_key)
            await until(lambda: isinstance(app.screen, RunsScreen), what=f"the runs screen after {close_key}")
        assert app.is_running  # q closed the help, it did not quit the app


async def test_the_command_palette_opens_the_configs_screen_and_help(demo):
    from textual.command import CommandPalette

    from modelux_local.tui.screens.configs import ConfigsScreen
    from modelux_local.tui.screens.dialogs import HelpScreen

    app = app_on(*demo)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(lambda: loaded(app), what="4 rows")
        for command, screen in (("Configs", ConfigsScreen), ("Help", HelpScreen)):
            await pilot.press("ctrl+p")
            await until(lambda: isinstance(app.screen, CommandPalette), what="the palette")
            await pilot.press(*command)
            await pilot.pause(0.3)  # the palette searches its providers asynchronously
            await pilot.press("enter")
            await until(lambda: isinstance(app.screen, screen), what=f"{screen.__name__} from the palette")
            await pilot.press("escape")
