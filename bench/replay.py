"""replay: throughput and peak memory of `simulate`, live and reprice, over a recorded history.

The history (500 agent runs of 24 calls, ~12,000 requests over the last 24 h) is written
straight into a fresh database through the storage Writer, with answers made by the
built-in mock provider in-process: what is measured is the replay, not the recording.
Each `simulate` runs as its own `modelux-local` process, so its peak RSS (wait4's
ru_maxrss) is the replay's alone. The mock models answer without delay here: the figure is
the engine's own throughput (routing, providers, writer, evaluator), not a model's latency.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import time
from pathlib import Path

from bench._harness import ROOT, Context, modelux_cmd

DESCRIPTION = "simulate throughput (runs/s, requests/s) and peak memory, live and reprice, on 500 recorded runs"

SERVER_TOML = """[routing]
default = "agent-v2"
[providers.mock]
kind = "mock"
[providers.mock.models.mock-pro]
output_tokens = 48
[providers.mock.models.mock-lite]
output_tokens = 48
[prices."mock/mock-pro"]
input = 2.0
output = 8.0
[prices."mock/mock-lite"]
input = 0.2
output = 0.8
[prices."mock/mock-embed"]
input = 0.02
"""
ROUTING = """[aliases.planner]
targets = [{{ provider = "mock", model = "mock-pro" }}]
[aliases.executor]
targets = [{{ provider = "mock", model = "{executor}" }}]
[aliases.summarizer]
targets = [{{ provider = "mock", model = "mock-lite" }}]
[aliases.embedder]
targets = [{{ provider = "mock", model = "mock-embed" }}]
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("replay")
    g.add_argument("--replay-runs", type=int, help="recorded runs (default 500; --quick: 40)")
    g.add_argument("--replay-calls", type=int, default=24, help="calls per run (default 24)")
    g.add_argument("--replay-concurrency", type=int, default=16, help="simulate --concurrency (default 16)")


async def _record(config_dir: Path, db: Path, runs: int, calls: int) -> int:
    """Writes the history: planner, tool steps (every fifth streamed), summary, per run."""
    from modelux_local.config.loader import load_dir
    from modelux_local.core.records import CallRecord
    from modelux_local.pricing import PriceBook
    from modelux_local.providers import ChatRequest, build_provider
    from modelux_local.storage import Writer

    cs = load_dir(config_dir)
    prices = PriceBook(cs.server.prices, cs.server.providers)
    mock = build_provider("mock", cs.server.providers["mock"])
    writer = Writer(db)
    writer.start()
    rng = random.Random(7)
    start = time.time() - 20 * 3600
    n = 0
    for i in range(runs):
        rid = f"bench_run_{i:04d}"
        t = start + i * 20 * 3600 / runs
        for k in range(calls):
            alias, model = (("@planner", "mock-pro") if k == 0 else ("@summarizer", "mock-lite") if k == calls - 1
                            else ("@executor", "mock-pro"))
            body = {"model": alias, "messages": [
                {"role": "system", "content": "You are a research agent. Be precise and cite sources. " * 4},
                {"role": "user", "content": f"run {i} step {k}: look up tide table {rng.randrange(10_000)} and report"}]}
            stream = k % 5 == 2
            if stream:
                body["stream"] = True
            res = await mock.chat(ChatRequest({**body, "model": model}, model, False, 60))
            latency = rng.uniform(200, 900) if model == "mock-pro" else rng.uniform(50, 200)
            await writer.submit(CallRecord(
                call_id=f"call_bench_{i:04d}_{k:02d}", run_id=rid, tags={"run_id": rid, "agent": "bench"},
                endpoint="chat", started_at=t, alias=alias, config="agent-v2", config_version=cs.versions["agent-v2"],
                provider="mock", model=model, status="ok", http_status=200, usage=res.usage, latency_ms=latency,
                ttft_ms=None, stream=stream, attempts=[], decision={}, error=None,
                request=json.dumps({**body, "mlx:tags": {"run_id": rid}}).encode(), response=res.body,
                price_book=prices))
            t += latency / 1000 + rng.uniform(0.05, 0.3)
            n += 1
    await asyncio.to_thread(writer.close)
    return n


def _simulate(ctx: Context, config_dir: Path, data_dir: Path, mode: str) -> dict:
    cmd = [*modelux_cmd(ctx), "simulate", "--replay=24h", "--config=@agent-v3", "--mode", mode, "--json",
           "--concurrency", str(ctx.args.replay_concurrency), "--config-dir", str(config_dir),
           "--data-dir", str(data_dir)]
    out_path = ctx.workdir / f"simulate-{mode}.json"
    t0 = time.perf_counter()
    with open(out_path, "wb") as out, open(ctx.workdir / f"simulate-{mode}.log", "wb") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"simulate --mode {mode} exited {proc.returncode}: "
                           f"{(ctx.workdir / f'simulate-{mode}.log').read_text()[-2000:]}")
    rep = json.loads(out_path.read_text())
    return {"mode": mode, "runs": rep["runs_replayed"], "requests": rep["requests"], "seconds": round(wall, 2),
            "runs_per_s": round(rep["runs_replayed"] / wall, 1), "requests_per_s": round(rep["requests"] / wall),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "cost_delta": rep["delta"]["mean_cost_per_run"], "replay_cost_usd": rep["replay_cost_usd"]}


async def run(ctx: Context) -> dict:
    runs = ctx.args.replay_runs or (40 if ctx.quick else 500)
    config_dir, data_dir = ctx.workdir / "config", ctx.workdir / "data"
    config_dir.mkdir()
    (config_dir / "modelux.toml").write_text(SERVER_TOML)
    (config_dir / "agent-v2.toml").write_text(ROUTING.format(executor="mock-pro"))
    (config_dir / "agent-v3.toml").write_text(ROUTING.format(executor="mock-lite"))
    ctx.log(f"recording {runs} runs x {ctx.args.replay_calls} calls")
    t0 = time.perf_counter()
    n = await _record(config_dir, data_dir / "modelux.db", runs, ctx.args.replay_calls)
    recorded_s = time.perf_counter() - t0
    phases = []
    for mode in ("reprice", "live"):
        ctx.log(f"simulate --mode {mode}")
        phases.append(await asyncio.to_thread(_simulate, ctx, config_dir, data_dir, mode))
    return {"recorded_runs": runs, "recorded_requests": n, "record_seconds": round(recorded_s, 1),
            "concurrency": ctx.args.replay_concurrency, "phases": phases}


def render(f: dict) -> str:
    lines = [f"replay — simulate over {f['recorded_runs']} recorded runs / {f['recorded_requests']:,} requests "
             f"(mock provider, no model delay, --concurrency {f['concurrency']})", "",
             "mode      runs  requests  seconds  runs/s  requests/s  cpu s  peak RSS MB  cost Δ    replay cost"]
    for p in f["phases"]:
        lines.append(f"{p['mode']:<8} {p['runs']:5} {p['requests']:9,} {p['seconds']:8.2f} {p['runs_per_s']:7.1f} "
                     f"{p['requests_per_s']:11,} {p['cpu_s']:6.2f} {p['peak_rss_mb']:12.1f}  "
                     f"{p['cost_delta'] * 100:+6.1f}%   ${p['replay_cost_usd']:.4f}")
    return "\n".join(lines)
