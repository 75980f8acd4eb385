"""guards: what budgets and anomaly checks cost the proxy, on versus off, against the same upstream.

Three proxies in turn, same fake OpenAI upstream (zero latency), same load:
  off       MODELUX_ANALYTICS=off: no guard on the hot path, no anomaly hook on the writer
  on        the analytics room attached, no [[budgets]]: the abort check per call, anomaly
            fingerprints per record on the writer thread, background jobs
  budgets   plus a `match = {}` budget (cost, calls, tokens, duration, warn_at) on every call:
            reservation, settlement (usage read back, priced), stream chunks counted
All calls belong to one run, each with a different prompt (no loop anomaly fires).
The steadier figure is the proxy's CPU time per request; latency deltas are noisy on a shared box.
"""
from __future__ import annotations

import argparse
import json
import os

from bench._harness import Context, start_proxy, start_upstream, write_proxy_config
from bench._load import drive, session, summarise

DESCRIPTION = "proxy CPU and latency with budgets and anomaly checks off / on / on with a budget"

ROUTING = '[aliases.fast]\ntargets = [{ provider = "up", model = "gpt-4o-mini" }]\n'
BUDGET = """
[[budgets]]
match = {}
max_cost_usd = 1000.0
max_calls = 100000000
max_tokens = 100000000000
max_duration_s = 86400
warn_at = 0.99
"""
VARIANTS = ("off", "on", "budgets")
ROUNDS = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("guards")
    g.add_argument("--guards-requests", type=int, help="N per phase and round (default 300 at c=1, 1000 at c=32; --quick: 40/150)")
    g.add_argument("--guards-concurrency", default="1,32", help="comma-separated concurrency levels (default 1,32)")


def _body_factory(stream: bool):
    body = {"model": "@fast", "max_tokens": 64, "mlx:tags": {"run_id": "bench-guards", "agent": "bench"},
            "messages": [{"role": "system", "content": "You are a terse assistant."},
                         {"role": "user", "content": "bench request #IDX#: summarise the quarterly numbers"}]}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    head, tail = json.dumps(body).encode().split(b"#IDX#")
    return lambda i: head + str(i).encode() + tail


def _n(ctx: Context, c: int) -> int:
    if ctx.args.guards_requests:
        return ctx.args.guards_requests
    return (40 if ctx.quick else 300) if c == 1 else (150 if ctx.quick else 1000)


async def _measure(ctx: Context, origin: str, proxy, variant: str, mode: str, c: int) -> dict:
    stream = mode == "stream"
    url = origin + "/v1/chat/completions"
    make = _body_factory(stream)
    n = _n(ctx, c)
    async with session(c) as s:
        await drive(s, url, make, c * 2, c, stream, start_index=10**8)  # open the pool
        before = proxy.cpu()
        r = await drive(s, url, make, n, c, stream, start_index=_next_index())
        after = proxy.cpu()
    if r.errors:
        raise RuntimeError(f"{variant}/{mode} c={c}: {r.errors} errors, first: {r.first_error}")
    return {"variant": variant, "mode": mode, **summarise(r), "proxy_cpu_ms_per_req": round((after - before) * 1000 / n, 3)}


_index = [10**6]


def _next_index() -> int:  # every request of the bench gets its own prompt (no loop anomaly)
    _index[0] += 10**6
    return _index[0]


