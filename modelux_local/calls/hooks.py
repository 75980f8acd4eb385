"""Extensions of the call pipeline: one typed interface, built once by the runtime.

In the style of mitmproxy's addons: an extension is an object that defines only the hook
methods it needs (subclass `Addon` for the signatures). `Hooks` collects, per hook, the
addons that override it, in registration order, once at start; nothing is looked up per call.

Where each hook runs, and what it may cost (see `Hooks.describe()` for the live order):

| hook          | runs                                     | budget                           |
|---------------|------------------------------------------|----------------------------------|
| before        | event loop, every call, before sending   | O(1), in memory; raise to refuse |
| on_chunk      | event loop, every relayed stream chunk   | a few µs; return a reason to cut |
| after         | event loop, once per call that passed    | O(1); settle what `before` took  |
|               | `before` (a `finally`: whatever happened)|                                  |
| after_batch   | writer thread, inside the batch's        | may use SQL; delays the writer   |
|               | transaction                              |                                  |
| (rollback)    | writer thread, when that transaction     | optional method of an addon with |
|               | failed and will be retried               | after_batch: give back its state |
| (idle)        | writer thread, its own transaction, once | optional method of an addon with |
|               | the queue stayed empty after a batch,    | after_batch: deferred work (the  |
|               | and at the writer's stop                 | search index's waiting rows)     |
| jobs          | background tasks started with the server | anything; never on a request     |
| stop          | once when the server stops, after the    | async; before the writer drains  |
|               | jobs are cancelled                       |                                  |
"""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from .context import CallContext

if TYPE_CHECKING:
    import apsw

    from ..core.records import CallRecord

log = logging.getLogger("modelux.calls")
Job = Callable[[], Awaitable[None]]


class Addon:
    """Base of every extension; each method is a hook, overridden only where needed."""

    def before(self, ctx: CallContext) -> None:
        """Raise a ModeluxError (RunBlocked) to refuse the call; it is recorded and answered."""

    def on_chunk(self, ctx: CallContext, payload: bytes) -> str | None:
        """Streaming: return a reason to cut the stream off now."""
        return None

    def after(self, ctx: CallContext, rec: CallRecord) -> None:
        """Settle reservations; called exactly once per call that passed `before`."""

    def after_batch(self, conn: apsw.Connection, records: list[CallRecord]) -> None:
        """Writer thread, inside the transaction that stored `records`."""

    def jobs(self) -> list[Job]:
        """Coroutine factories the server runs in the background while it serves."""
        return []

    async def stop(self) -> None:
        """The server is stopping: flush and clean up (its jobs are already cancelled)."""


class Background(Addon):
    """One background job as an addon (retention, the promotion poller)."""

    def __init__(self, job: Job):
        self.job = job

    def jobs(self) -> list[Job]:
        return [self.job]


HOOKS = ("before", "on_chunk", "after", "after_batch")


def _overrides(addon: object, name: str) -> bool:
    impl = getattr(type(addon), name, None)
    return impl is not None and impl is not getattr(Addon, name)


class Hooks:
    """The addons of one server (or one replay), and per hook the bound methods to call."""

    def __init__(self, addons: list[object] | None = None):
        self.addons: list[object] = []
        self.before: tuple[Callable[[CallContext], None], ...] = ()
        self.on_chunk: tuple[Callable[[CallContext, bytes], str | None], ...] = ()
        self.after: tuple[Callable[[CallContext, CallRecord], None], ...] = ()
        self.after_batch: tuple[Callable[[apsw.Connection, list[CallRecord]], None], ...] = ()
        for a in addons or ():
            self.add(a)

    def add(self, addon: object) -> None:
        """Registers an addon (before the server starts); its hooks run after those added earlier."""
        if addon in self.addons:
            return
        self.addons.append(addon)
        for name in HOOKS:
            if _overrides(addon, name):
                setattr(self, name, (*getattr(self, name), getattr(addon, name)))

    def of(self, kind: type) -> object | None:
        """The first addon of a type (the management routes act on runs through the budget guard)."""
        return next((a for a in self.addons if isinstance(a, kind)), None)

    def jobs(self) -> list[Job]:
        return [j for a in self.addons if _overrides(a, "jobs") for j in a.jobs()]

    async def stop(self) -> None:
        for a in self.addons:
            if _overrides(a, "stop"):
                try:
                    await a.stop()
                except Exception:
                    log.exception("stopping %s failed", type(a).__name__)

    def settle(self, ctx: CallContext, rec: CallRecord) -> None:
        for after in self.after:
            try:
                after(ctx, rec)
            except Exception:
                log.exception("hook %s failed to settle call %s", after.__qualname__, ctx.call_id)

    def describe(self) -> dict[str, list[str]]:
        """Per hook, in the order they run: what a call pays for on the hot path."""
        return {name: [type(a).__name__ for a in self.addons if _overrides(a, name)] for name in (*HOOKS, "jobs", "stop")}
