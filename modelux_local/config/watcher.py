"""Watches a config directory and calls back on each settled change."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

log = logging.getLogger("modelux.config")


async def watch_dir(directory: Path, on_change: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
    from watchfiles import awatch

    async for changes in awatch(directory, stop_event=stop, debounce=200, step=50,
                                watch_filter=lambda _c, p: p.endswith(".toml")):
        log.debug("config change: %s", changes)
        try:
            await on_change()
        except Exception:  # a reload bug must never stop the watcher
            log.exception("config reload failed")
