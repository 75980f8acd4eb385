"""Closed-loop load generator (C workers, N requests) and the statistics it reports."""
from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp


@dataclass
class PhaseResult:
    n: int
    concurrency: int
    wall_s: float
    latencies: list[float] = field(default_factory=list)   # seconds, successful requests only
    ttfts: list[float] = field(default_factory=list)        # streams: first body bytes
    errors: int = 0
    first_error: str | None = None
    odd_status: dict[int, int] = field(default_factory=dict)  # 2xx other than 200: counted, not failed

    def error(self, what: str) -> None:
        self.errors += 1
        self.first_error = self.first_error or what


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1): a value that was actually observed."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, math.ceil(q * len(s)) - 1)]


def summarise(r: PhaseResult) -> dict:
    ms = lambda v: None if v is None else round(v * 1000, 3)  # noqa: E731
    out = {"n": r.n, "concurrency": r.concurrency, "errors": r.errors,
           "p50_ms": ms(percentile(r.latencies, 0.5)), "p99_ms": ms(percentile(r.latencies, 0.99)),
           "rps": round(len(r.latencies) / r.wall_s, 1) if r.wall_s else None}
    if r.ttfts:
        out |= {"ttft_p50_ms": ms(percentile(r.ttfts, 0.5)), "ttft_p99_ms": ms(percentile(r.ttfts, 0.99))}
    if r.first_error:
        out["first_error"] = r.first_error[:300]
    if r.odd_status:
        out["unexpected_status"] = {str(k): v for k, v in r.odd_status.items()}
    return out


def session(concurrency: int) -> aiohttp.ClientSession:
    # one keep-alive connection per worker, as an agent's SDK client pool would hold
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency),
                                 timeout=aiohttp.ClientTimeout(total=120))


async def drive(sess: aiohttp.ClientSession, url: str, make_body: Callable[[int], bytes], n: int,
                concurrency: int, stream: bool, start_index: int = 0) -> PhaseResult:
    """Send n POSTs with `concurrency` requests in flight; bodies from make_body(i)."""
    result = PhaseResult(n=n, concurrency=concurrency, wall_s=0.0)
    counter = itertools.count(start_index)
    end = start_index + n
    headers = {"content-type": "application/json", "authorization": "Bearer sk-bench"}

    async def one(i: int) -> None:
        t0 = time.perf_counter()
        first = None
        try:
            async with sess.post(url, data=make_body(i), headers=headers) as resp:
                if stream:
                    tail = b""
                    async for chunk in resp.content.iter_any():
                        if first is None:
                            first = time.perf_counter()
                        tail = (tail + chunk)[-32:]
                    ok = 200 <= resp.status < 300 and tail.endswith(b"data: [DONE]\n\n")
                else:
                    body = await resp.read()
                    ok = 200 <= resp.status < 300 and b'"choices"' in body
                if ok and resp.status != 200:
                    result.odd_status[resp.status] = result.odd_status.get(resp.status, 0) + 1
                t1 = time.perf_counter()
                if not ok:
                    detail = tail if stream else body
                    result.error(f"HTTP {resp.status}: {detail[:300]!r}")
                    return
        except (TimeoutError, aiohttp.ClientError) as e:
            result.error(f"{type(e).__name__}: {e}")
            return
        result.latencies.append(t1 - t0)
        if first is not None:
            result.ttfts.append(first - t0)

    async def worker() -> None:
        while (i := next(counter)) < end:
            await one(i)

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.wall_s = time.perf_counter() - t
    return result