def _micro(ctx: Context) -> dict:
    """In-process µs per call of the guard (before + after, per stream chunk) and of the anomaly hook
    per record: the hot-path cost itself, free of the load generator's and the upstream's noise."""
    import timeit
    from types import SimpleNamespace

    from modelux_local.analytics.anomalies import AnomalyWatcher
    from modelux_local.analytics.budgets import BudgetGuard, Pending
    from modelux_local.calls import CallContext
    from modelux_local.config.loader import load_dir
    from modelux_local.core.records import CallRecord
    from modelux_local.pricing import PriceBook
    from modelux_local.routing import Router
    from modelux_local.storage import Reader, open_db

    cdir = ctx.workdir / "config-micro"
    write_proxy_config(cdir, "http://127.0.0.1:9/v1", {"bench": ROUTING})
    out = {}
    body_bytes = _body_factory(False)(1)
    response = json.dumps({"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {
        "role": "assistant", "content": "word " * 60}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 60, "total_tokens": 90}}).encode()
    chunk = json.dumps({"id": "x", "object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": {"content": "three words here "}, "finish_reason": None}]}).encode()
    for variant in ("on", "budgets"):
        if variant == "budgets":
            with open(cdir / "modelux.toml", "a") as f:
                f.write(BUDGET)
        cs = load_dir(cdir)
        snap = SimpleNamespace(configs=cs, router=Router(cs), prices=PriceBook(cs.server.prices, cs.server.providers))
        guard = BudgetGuard(Pending())
        tags = {"run_id": "micro", "agent": "bench"}
        plan = snap.router.resolve("@fast", tags)

        def one_call():
            body = json.loads(body_bytes)
            body.pop("mlx:tags")
            c = CallContext("call_x", tags, plan, body, False, "chat", snap)
            guard.before(c)
            rec = CallRecord(call_id="call_x", run_id="micro", tags=tags, endpoint="chat", started_at=0.0,
                             alias="@fast", config="bench", config_version="v", provider="up", model="gpt-4o-mini",
                             status="ok", http_status=200, usage=None, latency_ms=1.0, ttft_ms=None, stream=False,
                             attempts=[{"status": "ok"}], decision={}, error=None, request=body_bytes,
                             response=response, price_book=snap.prices)
            guard.after(c, rec)
            return c

        def baseline():  # the same object building without the guard calls
            body = json.loads(body_bytes)
            body.pop("mlx:tags")
            CallContext("call_x", tags, plan, body, False, "chat", snap)
            CallRecord(call_id="call_x", run_id="micro", tags=tags, endpoint="chat", started_at=0.0,
                       alias="@fast", config="bench", config_version="v", provider="up", model="gpt-4o-mini",
                       status="ok", http_status=200, usage=None, latency_ms=1.0, ttft_ms=None, stream=False,
                       attempts=[{"status": "ok"}], decision={}, error=None, request=body_bytes,
                       response=response, price_book=snap.prices)

        n = 2000 if ctx.quick else 20000
        t_call = min(timeit.repeat(one_call, number=n, repeat=5)) / n
        t_base = min(timeit.repeat(baseline, number=n, repeat=5)) / n
        c = CallContext("call_s", tags, plan, {"messages": [], "max_tokens": 64}, True, "chat", snap)
        guard.before(c)
        t_chunk = min(timeit.repeat(lambda: guard.on_chunk(c, chunk), number=n, repeat=5)) / n
        out[variant] = {"guard_us_per_call": round((t_call - t_base) * 1e6, 2),
                        "guard_us_per_stream_chunk": round(t_chunk * 1e6, 2)}
    db = open_db(ctx.workdir / "micro.db")
    rt = SimpleNamespace(configs=load_dir(cdir), reader=Reader(ctx.workdir / "micro.db"))
    watcher = AnomalyWatcher(rt, Pending(), lambda: None)
    recs = [CallRecord(call_id=f"c{i}", run_id=f"r{i % 50}", tags={"run_id": f"r{i % 50}"}, endpoint="chat",
                       started_at=0.0, alias="@fast", config="bench", config_version="v", provider="up",
                       model="gpt-4o-mini", status="ok", http_status=200, usage=None, latency_ms=1.0, ttft_ms=None,
                       stream=False, attempts=[{"status": "ok", "latency_ms": 1.0}], decision={}, error=None,
                       request=_body_factory(False)(i)) for i in range(1000)]
    t_hook = min(timeit.repeat(lambda: watcher(db, recs), number=1, repeat=5)) / len(recs)
    out["anomaly_hook_us_per_record"] = round(t_hook * 1e6, 2)
    return out


