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


@pytest.fixture
def demo(tmp_path, monkeypatch):
    """The demo database under a relative config path (so no tmp path reaches the screen), in UTC."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    write_configs(Path("cfg"))
    build_db(tmp_path, Path("cfg"))
    yield lambda: ModeluxApp(DataSource(tmp_path / "modelux.db", Path("cfg"), clock=lambda: NOW))
    monkeypatch.undo()
    time.tzset()


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
