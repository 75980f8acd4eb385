"""scripts/bench entry point: runs the selected sections and prints their tables (or one JSON document)."""
from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench._harness import Context

# name -> module; add a section by writing bench/<name>.py (see bench/__init__.py) and listing it here
SECTIONS: dict[str, str] = {
    "overhead": "bench.overhead",
    "tui": "bench.tui",
    "analytics": "bench.analytics",
    "replay": "bench.replay",
    "guards": "bench.guards",
    "providers": "bench.providers",
    "storage": "bench.storage",
}


def _machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    # the load average at the start says how much to trust the latency figures
    return {"cpus": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "loadavg": [round(x, 2) for x in os.getloadavg()]}


def _loop_factory():
    try:  # the load generator should cost as little as it can: it shares the cores with what it measures
        import uvloop
        return uvloop.new_event_loop
    except ImportError:
        return None


def main(argv: list[str] | None = None) -> int:
    modules = {name: importlib.import_module(mod) for name, mod in SECTIONS.items()}
    ap = argparse.ArgumentParser(prog="scripts/bench", description="modelux-local benchmarks. Sections: " + "; ".join(
        f"{n}: {m.DESCRIPTION}" for n, m in modules.items()))
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections to run (default: all)")
    ap.add_argument("--quick", action="store_true", help="small N: a smoke run, not figures to quote")
    ap.add_argument("--json", action="store_true", help="print one JSON document on stdout (progress on stderr)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch dir (configs, proxy log, database)")
    ap.add_argument("--proxy-cmd", help="command that runs the proxy (default: this venv's modelux-local); "
                    "`serve --headless --port …` is appended")
    ap.add_argument("--proxy-args", default="", help="extra arguments after `serve`, e.g. --proxy-args=--quiet")
    for m in modules.values():
        if hasattr(m, "add_arguments"):
            m.add_arguments(ap)
    args = ap.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    if unknown := [s for s in chosen if s not in SECTIONS]:
        ap.error(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")

    scratch = Path(tempfile.mkdtemp(prefix="modelux-bench-"))
    report = {"machine": _machine(), "quick": args.quick, "sections": {}}
    failed = False
    try:
        for name in chosen:
            ctx = Context(args=args, workdir=scratch / name, json_mode=args.json)
            ctx.workdir.mkdir()
            ctx.log(f"== {name}")
            started = time.monotonic()
            try:
                with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                    figures = runner.run(modules[name].run(ctx))
            except Exception as e:  # one broken section should not hide the others' figures
                failed = True
                figures = {"error": f"{type(e).__name__}: {e}"}
                ctx.log(f"{name} failed: {figures['error']}")
            figures["seconds"] = round(time.monotonic() - started, 1)
            report["sections"][name] = figures
            if not args.json and "error" not in figures:
                print(modules[name].render(figures), end="\n\n", flush=True)
    finally:
        if args.keep or failed:
            print(f"scratch dir kept: {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        m = report["machine"]
        print(f"machine: {m['cpus']} x {m['cpu']}, Python {m['python']}, load average at start {m['loadavg']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
