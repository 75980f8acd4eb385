"""Snapshot tests of the TUI's main screens over a deterministic database (fixed ids, times, "now").

Update the SVGs after an intended change with `pytest tests/test_tui_snapshots.py --snapshot-update`
and look at them (they open in a browser) before committing.
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from modelux_local.tui.app import ModeluxApp
from modelux_local.tui.data import DataSource

from .test_tui_support import NOW, build_db, write_configs


def _demo_app(tmp_path, monkeypatch, history: int = 0):
    """The demo database under a relative config path (so no tmp path reaches the screen), in UTC."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    write_configs(Path("cfg"))
    build_db(tmp_path, Path("cfg"), history=history)
    yield lambda: ModeluxApp(DataSource(tmp_path / "modelux.db", Path("cfg"), clock=lambda: NOW))
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def demo(tmp_path, monkeypatch):
    yield from _demo_app(tmp_path, monkeypatch)


async def until(pilot, predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("the screen did not reach the expected state")
        await asyncio.sleep(0.05)
    await pilot.pause()


def runs_loaded(pilot):
    return until(pilot, lambda: pilot.app.screen.query("#runs") and pilot.app.screen.query_one("#runs").row_count == 4)


def test_runs_screen(demo, snap_compare):
    # aborted run in red, the looping run flagged, the research run's meter past its $0.01 budget
    assert snap_compare(demo(), terminal_size=(110, 16), run_before=runs_loaded)


def test_runs_screen_at_80x24(demo, snap_compare):
    assert snap_compare(demo(), terminal_size=(80, 24), run_before=runs_loaded)


def test_run_screen_with_a_tool_call(demo, snap_compare):
    async def open_second_call(pilot):
        await runs_loaded(pilot)
        await pilot.press("down", "down", "enter")  # run_research01 (sorted by start, newest first)
        await until(pilot, lambda: len(getattr(pilot.app.screen, "nodes", ())) == 3)
        await pilot.press("down", "down", "enter")  # call #2, expanded to show its two attempts
        await until(pilot, lambda: (pilot.app.screen.shown_call or {}).get("call_id") == "call_ch01_02")

    assert snap_compare(demo(), terminal_size=(120, 36), run_before=open_second_call)


def test_configs_screen(demo, snap_compare):
    async def open_configs(pilot):
        await runs_loaded(pilot)
        await pilot.press("c")
        await until(pilot, lambda: getattr(pilot.app.screen, "state", None) is not None)

    assert snap_compare(demo(), terminal_size=(100, 30), run_before=open_configs)


@pytest.fixture
def demo_history(tmp_path, monkeypatch):
    """The demo database with 20 completed runs of research-v2 before it: its usual run."""
    yield from _demo_app(tmp_path, monkeypatch, history=20)


def runs_with_history_loaded(pilot):
    return until(pilot, lambda: pilot.app.screen.query("#runs") and pilot.app.screen.query_one("#runs").row_count == 24)


@pytest.mark.parametrize("size", [(80, 24), (120, 35)], ids=["80x24", "120x35"])
def test_runs_screen_meter_against_the_usual_run(demo_history, snap_compare, size):
    # both running research-v2 runs are past their agent's p90 ("x1.7 of usual"); its history runs
    # show their share of the nearer of the $0.01 budget and the p90
    assert snap_compare(demo_history(), terminal_size=size, run_before=runs_with_history_loaded)


@pytest.mark.parametrize("size", [(80, 24), (120, 35)], ids=["80x24", "120x35"])
def test_run_screen_timeline(demo_history, snap_compare, size):
    async def open_timeline(pilot):
        await runs_with_history_loaded(pilot)
        await pilot.press("down", "down", "enter")  # run_research01: a retried call, the agent idle since
        await until(pilot, lambda: len(getattr(pilot.app.screen, "nodes", ())) == 3)
        await pilot.press("t", "down")  # the timeline, its second call selected
        await until(pilot, lambda: pilot.app.screen.query_one("#timeline").has_focus)

    assert snap_compare(demo_history(), terminal_size=size, run_before=open_timeline)
