"""tui: the proxy's latency at a steady request rate with the TUI open versus headless.

`serve` in a terminal runs the proxy on its own thread and event loop and the Textual app in the
main thread, reading the database once a second. What that costs the proxy is shared CPU and the
GIL; this section measures it: the same proxy command twice, once `--headless`, once under a
pseudo-terminal (so the TUI opens and redraws a live run whose cost climbs), each at the same
fixed request rate (open loop: requests are sent on schedule, not when the previous one ends,
so a slower proxy shows up as latency rather than as fewer requests). Rounds alternate the two.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import pty
import statistics
import subprocess
import threading
import time
import urllib.error
import urllib.request

import aiohttp

from bench._harness import (
    ROOT,
    Context,
    cpu_seconds,
    free_port,
    modelux_cmd,
    start_proxy,
    start_upstream,
    write_proxy_config,
)
from bench._load import percentile

DESCRIPTION = "proxy p50/p99 at a steady rate with the TUI open (serve in a terminal) versus --headless"

ROUTING = '[aliases.fast]\ntargets = [{ provider = "up", model = "gpt-4o-mini" }]\n'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("tui")
    g.add_argument("--tui-rate", type=float, default=100.0, help="requests per second (default 100)")
    g.add_argument("--tui-seconds", type=float, help="seconds of load per phase (default 20; --quick: 4)")
    g.add_argument("--tui-rounds", type=int, help="headless/TUI pairs, alternating (default 2; --quick: 1)")


class PtyProxy:
    """`serve` (no --headless) with a pseudo-terminal, so the TUI runs; its screen output drained."""

    def __init__(self, ctx: Context, config_dir, data_dir, port: int):
        master, slave = pty.openpty()
        self.master = master
        env = {**os.environ, "BENCH_UPSTREAM_KEY": "sk-bench", "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "35"}
        self.popen = subprocess.Popen([*modelux_cmd(ctx), "serve", "--port", str(port), "--config-dir", str(config_dir),
                                       "--data-dir", str(data_dir)], cwd=ROOT, stdin=slave, stdout=slave, stderr=slave,
                                      env=env, start_new_session=True)
        os.close(slave)
        self.drawn = 0
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:  # a terminal nobody reads would block the TUI's writes
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.drawn += len(chunk)

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.write(self.master, b"q")  # the TUI's own quit: stops the proxy gracefully
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        os.close(self.master)


def _wait_healthy(origin: str, proc, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"proxy exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(origin + "/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise RuntimeError("proxy /healthz not 200")


async def steady(url: str, rate: float, seconds: float, run_id: str) -> dict:
    """Open loop: one request every 1/rate s, whatever the answers do; latency per request."""
    lat: list[float] = []
    errors = 0
    n = int(rate * seconds)
    headers = {"content-type": "application/json", "authorization": "Bearer sk-bench"}

    async def one(sess, i: int) -> None:
        nonlocal errors
        body = ('{"model": "@fast", "messages": [{"role": "user", "content": "steady request %d"}], '
                '"mlx:tags": {"run_id": "%s", "agent": "bench"}}' % (i, run_id)).encode()
        t0 = time.perf_counter()
        try:
            async with sess.post(url, data=body, headers=headers) as r:
                await r.read()
                if r.status != 200:
                    errors += 1
                    return
        except (TimeoutError, aiohttp.ClientError):
            errors += 1
            return
        lat.append(time.perf_counter() - t0)

    conn = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=60)) as sess:
        start = time.perf_counter()
        tasks = []
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(sess, i)))
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - start
    ms = lambda v: None if v is None else round(v * 1000, 3)  # noqa: E731
    return {"n": n, "errors": errors, "p50_ms": ms(percentile(lat, 0.5)), "p99_ms": ms(percentile(lat, 0.99)),
            "achieved_rps": round(len(lat) / wall, 1)}


async def run(ctx: Context) -> dict:
    a = ctx.args
    seconds = a.tui_seconds or (4 if ctx.quick else 20)
    rounds = a.tui_rounds or (1 if ctx.quick else 2)
    upstream, up_url = start_upstream(ctx)
    config_dir = ctx.workdir / "config"
    write_proxy_config(config_dir, up_url, {"bench": ROUTING})
    figures: dict = {"rate_rps": a.tui_rate, "phase_seconds": seconds, "phases": []}
    try:
        for rnd in range(rounds):
            for mode in ("headless", "tui"):
                data_dir = ctx.workdir / f"data-{mode}-{rnd}"
                data_dir.mkdir()
                port = free_port()
                origin = f"http://127.0.0.1:{port}"
                if mode == "headless":
                    proc, origin = start_proxy(ctx, config_dir, data_dir, port)
                    popen, stop = proc.popen, proc.stop
                else:
                    pp = PtyProxy(ctx, config_dir, data_dir, port)
                    popen, stop = pp.popen, pp.stop
                try:
                    _wait_healthy(origin, popen)
                    url = origin + "/v1/chat/completions"
                    await steady(url, a.tui_rate, min(2.0, seconds), f"warm-{mode}")  # pools, imports, first draw
                    cpu0 = _cpu(popen.pid)
                    row = await steady(url, a.tui_rate, seconds, f"bench-{mode}-{rnd}")
                    row["proxy_cpu_ms_per_req"] = round((_cpu(popen.pid) - cpu0) * 1000 / max(1, row["n"]), 3)
                    if mode == "tui":
                        row["tui_bytes_drawn"] = pp.drawn
                        if pp.drawn == 0:
                            raise RuntimeError("the TUI drew nothing: it did not open")
                finally:
                    stop()
                row |= {"mode": mode, "round": rnd}
                figures["phases"].append(row)
                ctx.log(f"  round {rnd} {mode:8} p50 {row['p50_ms']} ms  p99 {row['p99_ms']} ms  "
                        f"{row['achieved_rps']} req/s  cpu {row['proxy_cpu_ms_per_req']} ms/req  errors {row['errors']}")
    finally:
        upstream.stop()
    for mode in ("headless", "tui"):
        rows = [r for r in figures["phases"] if r["mode"] == mode]
        figures[mode] = {k: round(statistics.median(r[k] for r in rows), 3)
                         for k in ("p50_ms", "p99_ms", "proxy_cpu_ms_per_req")}
    figures["p99_delta_ms"] = round(figures["tui"]["p99_ms"] - figures["headless"]["p99_ms"], 3)
    return figures


def _cpu(pid: int) -> float:
    return cpu_seconds(pid)


def render(f: dict) -> str:
    lines = [f"tui — the proxy at a steady {f['rate_rps']:g} req/s for {f['phase_seconds']:g}s per phase, "
             "TUI open (serve in a pty) vs --headless", "",
             "round  mode          n  err   p50 ms   p99 ms   req/s  process cpu ms/req"]
    for r in f["phases"]:
        lines.append(f"{r['round']:5}  {r['mode']:9} {r['n']:5} {r['errors']:4} {r['p50_ms'] or 0:8.2f} "
                     f"{r['p99_ms'] or 0:8.2f} {r['achieved_rps']:7.0f} {r['proxy_cpu_ms_per_req']:17.3f}")
    h, t = f["headless"], f["tui"]
    lines += ["", f"median over rounds: p99 headless {h['p99_ms']:.2f} ms, TUI open {t['p99_ms']:.2f} ms "
                  f"(Δ {f['p99_delta_ms']:+.2f} ms); p50 {h['p50_ms']:.2f} -> {t['p50_ms']:.2f} ms; "
                  f"process cpu/req (proxy + TUI) {h['proxy_cpu_ms_per_req']:.3f} -> {t['proxy_cpu_ms_per_req']:.3f} ms"]
    return "\n".join(lines)
