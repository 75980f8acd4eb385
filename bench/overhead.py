"""overhead: what the proxy adds to a call, measured against a direct call to the same upstream.

Both paths hit the same fake OpenAI upstream (zero latency, zero chunk delay), so the
upstream's own cost is in both and the difference is the proxy's. The upstream is the
test fake rather than a canned-bytes server on purpose: its answers are realistic (usage
in the body, SSE with include_usage), so the proxy does the parsing it does in real use.

On a small shared machine latency differences are noisy (load generator, upstream and
proxy compete for the cores); the proxy's CPU time per request, read from /proc around
each phase, is the steadier figure.
"""
from __future__ import annotations

import argparse
import json
import time

from bench._harness import Context, get_json, start_proxy, start_upstream, write_proxy_config
from bench._load import drive, session, summarise

DESCRIPTION = "proxy latency and CPU per request over a direct call to the same upstream"

ROUTING = '[aliases.fast]\ntargets = [{ provider = "up", model = "gpt-4o-mini" }]\n'
MODES = {"plain": False, "stream": True}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("overhead")
    g.add_argument("--direct-only", action="store_true", help="skip the proxy: measure the harness and upstream alone")
    g.add_argument("--requests", type=int, help="N per phase (default 500 at c=1, 2000 otherwise; --quick: 50 / 200)")
    g.add_argument("--concurrency", default="1,32", help="comma-separated concurrency levels (default 1,32)")
    g.add_argument("--modes", default="plain,stream", help="plain, stream or both (default)")
    g.add_argument("--run-id", default="bench-1", help="run_id tag of the proxied calls")


def _body_factory(model: str, stream: bool, tags: dict[str, str] | None):
    # a template with the request index spliced in: every prompt differs (as in a real run, and so the
    # proxy's loop detector is not what gets measured) without paying json.dumps per request
    body = {"model": model, "max_tokens": 64, "messages": [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "bench request #IDX#: summarise the quarterly numbers in one line"}]}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    if tags:
        body["mlx:tags"] = tags
    head, tail = json.dumps(body).encode().split(b"#IDX#")
    return lambda i: head + str(i).encode() + tail


def _n(ctx: Context, concurrency: int) -> int:
    if ctx.args.requests:
        return ctx.args.requests
    if concurrency == 1:
        return 50 if ctx.quick else 500
    return 200 if ctx.quick else 2000


async def run(ctx: Context) -> dict:
    args = ctx.args
    levels = [int(c) for c in args.concurrency.split(",")]
    modes = [m for m in args.modes.split(",") if m]
    upstream, up_url = start_upstream(ctx)
    proxy = None
    figures: dict = {"upstream": "tests.fakes.openai_upstream (latency 0, chunk delay 0)", "phases": [],
                     "overhead": []}
    try:
        paths = {"direct": (up_url + "/chat/completions", "gpt-4o-mini", None)}
        if not args.direct_only:
            config_dir = ctx.workdir / "config"
            write_proxy_config(config_dir, up_url, {"bench": ROUTING})
            ctx.log("overhead: starting the proxy ...")
            proxy, origin = start_proxy(ctx, config_dir, ctx.workdir / "data")
            paths["proxied"] = (origin + "/v1/chat/completions", "@fast", {"run_id": args.run_id})
        sent = {p: 0 for p in paths}

        # warm-up: first-call costs (imports, connection pools, caches) stay out of every phase
        for path, (url, model, tags) in paths.items():
            for mode in modes:
                async with session(8) as s:
                    r = await drive(s, url, _body_factory(model, MODES[mode], tags), 40 if ctx.quick else 300, 8,
                                    MODES[mode])
                sent[path] += r.n - r.errors
                if r.errors:
                    raise RuntimeError(f"warm-up {path}/{mode}: {r.errors} errors, first: {r.first_error}")

        for mode in modes:
            for c in levels:
                n = _n(ctx, c)
                rows = {}
                for path, (url, model, tags) in paths.items():
                    make = _body_factory(model, MODES[mode], tags)
                    async with session(c) as s:
                        await drive(s, url, make, c * 2, c, MODES[mode], start_index=10**6)  # open the pool
                        before = _cpu(upstream, proxy)
                        r = await drive(s, url, make, n, c, MODES[mode])
                        after = _cpu(upstream, proxy)
                    sent[path] += c * 2 + n - r.errors
                    row = {"mode": mode, "path": path, **summarise(r)}
                    for who in before:
                        row[f"{who}_cpu_ms_per_req"] = round((after[who] - before[who]) * 1000 / n, 3)
                    rows[path] = row
                    figures["phases"].append(row)
                    ctx.log(f"  {mode:6} c={c:<3} {path:8} p50 {row['p50_ms']} ms  p99 {row['p99_ms']} ms  "
                            f"{row['rps']} req/s  errors {row['errors']}")
                if "proxied" in rows:
                    figures["overhead"].append(_difference(rows["direct"], rows["proxied"]))
        if proxy:
            figures["recorded"] = _recorded(ctx, origin, args.run_id, sent["proxied"])
    finally:
        for p in (proxy, upstream):
            if p:
                p.stop()
    return figures


