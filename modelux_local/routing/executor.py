"""The attempt loop: tries a plan's targets with retries and fallback, recording each attempt.

The actual upstream call is injected (`send`), so this room decides *when* to try again
and *where* to go next without knowing how a provider speaks.
"""
from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from ..errors import AllTargetsFailed, UpstreamError
from .plan import Plan, TargetPlan

T = TypeVar("T")
# A Retry-After longer than this is not waited for: the next target is tried instead, so one
# rate-limited provider cannot hold a call for a minute while a fallback is available.
MAX_RETRY_WAIT_S = 10.0


@dataclass(slots=True)
class Attempt:
    provider: str
    model: str
    status: str                 # ok | error
    http_status: int | None
    latency_ms: float
    error: str | None = None
    category: str | None = None  # 429 | 5xx | timeout | connect, when retryable
    next: str | None = None      # what routing did after it: retry | fallback | give_up | pass_through
    retry_after_s: float | None = None  # the upstream's Retry-After, when it sent one

    def as_dict(self) -> dict:
        d = {"provider": self.provider, "model": self.model, "status": self.status,
             "http_status": self.http_status, "latency_ms": round(self.latency_ms, 2),
             "error": self.error, "category": self.category, "next": self.next}
        if self.retry_after_s is not None:
            d["retry_after_s"] = round(self.retry_after_s, 3)
        return d


async def execute(plan: Plan, send: Callable[[TargetPlan], Awaitable[T]], attempts: list[Attempt]) -> tuple[T, TargetPlan]:
    """Returns the first success. Appends every attempt to `attempts` (also on failure).

    Raises the UpstreamError itself for client errors (they pass through), or
    AllTargetsFailed once every target and retry is spent.
    """
    retry_on = set(plan.retries.on)
    for ti, target in enumerate(plan.targets):
        tries = 1 + plan.retries.attempts
        for n in range(tries):
            t0 = time.perf_counter()
            try:
                result = await send(target)
            except UpstreamError as e:
                a = Attempt(target.provider, target.model, "error", e.upstream_status,
                            (time.perf_counter() - t0) * 1000, e.message, e.category)
                attempts.append(a)
                if e.category is None:
                    a.next = "pass_through"
                    raise
                wait = _backoff_s(plan.retries.backoff_ms, n)
                if e.retry_after_s is not None:  # the upstream said when: wait that long, or go elsewhere
                    a.retry_after_s = e.retry_after_s
                    wait = max(wait, e.retry_after_s)
                if e.category in retry_on and n + 1 < tries and wait <= MAX_RETRY_WAIT_S:
                    a.next = "retry"
                    await asyncio.sleep(wait)
                    continue
                a.next = "fallback" if ti + 1 < len(plan.targets) else "give_up"
                break
            attempts.append(Attempt(target.provider, target.model, "ok", 200, (time.perf_counter() - t0) * 1000, next=None))
            return result, target
    summary = "; ".join(f"{a.provider}/{a.model}: {a.error}" for a in attempts)
    raise AllTargetsFailed(f"every target failed ({len(attempts)} attempts): {summary}")


def _backoff_s(backoff_ms: float, n: int) -> float:
    """Exponential backoff with a little jitter so concurrent retries don't stampede together."""
    # capped exponent: 2.0 ** 1024 overflows a float, and past 2**16 the wait is over any cap anyway
    return backoff_ms / 1000 * (2 ** min(n, 16)) * (0.8 + 0.4 * random.random())
