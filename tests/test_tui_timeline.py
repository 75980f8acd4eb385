"""The run screen's timeline and the runs meter against the agent's usual run, driven with Pilot over
the demo database (written by the writer's row function) with research-v2's 20-run history."""
from __future__ import annotations

import pytest
from rich.text import Text

from modelux_local.tui.screens.run import RunScreen, attempt_label, call_label
from modelux_local.tui.widgets import format as fmt
from modelux_local.tui.widgets.timeline import Timeline, TimelineView, bars_of

from .test_tui_screens import add_calls, app_on, until
from .test_tui_support import build_db, write_configs


@pytest.fixture
def demo(tmp_path):
    cfg = write_configs(tmp_path / "cfg")
    build_db(tmp_path, cfg, history=20)
    return tmp_path, cfg


async def _open_research(pilot, app):
    await until(lambda: bool(app.screen.query("#runs")) and len(app.screen.shown) == 24, what="the runs")
    await pilot.press("down", "down", "enter")
    await until(lambda: isinstance(app.screen, RunScreen) and len(app.screen.nodes) == 3, what="the run screen")
    return app.screen


async def test_timeline_keys_select_zoom_pan_and_jump_to_the_call(demo):
    app = app_on(*demo)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open_research(pilot, app)
        timeline = screen.query_one("#timeline", Timeline)
        assert not timeline.has_focus
        await pilot.press("t")
        assert timeline.has_focus and timeline.selected_call == "call_ch01_01"
        await pilot.press("down")
        assert timeline.selected_call == "call_ch01_02"
        await pilot.press("plus")
        assert timeline.zoom_x == 2
        await pilot.press("plus", "right")
        assert timeline.zoom_x == 4 and timeline.view_from > 0
        shown_from = timeline.view_from
        await pilot.press("left")
        assert timeline.view_from < shown_from
        await pilot.press("minus")
        assert timeline.zoom_x == 2
        await pilot.press("0")
        assert (timeline.zoom_x, timeline.view_from) == (1, 0)
        await pilot.press("enter")  # the selected call's detail, its node under the tree's cursor
        await until(lambda: (screen.shown_call or {}).get("call_id") == "call_ch01_02", what="the call's detail")
        tree = screen.query_one("#trace")
        assert tree.has_focus and tree.cursor_node is screen.nodes["call_ch01_02"]


async def test_the_timeline_grows_while_the_run_runs(demo):
    data_dir, cfg = demo
    app = app_on(data_dir, cfg)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open_research(pilot, app)
        timeline = screen.query_one("#timeline", Timeline)
        await until(lambda: len(timeline.bars) == 3, what="three bars")
        add_calls(data_dir, cfg, (4, "run_research01", "research-v2", 5))
        await until(lambda: len(timeline.bars) == 4, what="the new call's bar")
        assert timeline.bars[-1].call_id == "call_ch01_04"


def test_bars_put_retries_as_segments_and_shade_the_agents_time(demo):
    from modelux_local.tui.data import DataSource

    data_dir, cfg = demo
    run = DataSource(data_dir / "modelux.db", cfg).run_detail("run_research01")
    bars, last = bars_of(run)
    assert [b.start for b in bars] == [0.0, 180.0, 280.0]
    retried = bars[1]
    assert [k for _, _, k in retried.segments] == ["error", "ok"]
    assert retried.segments[0][1] <= retried.segments[1][0] <= retried.end  # the failure, then the answer
    view = TimelineView(bars, 300.0, 80)
    v0, span = view.window(1, 0)
    row = view.row(1, v0, span, False).plain
    assert len(row) == 80 and row.count("░") > 20 and "▓" in row and "$0.00028" in row  # 3 min of agent time
    assert len(view.axis(v0, span).plain) == 80 and "5m00s" in view.axis(v0, span).plain
    v0, span = view.window(4, 170.0)  # zoomed in on call 2: its segments get cells of their own
    assert span == 75.0 and v0 == 170.0


