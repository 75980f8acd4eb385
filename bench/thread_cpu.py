"""CPU per request of each proxy thread (event loop, writer, ...), pinned as `overhead` pins it,
read from /proc while wrk drives the proxy: where the time goes without a profiler's pauses.

    .venv/bin/python -m bench.thread_cpu --mode chat --concurrency 32 --seconds 8
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from bench import _wrk, peers
from bench._harness import Context, start_proxy
from bench.overhead import _body, pinned_upstream

_TICK = os.sysconf("SC_CLK_TCK")


def threads(pid: int) -> dict[str, float]:
    """CPU seconds per thread name (threads of one name summed)."""
    out: dict[str, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name = "loop" if int(tid) == pid else Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip() + f"-{tid}"
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / _TICK
    return out


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.thread_cpu")
    ap.add_argument("--mode", choices=("chat", "stream"), default="chat")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--proxy-args", default="")
    ap.add_argument("--proxy-cmd", help="another checkout's proxy command, to compare (as scripts/bench --proxy-cmd)")
    ap.add_argument("--floor", action="store_true", help="measure bench/floor.py (the bare pass-through) instead")
    args = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix="modelux-threadcpu-"))
    ctx = Context(args=argparse.Namespace(quick=False, proxy_cmd=args.proxy_cmd, proxy_args=args.proxy_args), workdir=out,
                  json_mode=False)
    upstream, up_url, cfg = pinned_upstream(ctx, out)
    if args.floor:
        proxy, origin, _ = peers.start_floor(ctx, up_url, ["taskset", "-c", "0"])
    else:
        proxy, origin = start_proxy(ctx, cfg, out / "data", prefix=["taskset", "-c", "0"])
    try:
        head, tail = _body("@fast", args.mode == "stream", {"run_id": "threadcpu-1"})
        lua = _wrk.script(out / "load.lua", head, tail)
        _wrk.run(origin + "/v1/chat/completions", lua, 8, 2)  # warm-up
        for _ in range(args.rounds):
            before = threads(proxy.pid)
            fig = _wrk.run(origin + "/v1/chat/completions", lua, args.concurrency, args.seconds)
            after = threads(proxy.pid)
            n = fig["rps"] * args.seconds
            per = {k: (after[k] - before.get(k, 0.0)) * 1000 / n for k in after}
            print(f"{args.mode} c={args.concurrency}: {fig['rps']:.0f} req/s, p50 {fig['p50_ms']:.2f} ms, "
                  f"p99 {fig['p99_ms']:.2f} ms; CPU ms/req total {sum(per.values()):.3f}: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]) if v > 0.0005))
    finally:
        proxy.stop()
        upstream.stop()


if __name__ == "__main__":
    main()
