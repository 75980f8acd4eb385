"""Profile the proxy under load, pinned as `overhead` pins it: py-spy (--native --idle) on core 0's
proxy while wrk (core 1) drives it; prints where the time goes per thread and the top frames.

    .venv/bin/python -m bench.profile_proxy --mode chat --concurrency 1 --seconds 20 [--out DIR]

py-spy is not a dependency: `pip install py-spy` into the venv first. With --native (the default)
py-spy pauses the proxy at each sample, so the load figures printed are lower than unprofiled;
--nonblocking samples Python frames only, without pausing. The raw collapsed stacks
stay in --out (flamegraph.pl or speedscope read them).
"""
from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import _wrk
from bench._harness import Context, start_proxy
from bench.overhead import _body, pinned_upstream


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.profile_proxy")
    ap.add_argument("--mode", choices=("chat", "stream"), default="chat")
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--nonblocking", action="store_true", help="py-spy without --native: does not pause the proxy")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="modelux-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    ctx = Context(args=argparse.Namespace(quick=False, proxy_cmd=None, proxy_args=""), workdir=out, json_mode=False)
    upstream, up_url, cfg = pinned_upstream(ctx, out)
    proxy, origin = start_proxy(ctx, cfg, out / "data", prefix=["taskset", "-c", "0"])
    try:
        head, tail = _body("@fast", args.mode == "stream", {"run_id": "profile-1"})
        lua = _wrk.script(out / "load.lua", head, tail)
        _wrk.run(origin + "/v1/chat/completions", lua, 8, 3)  # warm-up
        raw = out / "stacks.txt"
        # --native needs py-spy to pause the process per sample (which slows it); --nonblocking cannot show native frames
        mode = ["--nonblocking"] if args.nonblocking else ["--native"]
        spy = subprocess.Popen([pyspy, "record", *mode, "--idle", "--threads", "--rate", str(args.rate),
                                "--format", "raw", "-o", str(raw), "-p", str(proxy.pid),
                                "-d", str(args.seconds + 1)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1)
        figures = _wrk.run(origin + "/v1/chat/completions", lua, args.concurrency, args.seconds)
        _, err = spy.communicate(timeout=args.seconds + 60)
        if not raw.exists():
            raise RuntimeError(f"py-spy wrote no profile: {err.decode(errors='replace')[-500:]}")
        print(f"load: {figures}")
        report(raw, args.top)
        print(f"collapsed stacks: {raw}")
    finally:
        proxy.stop()
        upstream.stop()


IDLE = ("epoll_pwait", "epoll_wait", "clock_nanosleep", "pthread_cond_wait", "pthread_cond_timedwait", "sem_wait",
        "sem_timedwait", "futex", "select", "poll", "PyThread_acquire_lock_timed")


def _idle(frames: list[str]) -> bool:
    # a thread waiting (for I/O, a lock, a queue, a sleep) rather than running: --idle samples it too
    return any(frames[-1].startswith(w) for w in IDLE) or any(
        f.startswith(("PyThread_acquire_lock_timed", "_queue_SimpleQueue_get", "Condition.wait", "uv__io_poll"))
        for f in frames[-4:])


def report(raw: Path, top: int) -> None:
    """Per thread: share of samples busy (not waiting); for the busy samples of the event loop
    thread and of the writer, the frames they were in (inclusive) and the leaves (self)."""
    per: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    busy_incl: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    busy_self: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        n = int(n)
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[-1]
        idle = _idle(frames)
        per[thread]["idle" if idle else "busy"] += n
        if not idle:
            busy_self[thread][frames[-1]] += n
            for f in set(frames[1:]):
                busy_incl[thread][f] += n
    for thread, c in sorted(per.items(), key=lambda kv: -kv[1]["busy"]):
        total = c["busy"] + c["idle"]
        print(f"{thread}: busy {100 * c['busy'] / total:.1f}% of {total} samples")
    for thread in ("MainThread", "modelux-writer"):
        busy = per[thread]["busy"]
        if not busy:
            continue
        print(f"\n{thread}, busy samples ({busy}): self")
        for f, n in busy_self[thread].most_common(top):
            print(f"  {100 * n / busy:5.1f}%  {f[:140]}")
        print(f"{thread}, busy samples: inclusive")
        for f, n in busy_incl[thread].most_common(top * 2):
            print(f"  {100 * n / busy:5.1f}%  {f[:140]}")


if __name__ == "__main__":
    main()