def _cpu(upstream, proxy) -> dict[str, float]:
    out = {"upstream": upstream.cpu(), "client": time.process_time()}
    if proxy:
        out["proxy"] = proxy.cpu()
    return out


def _difference(d: dict, p: dict) -> dict:
    def delta(k):
        return None if d.get(k) is None or p.get(k) is None else round(p[k] - d[k], 3)

    def ratio(k):
        return None if not d.get(k) or p.get(k) is None else round(p[k] / d[k], 2)

    out = {"mode": d["mode"], "concurrency": d["concurrency"],
           "p50_ms": delta("p50_ms"), "p99_ms": delta("p99_ms"),
           "p50_ratio": ratio("p50_ms"), "p99_ratio": ratio("p99_ms"), "rps_ratio": ratio("rps"),
           "proxy_cpu_ms_per_req": p.get("proxy_cpu_ms_per_req")}
    if "ttft_p50_ms" in d:
        out |= {"ttft_p50_ms": delta("ttft_p50_ms"), "ttft_p99_ms": delta("ttft_p99_ms")}
    return out


def _recorded(ctx: Context, origin: str, run_id: str, sent: int) -> dict:
    """Did every proxied call reach the store? GET /mlx/v1/runs/{run_id} (the SPEC's run summary);
    polled, since a store may answer before its writer has drained, and timed, to show the drain lag."""
    started = time.monotonic()
    calls, error = None, None
    while time.monotonic() - started < 30:
        try:
            calls = get_json(f"{origin}/mlx/v1/runs/{run_id}", timeout=30)["calls"]
        except Exception as e:  # the management API is not the thing measured: report, don't fail
            error = f"{type(e).__name__}: {e}"
        if calls is not None and calls >= sent:
            error = None
            break
        time.sleep(0.25)
    out = {"run_id": run_id, "sent_ok": sent, "recorded_calls": calls,
           "drain_s": round(time.monotonic() - started, 2)}
    if error:
        out["error"] = error[:300]
    return out


def render(f: dict) -> str:
    def cell(v, width, fmt="{:.2f}"):
        return (fmt.format(v) if isinstance(v, (int, float)) else "-").rjust(width)

    lines = [f"overhead — proxy vs direct, same upstream: {f['upstream']}", "",
             "mode    conc  path          n  err   p50 ms   p99 ms    req/s  ttft p50  ttft p99"
             "   cpu ms/req: proxy  upstream  client"]
    for r in f["phases"]:
        lines.append(
            f"{r['mode']:6} {r['concurrency']:5}  {r['path']:8} {r['n']:6} {r['errors']:4} "
            f"{cell(r['p50_ms'], 8)} {cell(r['p99_ms'], 8)} {cell(r['rps'], 8, '{:.0f}')} "
            f"{cell(r.get('ttft_p50_ms'), 9)} {cell(r.get('ttft_p99_ms'), 9)} "
            f"{cell(r.get('proxy_cpu_ms_per_req'), 18, '{:.3f}')} {cell(r['upstream_cpu_ms_per_req'], 9, '{:.3f}')} "
            f"{cell(r['client_cpu_ms_per_req'], 7, '{:.3f}')}")
        if r.get("first_error"):
            lines.append(f"        first error: {r['first_error'][:160]}")
        if r.get("unexpected_status"):
            lines.append(f"        answered 2xx but not 200 (counted as ok): {r['unexpected_status']}")
    if f["overhead"]:
        lines += ["", "added by the proxy (proxied - direct)",
                  "mode    conc   Δp50 ms   Δp99 ms   p50 ×   p99 ×  req/s ×  Δttft p50  Δttft p99  proxy cpu ms/req"]
        for o in f["overhead"]:
            lines.append(
                f"{o['mode']:6} {o['concurrency']:5} {cell(o['p50_ms'], 9, '{:+.2f}')} {cell(o['p99_ms'], 9, '{:+.2f}')}"
                f" {cell(o['p50_ratio'], 7)} {cell(o['p99_ratio'], 7)} {cell(o['rps_ratio'], 8)}"
                f" {cell(o.get('ttft_p50_ms'), 10, '{:+.2f}')} {cell(o.get('ttft_p99_ms'), 10, '{:+.2f}')}"
                f" {cell(o['proxy_cpu_ms_per_req'], 17, '{:.3f}')}")
    if rec := f.get("recorded"):
        lines += ["", f"store: {rec['recorded_calls']} of {rec['sent_ok']} proxied calls recorded under run "
                      f"{rec['run_id']} (waited {rec['drain_s']}s)" + (f"; {rec['error']}" if "error" in rec else "")]
    return "\n".join(lines)

