"""`python -m tests.fault_server serve ...`: the real server, with failures injected at each stage of a call.

Tests only. A call whose last message is `FAULT:<stage>` fails there with a RuntimeError (a bug of
ours, not an upstream error): `before` (a hook after the budget guard reserved), `send` (the
provider), `stream` (the provider's stream, after its first chunk), `on_chunk` (a hook while
relaying), `after` (a hook settling the call, registered first so the guard settles after it).
"""
from __future__ import annotations

import sys
from typing import Any

from modelux_local import analytics, runtime
from modelux_local.calls import Addon
from modelux_local.cli import main


def fault_of(body: dict) -> str | None:
    messages = body.get("messages") or []
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    content = last.get("content")
    return content[6:] if isinstance(content, str) and content.startswith("FAULT:") else None


class Fault(Addon):
    def __init__(self, stages: set[str]):
        self.stages = stages

    def _maybe(self, ctx, stage: str) -> None:
        if stage in self.stages and fault_of(ctx.body) == stage:
            raise RuntimeError(f"injected at {stage}")

    def before(self, ctx) -> None:
        self._maybe(ctx, "before")

    def on_chunk(self, ctx, payload: bytes) -> None:
        self._maybe(ctx, "on_chunk")

    def after(self, ctx, rec) -> None:
        self._maybe(ctx, "after")


class FaultyProvider:
    def __init__(self, inner: Any):
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def chat(self, req):
        if fault_of(req.body) == "send":
            raise RuntimeError("injected at send")
        return await self.inner.chat(req)

    async def chat_stream(self, req):
        if fault_of(req.body) == "send":
            raise RuntimeError("injected at send")
        up = await self.inner.chat_stream(req)
        if fault_of(req.body) == "stream":
            inner_events = up.events

            async def events():
                async for e in inner_events:
                    yield e
                    raise RuntimeError("injected at stream")

            up.events = events()
        return up


_build_provider, _attach = runtime.build_provider, analytics.attach


def attach(rt):
    rt.hooks.add(Fault({"after"}))
    guard = _attach(rt)
    rt.hooks.add(Fault({"before", "on_chunk"}))
    return guard


runtime.build_provider = lambda name, cfg, *limits: FaultyProvider(_build_provider(name, cfg, *limits))
analytics.attach = attach

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
