"""A one-line terminal meter on stderr while a replay runs (redrawn in place; silent off a terminal)."""
from __future__ import annotations

import asyncio
import sys
import time

from ..pricing import format_usd
from .simulate import Progress

BAR = 28


def line(p: Progress, width: int = BAR) -> str:
    frac = p.runs_done / p.runs_total if p.runs_total else 1.0
    full = int(frac * width)
    bar = "█" * full + ("▌" if frac * width - full >= 0.5 else "")
    bar = bar.ljust(width, "░")
    secs = time.monotonic() - p.started
    return (f"  ▕{bar}▏ {p.runs_done:,}/{p.runs_total:,} runs  {p.requests:,} requests  "
            f"{format_usd(p.spent_nusd / 1e9)} spent  {secs:.0f}s")


class Meter:
    def __init__(self, progress: Progress, stream=None, interval: float = 0.1):
        self.p, self.stream, self.interval = progress, stream or sys.stderr, interval
        self.enabled = self.stream.isatty()
        self._task: asyncio.Task | None = None

    def update(self, p: Progress) -> None:
        self.p = p

    async def _loop(self) -> None:
        while True:
            self.draw()
            await asyncio.sleep(self.interval)

    def draw(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[2K" + line(self.p))
            self.stream.flush()

    def start(self) -> None:
        if self.enabled:
            self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self.draw()
            self.stream.write("\n")
            self.stream.flush()
