"""What every fake upstream shares: a real aiohttp server on 127.0.0.1, on its own loop in a
background thread (so sync tests, async tests and the proxy under test all reach it over real
HTTP), a FIFO of scripted replies, and a record of what it received.

Subclasses set `reply_type` (a dataclass of scripted fields, with `delay_s`) and `routes(app)`;
handlers call `take(request)` first.
"""
from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    at: float
    chunk_times: list[float] = field(default_factory=list)  # when each SSE event was written (streams)
    client_gone_at: float | None = None  # when a write found the client gone mid-stream


class ThreadedFake:
    name = "fake"
    reply_type: type = object

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, default_latency_s: float = 0.0,
                 record: bool = True, loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop):
        self.host, self.port = host, port
        self.default_latency_s = default_latency_s
        self.record = record  # off for long benchmarks, so memory stays flat
        self._loop_factory = loop_factory
        self.requests: list[RecordedRequest] = []
        self._queue: deque = deque()
        self._lock = threading.Lock()  # the test thread enqueues while the server thread pops
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # ---- control surface (called from the test's thread) ----

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def enqueue(self, *, n_times: int = 1, **fields: Any) -> None:
        reply = self.reply_type(**fields)  # unknown keywords fail here, at the test's line
        with self._lock:
            self._queue.extend(reply for _ in range(n_times))

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self.requests.clear()

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def start(self):
        # bind here, not in the thread, so the port is known and listening when start() returns
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(sock, ready), name=self.name, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if not self._loop or not self._thread:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    async def __aenter__(self):
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: Any) -> None:
        await asyncio.to_thread(self.stop)

    # ---- the server (runs on its own loop) ----

    def _serve(self, sock: socket.socket, ready: threading.Event) -> None:
        self._loop = loop = self._loop_factory()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        self.routes(app)
        # short shutdown_timeout: a test that leaves a delayed reply pending must not stall teardown
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        loop.run_until_complete(self._runner.setup())
        loop.run_until_complete(web.SockSite(self._runner, sock).start())
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _shutdown(self) -> None:
        await self._runner.cleanup()
        # handlers still sleeping on a delay whose client gave up: end them, or the loop dies with them pending
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in rest:
            t.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    async def take(self, request: web.Request) -> tuple[RecordedRequest, Any, Any]:
        """Records the request, pops the next scripted reply (or a default one), sleeps its delay."""
        body = await request.read()
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        rec = RecordedRequest(request.method, request.path_qs, {k.lower(): v for k, v in request.headers.items()},
                              body, parsed, time.monotonic())
        with self._lock:
            if self.record:
                self.requests.append(rec)
            reply = self._queue.popleft() if self._queue else self.reply_type()
        delay = self.default_latency_s if reply.delay_s is None else reply.delay_s
        if delay:
            await self._sleep_watching(request, rec, delay)
        return rec, reply, parsed

    @staticmethod
    async def _sleep_watching(request: web.Request, rec: RecordedRequest, delay: float) -> None:
        """Sleeps `delay` (before the headers), noting in `client_gone_at` a client that hangs up meanwhile."""
        end = time.monotonic() + delay
        while (left := end - time.monotonic()) > 0:
            await asyncio.sleep(min(left, 0.01))
            if request.transport is None or request.transport.is_closing():
                rec.client_gone_at = time.monotonic()
                return
