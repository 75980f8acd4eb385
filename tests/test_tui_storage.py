"""The TUI header says when the in-process writer cannot store (disk full), and clears once it can."""
from __future__ import annotations

from modelux_local.runtime import Runtime
from modelux_local.settings import Paths
from modelux_local.tui.app import ModeluxApp
from modelux_local.tui.data import DataSource

from .test_tui_screens import until
from .test_tui_support import write_configs
from .test_writer import big, full_disk, wait_for  # noqa: F401 - full_disk is a fixture


async def test_header_shows_a_failing_disk_and_its_queue(tmp_path, full_disk):  # noqa: F811
    cfg = write_configs(tmp_path / "cfg")
    rt = Runtime(Paths(tmp_path / "data", cfg))
    rt.writer.start()
    try:
        full_disk.on = True
        await rt.writer.run(full_disk)
        for i in range(3):
            await rt.writer.submit(big(i))
        await wait_for(lambda: rt.writer.degraded is not None)
        app = ModeluxApp(DataSource(rt.paths.db_path, cfg, runtime=rt))
        async with app.run_test(size=(160, 30)):
            header = lambda: str(app.screen.query_one("#pulse-text").render())  # noqa: E731
            await until(lambda: bool(app.screen.query("#pulse-text")) and "storage degraded" in header(),
                        what="the storage line")
            assert "database or disk is full" in header() and "3 queued" in header()
            full_disk.on = False
            await until(lambda: "storage recovered" in header() or "storage" not in header(), timeout=20,
                        what="the storage line to clear")
    finally:
        rt.writer.close(5)
