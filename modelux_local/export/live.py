"""Live OTLP export while serving: a background job that reads recorded calls from the database
behind a persisted cursor (storage/export_queries.py) and posts them as spans.

The database is the buffer: a collector that is down, slow or refusing loses nothing. The job
retries the same batch with a backoff capped at MAX_BACKOFF_S and moves the cursor only after
the collector accepted it, so after an outage or a restart it resends from where it stopped,
with the same span ids. It never touches the request path: the proxy only writes calls.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx

from ..calls import Addon
from ..storage import connect
from ..storage.export_queries import backlog, calls_after, read_cursor, write_cursor
from ..storage.exports import runs_by_id
from .otlp import encode, spans_for
from .otlp_http import OtlpSettingError, OtlpTarget, SendError, apost, target_from

log = logging.getLogger("modelux.export")

BATCH = 200
POLL_S = 0.5
MAX_BACKOFF_S = 10.0


class LiveExporter(Addon):
    def __init__(self, rt: Any, target: OtlpTarget):
        self.rt, self.target = rt, target
        self.cursor_name = f"otlp {target.url}"
        self.cursor = 0
        self.sent_calls = 0
        self.lag_calls = 0
        self.oldest_unsent: float | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.last_sent_at: float | None = None
        self.failures = 0
        self._conn = None

    def header_note(self) -> str:
        """One short line for the TUI header: the backlog, and the error while it lasts."""
        if self.failures:
            return f"lag {self.lag_calls} calls · {self.last_error[:60]}"
        return f"lag {self.lag_calls}" if self.lag_calls else "ok"

    def status(self) -> dict:
        """For /healthz and the TUI header."""
        return {"endpoint": self.target.url, "protocol": self.target.protocol, "sent_calls": self.sent_calls,
                "lag_calls": self.lag_calls,
                "lag_s": round(time.time() - self.oldest_unsent, 1) if self.oldest_unsent else 0.0,
                "last_error": self.last_error, "last_error_at": self.last_error_at,
                "last_sent_at": self.last_sent_at}

    # -- the job --------------------------------------------------------------------------

    def _db(self):
        if self._conn is None:
            self._conn = connect(self.rt.paths.db_path)
        return self._conn

    def _read(self) -> tuple[list[int], bytes | None, str]:
        """The next batch as (its rowids, body, content type); body None when nothing is left to send."""
        conn = self._db()
        rows = calls_after(conn, self.cursor, BATCH)
        self.lag_calls, self.oldest_unsent = backlog(conn, self.cursor)
        steps = [s for _, s in rows if self.target.include_replays or not s["replay_id"]]
        if not steps:
            return [r for r, _ in rows], None, ""
        kinds = {n: p.kind for n, p in self.rt.snapshot.configs.server.providers.items()}
        run_ids = sorted({s["run_id"] for s in steps if s["run_id"]})
        # a run's root span goes with each batch holding its calls, from the rollup at that moment
        body, ctype = encode(spans_for(steps, runs_by_id(conn, run_ids), kinds, self.target.content),
                             self.target.protocol)
        return [r for r, _ in rows], body, ctype

    async def run(self) -> None:
        self.cursor = await asyncio.to_thread(lambda: read_cursor(self._db(), self.cursor_name))
        async with httpx.AsyncClient(timeout=30) as client:
            while True:
                rowids, body, ctype = await asyncio.to_thread(self._read)
                if not rowids:
                    await asyncio.sleep(POLL_S)
                    continue
                while body is not None:
                    try:
                        await apost(client, self.target, body, ctype)
                        break
                    except SendError as e:
                        self._failed(e.message)
                        await asyncio.sleep(min(MAX_BACKOFF_S, 0.5 * 2 ** (self.failures - 1)))
                        # the backlog keeps growing while the collector is away: keep /healthz honest
                        self.lag_calls, self.oldest_unsent = await asyncio.to_thread(
                            lambda: backlog(self._db(), self.cursor))
                if body is not None:
                    self.sent_calls += len(rowids)
                    self.last_sent_at, self.failures = time.time(), 0
                self.cursor = rowids[-1]
                self.rt.writer.execute(lambda conn, c=self.cursor: write_cursor(conn, self.cursor_name, c))

    def _failed(self, message: str) -> None:
        self.failures += 1
        if message != self.last_error or self.failures == 1:
            log.warning("OTLP export to %s failed (retrying, nothing is lost): %s", self.target.url, message)
        self.last_error, self.last_error_at = message, time.time()

    def jobs(self) -> list:
        return [self.run]

    async def stop(self) -> None:
        await self.close()

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def install(rt: Any) -> LiveExporter | None:
    """Registers the live exporter when an endpoint is configured; returns it (for /healthz), or None."""
    try:
        target = target_from(rt.configs.server.export.otlp)
    except OtlpSettingError as e:
        log.error("live OTLP export is off: %s", e)
        return None
    if target is None:
        return None
    exporter = LiveExporter(rt, target)
    rt.otlp_exporter = exporter  # the TUI header reads its status (tui/data.py)
    rt.hooks.add(exporter)  # jobs: run; stop: close
    log.info("exporting calls live as OTLP %s to %s", target.protocol, target.url)
    return exporter
