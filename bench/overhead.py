"""overhead: what a gateway adds to a call, against a direct call to the same upstream.

Paths, all to the same fake OpenAI upstream (zero latency, zero chunk delay; realistic
answers with usage, SSE with include_usage, so every gateway parses what it would in use):
  direct   the upstream itself
  floor    bench/floor.py: Litestar + uvicorn (uvloop, httptools) + aiohttp forwarding bytes
  ours     modelux-local with tracing, a budget, anomaly checks and a webhook configured
  litellm  (--peer litellm) LiteLLM's proxy, own venv, no database, telemetry off

Layout `percore` (the default on 2+ cores): every gateway pinned to core 0 (taskset), the
load generator and the upstream on core 1, so a gateway's writer thread competes with its
event loop as it does on a busy laptop. `shared` leaves scheduling to the OS.

Client: wrk (one thread, a Lua script for the POST bodies) measures latency and req/s for
chat and streams (for streams, to the last byte); the Python aiohttp client measures the
streams' time to first byte (wrk cannot see it), and everything when wrk is missing.
Rounds interleave cell by cell (direct, floor, ours, peer, then again) and each figure is
the median of the rounds. Gateway CPU per request is read from /proc around each cell.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path

from bench import _wrk
from bench._harness import Context, Proc, get_json, start_proxy, start_upstream, write_proxy_config
from bench._load import drive, session, summarise

DESCRIPTION = "gateway latency, req/s and CPU per request vs direct, the floor and (--peer) LiteLLM"

ROUTING = '[aliases.fast]\ntargets = [{ provider = "up", model = "gpt-4o-mini" }]\n'
# what users run: a budget over every run, anomaly checks (on by default), a webhook subscribed
FEATURES = ('\n[[budgets]]\nmatch = {}\nmax_cost_usd = 1000000.0\nmax_calls = 1000000000\nwarn_at = 0.99\n'
            '\n[[webhooks]]\nurl = "http://127.0.0.1:9/never"\nevents = ["run.aborted", "anomaly.loop"]\n')
MODES = {"chat": False, "stream": True}
PATHS = ("direct", "floor", "ours")


def pinned_upstream(ctx: Context, out: Path) -> tuple[Proc, str, Path]:
    """For the single-cell tools (profile_proxy, thread_cpu): this process and the fake upstream
    on core 1, and a config dir that routes @fast to it with every feature on, as `overhead` does."""
    os.sched_setaffinity(0, {1})
    upstream, up_url = start_upstream(ctx)
    cfg = out / "config"
    write_proxy_config(cfg, up_url, {"bench": ROUTING})
    with open(cfg / "modelux.toml", "a") as f:
        f.write(FEATURES)
    return upstream, up_url, cfg


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("overhead")
    g.add_argument("--layout", choices=("percore", "shared"), help="percore (default with taskset and 2+ cores): "
                   "gateways on core 0, client and upstream on core 1; shared: unpinned")
    g.add_argument("--client", choices=("auto", "wrk", "python"), default="auto",
                   help="load generator for latency/req/s (auto: wrk when installed)")
    g.add_argument("--peer", action="append", choices=("litellm",), default=[],
                   help="also measure this gateway in the same run (LiteLLM: own venv under ~/.cache/modelux-bench)")
    g.add_argument("--no-floor", action="store_true", help="skip the floor (bench/floor.py)")
    g.add_argument("--rounds", type=int, help="interleaved rounds; figures are medians (default 3; --quick: 1)")
    g.add_argument("--seconds", type=float, help="wrk duration per cell (default 4; --quick: 1)")
    g.add_argument("--requests", type=int, help="Python client: N per cell (default 500 at c=1, 2000 otherwise; "
                   "--quick: 50 / 200); also N of the time-to-first-byte cells")
    g.add_argument("--concurrency", default="1,32", help="comma-separated concurrency levels (default 1,32)")
    g.add_argument("--modes", default="chat,stream", help="chat, stream or both (default)")
    g.add_argument("--run-id", default="bench-1", help="run_id tag of our proxied calls")


def _body(model: str, stream: bool, tags: dict[str, str] | None) -> tuple[bytes, bytes]:
    """(head, tail) of a body with the request number between: every prompt differs (as in a real
    run, and so the loop detector is not what gets measured) without json.dumps per request."""
    body = {"model": model, "max_tokens": 64, "messages": [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "bench request #IDX#: summarise the quarterly numbers in one line"}]}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    if tags:
        body["mlx:tags"] = tags
    head, tail = json.dumps(body).encode().split(b"#IDX#")
    return head, tail


def _maker(head: bytes, tail: bytes, base: int = 0):
    return lambda i: head + str(base + i).encode() + tail


def _layout(ctx: Context) -> str:
    if ctx.args.layout:
        return ctx.args.layout
    return "percore" if shutil.which("taskset") and (os.cpu_count() or 1) >= 2 else "shared"


async def run(ctx: Context) -> dict:
    from bench import peers

    args = ctx.args
    layout = _layout(ctx)
    use_wrk = args.client == "wrk" or (args.client == "auto" and _wrk.available())
    if args.client == "wrk" and not _wrk.available():
        raise RuntimeError("--client wrk: wrk is not installed")
    rounds = args.rounds or (1 if ctx.quick else 3)
    seconds = args.seconds or (1 if ctx.quick else 4)
    levels = [int(c) for c in args.concurrency.split(",")]
    modes = [m for m in args.modes.split(",") if m]
    if unknown := [m for m in modes if m not in MODES]:
        raise ValueError(f"--modes: unknown {unknown}; known: {list(MODES)}")
    gateway_core = ["taskset", "-c", "0"] if layout == "percore" else []
    saved_affinity = os.sched_getaffinity(0)
    if layout == "percore":  # this process, the upstream and wrk (children inherit it) on core 1
        os.sched_setaffinity(0, {1})
    procs: dict = {}
    figures: dict = {"layout": layout, "client": {
        "latency_rps": "wrk (1 thread)" if use_wrk else "python aiohttp", "ttfb": "python aiohttp"},
        "upstream": "tests.fakes.openai_upstream (latency 0, chunk delay 0)", "rounds": rounds,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()], "startup_s": {}, "cells": [], "summary": []}
    try:
        procs["direct"], up_url = start_upstream(ctx)
        targets = {"direct": (up_url + "/chat/completions", "gpt-4o-mini", None)}
        if not args.no_floor:
            procs["floor"], origin, figures["startup_s"]["floor"] = peers.start_floor(ctx, up_url, gateway_core)
            targets["floor"] = (origin + "/v1/chat/completions", "gpt-4o-mini", None)
        config_dir = ctx.workdir / "config"
        write_proxy_config(config_dir, up_url, {"bench": ROUTING})
        with open(config_dir / "modelux.toml", "a") as f:
            f.write(FEATURES)
        ctx.log(f"overhead: layout {layout}, client {figures['client']['latency_rps']}; starting the gateways ...")
        t0 = time.monotonic()
        procs["ours"], ours_origin = start_proxy(ctx, config_dir, ctx.workdir / "data", prefix=gateway_core)
        figures["startup_s"]["ours"] = round(time.monotonic() - t0, 2)
        targets["ours"] = (ours_origin + "/v1/chat/completions", "@fast", {"run_id": args.run_id})
        if "litellm" in args.peer:
            procs["litellm"], origin, took, version = peers.start_litellm(ctx, up_url, "gpt-4o-mini", gateway_core)
            figures["startup_s"]["litellm"] = round(took, 2)
            figures["litellm_version"] = version
            targets["litellm"] = (origin + "/v1/chat/completions", "gpt-4o-mini", None)
        figures["idle_rss_mb"] = {p: _rss_mb(procs[p].pid) for p in targets if p != "direct"}
        sent = {p: 0 for p in targets}

        # warm-up: first-call costs (imports, connection pools, caches) stay out of every cell
        for path, (url, model, tags) in targets.items():
            for mode in modes:
                async with session(8) as s:
                    r = await drive(s, url, _maker(*_body(model, MODES[mode], tags), 9 * 10**8),
                                    40 if ctx.quick else 300, 8, MODES[mode])
                sent[path] += r.n - r.errors
                if r.errors and path != "litellm":
                    raise RuntimeError(f"warm-up {path}/{mode}: {r.errors} errors, first: {r.first_error}")

        cells = [(mode, c) for mode in modes for c in levels]
        if use_wrk and "stream" in modes:
            cells.append(("ttfb", 1))  # the Python client's time to first byte of streams, at c=1
        base = 10**7
        for rnd in range(rounds):
            for mode, c in cells:
                for path, (url, model, tags) in targets.items():
                    stream = mode != "chat"
                    head, tail = _body(model, stream, tags)
                    base += 10**6
                    proc = procs[path]
                    before = proc.cpu()
                    up_before = procs["direct"].cpu()
                    if use_wrk and mode != "ttfb":
                        lua = _wrk.script(ctx.workdir / f"{path}-{mode}.lua", head, tail)
                        row = _wrk.run(url, lua, c, seconds)
                    else:
                        n = args.requests or (50 if ctx.quick else 500) if c == 1 else \
                            (args.requests or (200 if ctx.quick else 2000))
                        async with session(c) as s:
                            await drive(s, url, _maker(head, tail, base + 5 * 10**5), c * 2, c, stream)
                            sent[path] += c * 2
                            before, up_before = proc.cpu(), procs["direct"].cpu()
                            r = await drive(s, url, _maker(head, tail, base), n, c, stream)
                        row = summarise(r)
                    done = max(1, row["n"] - row["errors"])
                    sent[path] += row["n"] - row["errors"]
                    row |= {"round": rnd + 1, "mode": mode, "path": path,
                            "cpu_ms_per_req": round((proc.cpu() - before) * 1000 / done, 3),
                            "upstream_cpu_ms_per_req": round((procs["direct"].cpu() - up_before) * 1000 / done, 3)}
                    figures["cells"].append(row)
                    ctx.log(f"  r{rnd + 1} {mode:6} c={c:<3} {path:8} p50 {row['p50_ms']} ms  p99 {row['p99_ms']} ms  "
                            f"ttfb {row.get('ttft_p50_ms', '-')}  {row['rps']} req/s  cpu {row['cpu_ms_per_req']} "
                            f"ms/req  errors {row['errors']}")
        figures["summary"] = _summary(figures["cells"], list(targets))
        figures["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        figures["recorded"] = _recorded(ours_origin, args.run_id, sent["ours"])
    finally:
        for p in procs.values():
            p.stop()
        os.sched_setaffinity(0, saved_affinity)
    return figures


def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        return round(kb / 1024, 1)
    except (OSError, StopIteration):
        return None


def _median(rows: list[dict], key: str):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return round(statistics.median(vals), 3) if vals else None


def _summary(cells: list[dict], paths: list[str]) -> list[dict]:
    """Per (mode, concurrency): the median of the rounds per path, the added latency over direct
    and the ratios ours/direct, ours/floor, ours/<peer>."""
    out = []
    keys = sorted({(r["mode"], r["concurrency"]) for r in cells}, key=lambda k: (list(MODES).index(k[0])
                                                                                 if k[0] in MODES else 9, k[1]))
    for mode, c in keys:
        entry: dict = {"mode": mode, "concurrency": c, "paths": {}}
        for path in paths:
            rows = [r for r in cells if r["mode"] == mode and r["concurrency"] == c and r["path"] == path]
            if not rows:
                continue
            m = {k: _median(rows, k) for k in ("p50_ms", "p99_ms", "rps", "ttft_p50_ms", "ttft_p99_ms",
                                               "cpu_ms_per_req")}
            m["errors"] = sum(r["errors"] for r in rows)
            m["first_error"] = next((r["first_error"] for r in rows if r.get("first_error")), None)
            entry["paths"][path] = m
        d = entry["paths"].get("direct", {})
        for path, m in entry["paths"].items():
            if path == "direct":
                continue
            for k in ("p50_ms", "p99_ms", "ttft_p50_ms"):
                if m.get(k) is not None and d.get(k) is not None:
                    m[f"added_{k}"] = round(m[k] - d[k], 3)
            if m.get("rps") and d.get("rps"):
                m["rps_x_direct"] = round(m["rps"] / d["rps"], 3)
        ours = entry["paths"].get("ours", {})
        entry["ratios"] = {f"ours/{p}": round(ours["rps"] / m["rps"], 3)
                           for p, m in entry["paths"].items() if p != "ours" and ours.get("rps") and m.get("rps")}
        out.append(entry)
    return out


def _recorded(origin: str, run_id: str, sent: int) -> dict:
    """Did every proxied call reach the store? GET /mlx/v1/runs/{run_id}, polled (the writer may lag)."""
    started = time.monotonic()
    calls, error = None, None
    while time.monotonic() - started < 30:
        try:
            calls = get_json(f"{origin}/mlx/v1/runs/{run_id}", timeout=30)["calls"]
            error = None
        except Exception as e:  # the management API is not the thing measured: report, don't fail
            error = f"{type(e).__name__}: {e}"
        if calls is not None and calls >= sent:
            break
        time.sleep(0.25)
    out = {"run_id": run_id, "sent_ok": sent, "recorded_calls": calls, "drain_s": round(time.monotonic() - started, 2)}
    if error:
        out["error"] = error[:300]
    return out


def _cell(v, width, fmt="{:.2f}"):
    return (fmt.format(v) if isinstance(v, (int, float)) else "-").rjust(width)


def render(f: dict) -> str:
    paths = [p for p in ("direct", "floor", "ours", "litellm") if any(p in e["paths"] for e in f["summary"])]
    lines = [f"overhead — layout {f['layout']}; latency and req/s by {f['client']['latency_rps']}, time to first "
             f"byte by {f['client']['ttfb']}; median of {f['rounds']} round(s); upstream {f['upstream']}",
             f"load average at start {f['loadavg_start']}, at end {f.get('loadavg_end')}", ""]
    head = "cell          figure            " + "".join(p.rjust(12) for p in paths)
    lines.append(head)
    for e in f["summary"]:
        label = f"{e['mode']} c={e['concurrency']}"
        figs = [("p50 ms", "p50_ms", "{:.2f}"), ("p99 ms", "p99_ms", "{:.2f}"), ("req/s", "rps", "{:.0f}"),
                ("cpu ms/req", "cpu_ms_per_req", "{:.3f}")]
        if e["mode"] == "ttfb":
            figs = [("ttfb p50 ms", "ttft_p50_ms", "{:.2f}"), ("ttfb p99 ms", "ttft_p99_ms", "{:.2f}"),
                    ("stream p50 ms", "p50_ms", "{:.2f}")]
        for name, key, fmt in figs:
            lines.append(f"{label:13} {name:17}" + "".join(_cell(e["paths"].get(p, {}).get(key), 12, fmt) for p in paths))
            label = ""
        for p in paths:
            if e["paths"].get(p, {}).get("errors"):
                lines.append(f"{'':13} errors {p}: {e['paths'][p]['errors']} ({e['paths'][p]['first_error']})")
    lines += ["", "added over direct (ms) and ratios (req/s)",
              "cell          " + "".join(p.rjust(26) for p in paths if p != "direct")]
    for e in f["summary"]:
        row = f"{e['mode'] + ' c=' + str(e['concurrency']):13} "
        for p in paths:
            if p == "direct":
                continue
            m = e["paths"].get(p, {})
            if e["mode"] == "ttfb":
                txt = f"ttfb {_fmt(m.get('added_ttft_p50_ms'), '{:+.2f}')}"
            else:
                txt = (f"{_fmt(m.get('added_p50_ms'), '{:+.2f}')}/{_fmt(m.get('added_p99_ms'), '{:+.2f}')} "
                       f"x{_fmt(m.get('rps_x_direct'), '{:.3f}')}")
            row += txt.rjust(26)
        lines.append(row)
    lines += ["", "ours / other, req/s:"]
    for e in f["summary"]:
        if e["mode"] != "ttfb" and e["ratios"]:
            lines.append(f"  {e['mode']} c={e['concurrency']}: " + ", ".join(f"{k} {v:.3f}" for k, v in e["ratios"].items()))
    lines.append("idle RSS MB: " + ", ".join(f"{k} {v}" for k, v in f.get("idle_rss_mb", {}).items())
                 + "; start-up s: " + ", ".join(f"{k} {v}" for k, v in f.get("startup_s", {}).items()))
    if f.get("litellm_version"):
        lines.append(f"LiteLLM {f['litellm_version']}")
    if rec := f.get("recorded"):
        lines.append(f"store: {rec['recorded_calls']} of {rec['sent_ok']} calls through ours recorded under run "
                     f"{rec['run_id']} (waited {rec['drain_s']}s)" + (f"; {rec['error']}" if "error" in rec else ""))
    lines += ["", "as a README table:", "", markdown(f)]
    return "\n".join(lines)


def _fmt(v, fmt):
    return fmt.format(v) if isinstance(v, (int, float)) else "-"


def markdown(f: dict) -> str:
    """The README's table: the issue's figures per gateway, ours/floor and ours/peer."""
    cell = {(e["mode"], e["concurrency"]): e["paths"] for e in f["summary"]}
    gateways = [p for p in ("ours", "floor", "litellm") if any(p in e for e in cell.values())]

    def get(mode, c, path, key):
        return cell.get((mode, c), {}).get(path, {}).get(key)

    def pair(a, b, fmt="{:+.2f}"):
        return f"{_fmt(a, fmt)} / {_fmt(b, fmt)}"

    def rps(mode, path):
        return f"{_fmt(get(mode, 32, path, 'rps'), '{:,.0f}')} (x{_fmt(get(mode, 32, path, 'rps_x_direct'), '{:.3f}')})"

    rows = [
        ("chat c=1: added p50 / p99, ms", lambda p: pair(get("chat", 1, p, "added_p50_ms"), get("chat", 1, p, "added_p99_ms"))),
        ("stream c=1: added p50 / first byte, ms", lambda p: pair(get("stream", 1, p, "added_p50_ms"),
                                                                   get("ttfb", 1, p, "added_ttft_p50_ms"))),
        ("chat c=32: req/s (x direct)", lambda p: rps("chat", p)),
        ("stream c=32: req/s (x direct)", lambda p: rps("stream", p)),
        ("CPU per request at c=32, chat / stream, ms", lambda p: pair(get("chat", 32, p, "cpu_ms_per_req"),
                                                                       get("stream", 32, p, "cpu_ms_per_req"), "{:.2f}")),
        ("idle RSS MB, start-up s", lambda p: f"{f.get('idle_rss_mb', {}).get(p, '-')}, {f.get('startup_s', {}).get(p, '-')}"),
    ]
    names = {"ours": "modelux-local", "floor": "floor", "litellm": f"LiteLLM {f.get('litellm_version', '')}".strip()}
    lines = ["| | " + " | ".join(names[g] for g in gateways) + " |", "|---" * (len(gateways) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(fn(g) for g in gateways) + " |" for label, fn in rows]
    ratios = [f"{e['mode']} c={e['concurrency']}: " + ", ".join(f"{k} {v:.2f}" for k, v in e["ratios"].items())
              for e in f["summary"] if e["mode"] != "ttfb" and e["ratios"]]
    return "\n".join(lines) + "\n\nreq/s ratios: " + "; ".join(ratios)
