"""Webhook delivery from the outbox: a background task, never on the request path.

Due deliveries (`webhook_deliveries.status = 'pending' AND next_at <= now`) are POSTed with
aiohttp; each attempt is recorded. A 2xx marks the delivery `delivered`; anything else is
retried with exponential backoff (BACKOFF_BASE_S doubling, capped at BACKOFF_CAP_S) and given
up as `failed` after MAX_ATTEMPTS. The outbox is in the database, so pending deliveries survive
a receiver that is down and a server restart. On shutdown, POSTs in flight are allowed to
finish and be recorded, so a receiver that answered is not sent the event again.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import time
from typing import Any

import aiohttp

from ..config.schema import Webhook
from ..storage import outbox

log = logging.getLogger("modelux.webhooks")

MAX_ATTEMPTS = 12
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 300.0
TIMEOUT_S = 10.0
POLL_S = 1.0        # also picks up events written by the CLI (another process)
BATCH = 32


def backoff_s(attempts: int) -> float:
    """Wait before the next try after `attempts` failed ones: 1, 2, 4, ... seconds, at most 5 minutes."""
    return min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** max(0, attempts - 1))


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _due(conn, now: float) -> list[tuple]:
    return outbox.due(conn, now, BATCH)


def _next_due(conn) -> float | None:
    return outbox.next_due(conn)


class Deliverer:
    def __init__(self, rt: Any, wake: asyncio.Event):
        self.rt = rt
        self.wake = wake  # set when events were written (lifecycle.Signals.outbox)

    def _hook_for(self, url: str) -> Webhook | None:
        return next((h for h in self.rt.configs.server.webhooks if h.url == url), None)

    async def run(self) -> None:
        reader = self.rt.reader
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as session:
            while True:
                self.wake.clear()  # before reading: an event written from here on wakes the wait below
                now = time.time()
                try:
                    due = await asyncio.to_thread(lambda: _due(reader.conn(), now))
                except Exception:  # a locked or broken database must not end delivery for good
                    log.exception("reading the webhook outbox failed; retrying")
                    await asyncio.sleep(POLL_S)
                    continue
                if due:
                    job = asyncio.ensure_future(asyncio.gather(*(self._deliver(session, *d) for d in due),
                                                               return_exceptions=True))
                    try:
                        failed = [r for r in await asyncio.shield(job) if isinstance(r, Exception)]
                        if failed:  # not recorded: pause rather than re-send at once
                            log.error("recording %d webhook deliveries failed: %r", len(failed), failed[0])
                            await asyncio.sleep(POLL_S)
                    except asyncio.CancelledError:
                        # shutting down: let the POSTs in flight finish and be recorded, so a receiver
                        # that already answered is not sent the same event again after a restart
                        await asyncio.wait_for(asyncio.shield(job), TIMEOUT_S + 2)
                        raise
                    continue
                try:
                    nxt = await asyncio.to_thread(lambda: _next_due(reader.conn()))
                except Exception:
                    nxt = None
                wait = POLL_S if nxt is None else max(0.0, min(POLL_S, nxt - time.time()))
                try:
                    await asyncio.wait_for(self.wake.wait(), wait)
                except TimeoutError:
                    pass

    async def _deliver(self, session: aiohttp.ClientSession, event_id: str, url: str, attempts: int, event: str,
                       body: bytes) -> None:
        hook = self._hook_for(url)
        status, error = None, None
        t0 = time.perf_counter()
        if hook is None:
            error = "this webhook url is no longer in the config"
        else:
            headers = {"content-type": "application/json", "user-agent": "modelux-local",
                       "X-Modelux-Event": event, "X-Modelux-Delivery": event_id}
            secret = os.environ.get(hook.secret_env) if hook.secret_env else None
            if hook.secret_env and not secret:
                error = f"the secret's environment variable {hook.secret_env} is not set"
            else:
                if secret:
                    headers["X-Modelux-Signature"] = sign(secret, bytes(body))
                try:
                    async with session.post(url, data=bytes(body), headers=headers) as r:
                        status = r.status
                        await r.read()
                        if not 200 <= status < 300:
                            error = f"HTTP {status}"
                except (TimeoutError, aiohttp.ClientError, OSError) as e:
                    error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        latency = (time.perf_counter() - t0) * 1000
        n = attempts + 1
        now = time.time()
        gave_up = error is not None and (n >= MAX_ATTEMPTS or hook is None)

        def record(conn):
            outbox.record_attempt(conn, event_id, url, n, now, status, error, latency, gave_up=gave_up,
                                  next_at=now + backoff_s(n))

        await self.rt.writer.run(record)
        if error is not None:
            log.log(logging.ERROR if gave_up else logging.INFO, "webhook %s %s (%s) attempt %d: %s%s", url, event,
                    event_id, n, error, " — giving up" if gave_up else f"; next try in {backoff_s(n):.0f}s")
