"""Builds and holds what a running server needs: config snapshot, providers, store; start/stop."""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from .calls.context import Snapshot
from .calls.hooks import Background, Hooks
from .config.loader import ConfigSet, load_dir
from .errors import ConfigError
from .pricing import PriceBook
from .providers import Provider, build_provider
from .routing import Router
from .settings import Paths
from .storage import Reader, Writer
from .storage import serving as serving_db
from .storage.redact import secrets_of
from .storage.retention import retention_loop

log = logging.getLogger("modelux")


def _report_crash(task: asyncio.Task) -> None:
    """A background job that dies must say so: its work (webhooks, expiry, polling) stops."""
    if not task.cancelled() and task.exception() is not None:
        log.error("background job %s stopped: %r", task.get_coro().__qualname__, task.exception(),
                  exc_info=task.exception())


@dataclass
class ReloadStatus:
    ok: bool = True
    at: float = field(default_factory=time.time)
    message: str = "loaded"
    file: str | None = None
    line: int | None = None

    def as_dict(self) -> dict:
        return {"ok": self.ok, "at": self.at, "message": self.message, "file": self.file, "line": self.line}


class Runtime:
    def __init__(self, paths: Paths):
        self.paths = paths
        self.configs = load_dir(paths.config_dir)  # raises ConfigError: refuse to start on a bad config
        # replay room: config name -> (content, version) pinned by `config promote/rollback` (see apply_serving)
        self.serving: dict[str, tuple[Any, str]] = {}
        self.serving_audit_id = 0
        self.snapshot = self._build(self.configs, {})
        self.writer = Writer(paths.db_path)
        self.writer.secrets = secrets_of(self.configs.server)
        self.reader = Reader(paths.db_path, self.configs.server.runs.idle_timeout_s)
        self.reload_status = ReloadStatus(message=f"loaded {self.configs.source}")
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        # Other rooms register their addons here before start() (calls/hooks.py): hot-path guards,
        # writer hooks, background jobs (cancelled on stop, before the writer drains).
        self.hooks = Hooks()
        self.hooks.add(Background(lambda: retention_loop(self.writer, lambda: self.configs.server.storage.keep_days)))

    def _build(self, cs: ConfigSet, old: dict[str, Provider]) -> Snapshot:
        providers: dict[str, Provider] = {}
        for name, pc in cs.server.providers.items():
            prev = old.get(name)
            # keep the pooled client when a provider's settings did not change
            same = (prev is not None and getattr(prev, "cfg", None) == pc
                    and getattr(prev, "limits", cs.server.limits) == cs.server.limits)  # the mock reads [limits]
            providers[name] = prev if same else build_provider(name, pc, cs.server.limits)
        return Snapshot(cs, Router(cs, self.serving), PriceBook(cs.server.prices, cs.server.providers), providers)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self.writer.after_batch[:] = self.hooks.after_batch
        self.writer.start()
        self._record_versions(self.configs)
        await self.apply_serving()
        if self.paths.config_dir is not None:
            self._tasks.append(asyncio.create_task(self._watch()))
        for job in self.hooks.jobs():
            task = asyncio.create_task(job())
            task.add_done_callback(_report_crash)
            self._tasks.append(task)

    async def stop(self) -> None:
        self._stop.set()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.hooks.stop()
        for p in self.snapshot.providers.values():
            await p.aclose()
        await asyncio.to_thread(self.writer.close)

    async def _watch(self) -> None:
        from .config.watcher import watch_dir

        await watch_dir(self.paths.config_dir, self.reload, self._stop)

    async def reload(self) -> bool:
        try:
            cs = await asyncio.to_thread(load_dir, self.paths.config_dir)
        except ConfigError as e:
            self.reload_status = ReloadStatus(False, time.time(), e.message, e.file, e.line)
            log.error("config change refused, the last good config keeps serving: %s", e.message)
            return False
        old = self.snapshot
        self.snapshot = self._build(cs, old.providers)
        self.configs = cs
        self.writer.secrets = secrets_of(cs.server)
        for name, p in old.providers.items():
            if self.snapshot.providers.get(name) is not p:
                asyncio.get_running_loop().call_later(120, lambda p=p: asyncio.ensure_future(p.aclose()))
        self.reload_status = ReloadStatus(True, time.time(), f"reloaded {cs.source}: " + ", ".join(
            f"{n}@{v}" for n, v in cs.versions.items()))
        log.info("%s", self.reload_status.message)
        self._record_versions(cs)
        return True

    # -- replay room: promoted serving content ---------------------------------------------
    async def apply_serving(self) -> bool:
        """Reads the serving state promotion/rollback left in the database; swaps the router if it changed."""
        from .storage.serving import read_serving

        serving, audit_id = await asyncio.to_thread(lambda: read_serving(self.reader.conn(), self.configs))
        self.serving_audit_id = audit_id
        if serving == self.serving:
            return False
        self.serving = serving
        self.snapshot = self._build(self.configs, self.snapshot.providers)
        log.info("serving content changed by promotion/rollback: %s",
                 ", ".join(f"@{n}@{v}" for n, (_, v) in serving.items()) or "files serve")
        return True
    # -- end replay room ---------------------------------------------------------------------

    def _record_versions(self, cs: ConfigSet) -> None:
        rows = [(n, cs.versions[n], cs.texts[n], cs.files.get(n, cs.source)) for n in cs.routing]
        now = time.time()

        self.writer.execute(lambda conn: serving_db.add_config_versions(conn, rows, now))