async def run(ctx: Context) -> dict:
    """All three proxies up at once, measured back to back in ROUNDS rounds (so a load change on a
    shared machine hits every variant alike); per variant the round with the least proxy CPU is kept."""
    levels = [int(c) for c in ctx.args.guards_concurrency.split(",")]
    figures: dict = {"micro": _micro(ctx), "rounds": ROUNDS, "phases": [], "delta": []}
    ctx.log(f"  in-process: {figures['micro']}")
    upstream, up_url = start_upstream(ctx)
    proxies: dict = {}
    try:
        for variant in VARIANTS:
            cdir = ctx.workdir / f"config-{variant}"
            write_proxy_config(cdir, up_url, {"bench": ROUTING})
            if variant == "budgets":
                with open(cdir / "modelux.toml", "a") as f:
                    f.write(BUDGET)
            saved = os.environ.get("MODELUX_ANALYTICS")
            os.environ["MODELUX_ANALYTICS"] = "off" if variant == "off" else "on"
            try:
                proxies[variant] = start_proxy(ctx, cdir, ctx.workdir / f"data-{variant}")
            finally:
                os.environ.pop("MODELUX_ANALYTICS") if saved is None else os.environ.update(MODELUX_ANALYTICS=saved)
        for variant, (proxy, origin) in proxies.items():  # warm-up: imports, pools, caches
            for stream in (False, True):
                async with session(8) as s:
                    await drive(s, origin + "/v1/chat/completions", _body_factory(stream), 40 if ctx.quick else 200,
                                8, stream, start_index=_next_index())
        for mode in ("plain", "stream"):
            for c in levels:
                best: dict[str, dict] = {}
                for _ in range(ROUNDS):
                    for variant, (proxy, origin) in proxies.items():
                        row = await _measure(ctx, origin, proxy, variant, mode, c)
                        if variant not in best or row["proxy_cpu_ms_per_req"] < best[variant]["proxy_cpu_ms_per_req"]:
                            best[variant] = row
                for row in best.values():
                    figures["phases"].append(row)
                    ctx.log(f"  {row['variant']:8} {mode:6} c={c:<3} p50 {row['p50_ms']} ms  p99 {row['p99_ms']} ms  "
                            f"{row['rps']} req/s  cpu {row['proxy_cpu_ms_per_req']} ms/req")
    finally:
        for proxy, _ in proxies.values():
            proxy.stop()
        upstream.stop()
    base = {(r["mode"], r["concurrency"]): r for r in figures["phases"] if r["variant"] == "off"}
    for r in figures["phases"]:
        b = base.get((r["mode"], r["concurrency"]))
        if r["variant"] != "off" and b:
            figures["delta"].append({
                "variant": r["variant"], "mode": r["mode"], "concurrency": r["concurrency"],
                "cpu_ms_per_req": round(r["proxy_cpu_ms_per_req"] - b["proxy_cpu_ms_per_req"], 3),
                "p50_ms": round(r["p50_ms"] - b["p50_ms"], 3), "rps_ratio": round(r["rps"] / b["rps"], 3)})
    return figures


def render(f: dict) -> str:
    m = f["micro"]
    lines = ["guards — budgets and anomaly checks: off / on / on with a budget matching every call", "",
             "in-process cost (µs):             guard per call   guard per stream chunk",
             f"  on (no budget matches)        {m['on']['guard_us_per_call']:16.2f} {m['on']['guard_us_per_stream_chunk']:24.2f}",
             f"  budgets (one matches)         {m['budgets']['guard_us_per_call']:16.2f} "
             f"{m['budgets']['guard_us_per_stream_chunk']:24.2f}",
             f"  anomaly hook per record on the writer thread: {m['anomaly_hook_us_per_record']:.2f} µs", "",
             "variant  mode    conc      n   p50 ms   p99 ms    req/s  proxy cpu ms/req"]
    for r in f["phases"]:
        lines.append(f"{r['variant']:8} {r['mode']:6} {r['concurrency']:5} {r['n']:6} {r['p50_ms']:8.2f} "
                     f"{r['p99_ms']:8.2f} {r['rps']:8.0f} {r['proxy_cpu_ms_per_req']:17.3f}")
    if f["delta"]:
        lines += ["", "against off", "variant  mode    conc   Δcpu ms/req   Δp50 ms   req/s ×"]
        for d in f["delta"]:
            lines.append(f"{d['variant']:8} {d['mode']:6} {d['concurrency']:5} {d['cpu_ms_per_req']:+13.3f} "
                         f"{d['p50_ms']:+9.2f} {d['rps_ratio']:9.2f}")
    return "\n".join(lines)