def test_tree_labels_never_cut_the_model_name():
    step = {"seq": 12, "alias": "@summarise-and-plan", "status": "ok", "attempts": [{}], "provider": "openai",
            "model": "gpt-4.1-mini-2025-04-14", "cost_usd": 0.0123, "latency_ms": 1402.0, "input_tokens": 12000,
            "output_tokens": 800}
    for width in (40, 60):
        label = call_label(step, width).plain
        assert len(label) <= width and label.endswith("openai/gpt-4.1-mini-2025-04-14"), (width, label)
    for width in (20, 28):  # narrower than the name: its middle goes, both ends stay
        tiny = call_label(step, width).plain
        assert len(tiny) == width and "…" in tiny and tiny.startswith("#12") and tiny.endswith("2025-04-14")
    attempt = attempt_label({"provider": "anthropic", "model": "claude-sonnet-4-20250514", "status": "error",
                             "http_status": 529, "latency_ms": 30000, "next": "fallback"}, 2, 30).plain
    assert attempt.endswith("anthropic/claude-sonnet-4-20250514") or "…" in attempt
    assert fmt.elide_middle(Text("abcdefghij"), 5).plain == "ab…ij"


async def test_the_meter_shows_the_ratio_once_a_running_run_passes_its_usual(demo):
    app = app_on(*demo)
    async with app.run_test(size=(120, 35)):
        await until(lambda: bool(app.screen.query("#runs")) and len(app.screen.shown) == 24, what="the runs")
        runs = app.screen.runs
        loop = runs["run_loop0003"]  # 5 calls where research-v2's p90 is 3
        assert loop.budget_use == (pytest.approx(5 / 3), "usual") and loop.usual_by == "calls"
        cells = dict(zip(app.screen.columns, app.screen.shown["run_loop0003"]))
        assert cells["budget"].plain.endswith("x1.7 of usual")
        done = dict(zip(app.screen.columns, app.screen.shown["run_usual19"]))
        assert "x" not in done["budget"].plain and "%" in done["budget"].plain  # completed: a share, no ratio
        assert runs["run_summary002"].usual is None  # summariser has no history


def test_the_readmes_timeline_is_what_the_widget_draws(tmp_path):
    """README's picture is the timeline of run_research01 at 80 columns (78 for the widget), drawn here."""
    from modelux_local.tui.data import DataSource

    from .test_readme_examples import example
    from .test_tui_support import NOW

    cfg = write_configs(tmp_path / "cfg")
    build_db(tmp_path, cfg)
    run = DataSource(tmp_path / "modelux.db", cfg, clock=lambda: NOW).run_detail("run_research01")
    bars, last = bars_of(run)
    view = TimelineView(bars, 300.0, 78)  # running: the axis reaches "now", 300 s after its first call
    v0, span = view.window(1, 0)
    drawn = [view.summary(), view.axis(v0, span), *(view.row(i, v0, span, False) for i in range(3)),
             view.agent_row(v0, span)]
    shown = [line[1:] for line in example("tui-timeline").text.splitlines()]
    assert [t.plain.rstrip() for t in drawn] == [line.rstrip() for line in shown]


def test_a_fallback_is_its_own_segment_and_a_refused_call_still_shows():
    run = {"started_at": "2026-04-12T13:00:00.000Z", "status": "completed", "steps": [
        {"call_id": "c1", "seq": 1, "alias": "@planner", "status": "ok", "started_at": "2026-04-12T13:00:00.000Z",
         "latency_ms": 3000.0, "cost_usd": 0.01, "input_tokens": 10, "output_tokens": 5, "attempts": [
             {"provider": "anthropic", "model": "claude", "status": "error", "latency_ms": 1000.0},
             {"provider": "openai", "model": "gpt", "status": "ok", "latency_ms": 1500.0}]},
        {"call_id": "c2", "seq": 2, "alias": "@planner", "status": "aborted", "started_at": "2026-04-12T13:00:10.000Z",
         "latency_ms": None, "cost_usd": None, "input_tokens": None, "output_tokens": None, "attempts": []}]}
    (fell_back, refused), last = bars_of(run)
    assert [(a, b, k) for a, b, k in fell_back.segments] == [(0.0, 1.0, "error"), (1.5, 3.0, "fallback")]
    assert refused.start == 10.0 and refused.failed and last == 10.0
    view = TimelineView([fell_back, refused], 10.0, 80)
    row = view.row(1, *view.window(1, 0), False).plain
    assert "▓" in row and "—" in row  # one cell however short, no tokens
    first = view.row(0, *view.window(1, 0), False)
    assert any(span.style == "cyan" for span in first.spans)  # the fallback's colour
