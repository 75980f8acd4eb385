"""providers: what translation costs per call — Anthropic and Gemini kinds, /v1/messages and /v1/responses in.

One proxy, three fake upstreams on localhost (FakeOpenAI as a subprocess; FakeAnthropic and
FakeGemini as threads of this process — their CPU is not the proxy's). Sequential calls
(concurrency 1), same prompt shape for every case. The figure to quote is the proxy's CPU time
per call against the OpenAI-compatible pass-through (no translation); latency deltas are noisy
on a shared box. An in-process timeit of the pure translate functions isolates translation from
the HTTP work around it.
"""
from __future__ import annotations

import argparse
import json
import time
import timeit

import aiohttp

from bench._harness import Context, start_proxy, start_upstream

DESCRIPTION = ("translation overhead: proxy CPU per call on anthropic / gemini kinds, /v1/messages and /v1/responses "
               "vs pass-through")

ROUTING = """[aliases.pass]
targets = [{ provider = "up", model = "gpt-4o-mini" }]
[aliases.ant]
targets = [{ provider = "ant", model = "claude-haiku-4-5" }]
[aliases.gem]
targets = [{ provider = "gem", model = "gemini-2.5-flash" }]
"""
SYSTEM = "You are a terse assistant. Answer in one sentence."
TOOL = {"type": "function", "function": {"name": "lookup", "description": "Look a figure up",
                                         "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}
# (label, path, alias, body format)
CASES = [("chat -> openai (pass-through)", "/v1/chat/completions", "@pass", "openai"),
         ("chat -> anthropic", "/v1/chat/completions", "@ant", "openai"),
         ("chat -> gemini", "/v1/chat/completions", "@gem", "openai"),
         ("messages -> openai", "/v1/messages", "@pass", "anthropic"),
         ("messages -> anthropic", "/v1/messages", "@ant", "anthropic"),
         ("responses -> openai", "/v1/responses", "@pass", "responses"),
         ("responses -> anthropic", "/v1/responses", "@ant", "responses")]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("providers")
    g.add_argument("--providers-requests", type=int, help="calls per case and mode (default 300; --quick: 30)")


def _body(fmt: str, alias: str, i: int, stream: bool) -> bytes:
    prompt = f"request #{i}: summarise the quarterly numbers in one line"
    if fmt == "openai":
        body = {"model": alias, "max_tokens": 64, "tools": [TOOL], "tool_choice": "none",
                "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]}
    elif fmt == "responses":
        fn = TOOL["function"]
        body = {"model": alias, "max_output_tokens": 64, "instructions": SYSTEM, "input": prompt, "tool_choice": "none",
                "tools": [{"type": "function", "name": fn["name"], "description": fn["description"],
                           "parameters": fn["parameters"]}]}
    else:
        body = {"model": alias, "max_tokens": 64, "system": SYSTEM, "tool_choice": {"type": "none"},
                "tools": [{"name": "lookup", "description": "Look a figure up", "input_schema": TOOL["function"]["parameters"]}],
                "messages": [{"role": "user", "content": prompt}]}
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


async def _phase(sess: aiohttp.ClientSession, origin: str, proxy, case: tuple, stream: bool, n: int) -> dict:
    label, path, alias, fmt = case
    url = origin + path
    for i in range(min(50, n)):  # warm-up: pools, caches, first-call imports
        async with sess.post(url, data=_body(fmt, alias, -i, stream), headers={"content-type": "application/json"}) as r:
            await r.read()
    lat = []
    cpu0 = proxy.cpu()
    for i in range(n):
        t0 = time.perf_counter()
        async with sess.post(url, data=_body(fmt, alias, i, stream), headers={"content-type": "application/json"}) as r:
            body = await r.read()
            if r.status != 200:
                raise RuntimeError(f"{label}: HTTP {r.status}: {body[:300]!r}")
        lat.append(time.perf_counter() - t0)
    cpu = (proxy.cpu() - cpu0) * 1000 / n
    lat.sort()
    return {"case": label, "mode": "stream" if stream else "plain", "n": n,
            "p50_ms": round(lat[len(lat) // 2] * 1000, 3), "proxy_cpu_ms_per_req": round(cpu, 3)}


def _micro(ctx: Context) -> dict:
    """µs per call of the pure translate functions (dicts in, dicts out) and with JSON at both ends."""
    from modelux_local.providers import _gemini_translate as gtr
    from modelux_local.providers import anthropic_out as atr
    from modelux_local.providers._openai_shapes import encode_json
    from modelux_local.providers.anthropic_in import anthropic_request_to_openai, openai_response_to_anthropic
    from modelux_local.providers.responses_in import responses_request_to_chat
    from modelux_local.providers.responses_out import ChatChunksToResponseEvents, chat_to_response, response_shell
    from modelux_local.proxy.messages import AnthropicSSE

    openai_body = json.loads(_body("openai", "m", 1, False))
    anth_body = json.loads(_body("anthropic", "m", 1, False))
    text = "The quarterly numbers rose four percent on steady demand and lower costs."
    anth_resp = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
                 "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
                 "usage": {"input_tokens": 60, "output_tokens": 20, "cache_read_input_tokens": 0,
                           "cache_creation_input_tokens": 0}}
    gem_resp = {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP",
                                "index": 0}], "modelVersion": "gemini-2.5-flash",
                "usageMetadata": {"promptTokenCount": 60, "candidatesTokenCount": 20, "totalTokenCount": 80}}
    openai_resp = {"id": "c", "object": "chat.completion", "model": "gpt-4o-mini", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 60, "completion_tokens": 20, "total_tokens": 80}}
    chunk = json.dumps({"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o-mini", "choices": [
        {"index": 0, "delta": {"content": "four percent "}, "finish_reason": None}]}).encode()
    raw_openai, raw_anth = json.dumps(openai_body).encode(), json.dumps(anth_body).encode()
    raw_ant_resp, raw_gem_resp = json.dumps(anth_resp).encode(), json.dumps(gem_resp).encode()
    raw_oai_resp = json.dumps(openai_resp).encode()
    sse = AnthropicSSE("gpt-4o-mini")
    sse.payload(chunk)
    resp_body = json.loads(_body("responses", "m", 1, False))
    raw_resp_body = json.dumps(resp_body).encode()
    resp_events = ChatChunksToResponseEvents(response_shell(resp_body, "resp_1", "gpt-4o-mini"))
    resp_events.feed_payload(chunk)
    cases = {
        "anthropic kind (request + response)": (
            lambda: (atr.request_to_anthropic(openai_body, "claude-haiku-4-5", 4096),
                     atr.response_to_openai(anth_resp, "claude-haiku-4-5")),
            lambda: (encode_json(atr.request_to_anthropic(json.loads(raw_openai), "claude-haiku-4-5", 4096)),
                     encode_json(atr.response_to_openai(json.loads(raw_ant_resp), "claude-haiku-4-5")[0]))),
        "gemini kind (request + response)": (
            lambda: (gtr.request_to_gemini(openai_body, {}), gtr.response_to_openai(gem_resp, "gemini-2.5-flash", {}, "g")),
            lambda: (encode_json(gtr.request_to_gemini(json.loads(raw_openai), {})),
                     encode_json(gtr.response_to_openai(json.loads(raw_gem_resp), "gemini-2.5-flash", {}, "g")[0]))),
        "/v1/messages in (request + response)": (
            lambda: (anthropic_request_to_openai(dict(anth_body)), openai_response_to_anthropic(openai_resp, "m")),
            lambda: (encode_json(anthropic_request_to_openai(json.loads(raw_anth))[0]),
                     encode_json(openai_response_to_anthropic(json.loads(raw_oai_resp), "m")))),
        "/v1/messages stream, per chunk": (lambda: sse.payload(chunk), lambda: sse.payload(chunk)),
        "/v1/responses in (request + response)": (
            lambda: (responses_request_to_chat(resp_body, []),
                     chat_to_response(openai_resp, response_shell(resp_body, "resp_1", "m"))),
            lambda: (encode_json(responses_request_to_chat(json.loads(raw_resp_body), [])),
                     encode_json(chat_to_response(json.loads(raw_oai_resp), response_shell(resp_body, "resp_1", "m"))))),
        "/v1/responses stream, per chunk": (lambda: resp_events.feed_payload(chunk),
                                            lambda: resp_events.feed_payload(chunk)),
    }
    n = 2000 if ctx.quick else 20000
    out = {}
    for name, (pure, with_json) in cases.items():
        out[name] = {"pure_us": round(min(timeit.repeat(pure, number=n, repeat=5)) / n * 1e6, 2),
                     "with_json_us": round(min(timeit.repeat(with_json, number=n, repeat=5)) / n * 1e6, 2)}
    return out


async def run(ctx: Context) -> dict:
    from tests.fakes.fake_anthropic import FakeAnthropic
    from tests.fakes.fake_gemini import FakeGemini

    n = ctx.args.providers_requests or (30 if ctx.quick else 300)
    figures: dict = {"micro": _micro(ctx), "phases": [], "delta": []}
    ctx.log(f"  in-process: {figures['micro']}")
    upstream, up_url = start_upstream(ctx)
    ant, gem = FakeAnthropic().start(), FakeGemini().start()
    cdir = ctx.workdir / "config"
    cdir.mkdir()
    (cdir / "modelux.toml").write_text(
        '[routing]\ndefault = "bench"\n\n'
        f'[providers.up]\nkind = "openai"\nbase_url = "{up_url}"\napi_key_env = "BENCH_UPSTREAM_KEY"\n\n'
        f'[providers.ant]\nkind = "anthropic"\nbase_url = "{ant.base_url}"\napi_key_env = "BENCH_UPSTREAM_KEY"\n\n'
        f'[providers.gem]\nkind = "gemini"\nbase_url = "{gem.base_url}"\napi_key_env = "BENCH_UPSTREAM_KEY"\n')
    (cdir / "bench.toml").write_text(ROUTING)
    proxy, origin = start_proxy(ctx, cdir, ctx.workdir / "data")
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as sess:
            for stream in (False, True):
                for case in CASES:
                    row = await _phase(sess, origin, proxy, case, stream, n)
                    figures["phases"].append(row)
                    ctx.log(f"  {row['case']:30} {row['mode']:6} p50 {row['p50_ms']} ms  "
                            f"cpu {row['proxy_cpu_ms_per_req']} ms/req")
    finally:
        proxy.stop()
        upstream.stop()
        ant.stop()
        gem.stop()
    base = {r["mode"]: r for r in figures["phases"] if r["case"] == CASES[0][0]}
    for r in figures["phases"]:
        b = base[r["mode"]]
        if r is not b:
            figures["delta"].append({"case": r["case"], "mode": r["mode"],
                                     "cpu_ms_per_req": round(r["proxy_cpu_ms_per_req"] - b["proxy_cpu_ms_per_req"], 3),
                                     "p50_ms": round(r["p50_ms"] - b["p50_ms"], 3)})
    return figures


def render(f: dict) -> str:
    lines = ["providers — translation overhead per call", "",
             "in-process (µs per call)                    pure   with JSON"]
    for name, m in f["micro"].items():
        lines.append(f"  {name:40} {m['pure_us']:7.2f} {m['with_json_us']:11.2f}")
    lines += ["", "through the proxy, sequential               mode      n   p50 ms   proxy cpu ms/req"]
    for r in f["phases"]:
        lines.append(f"  {r['case']:40} {r['mode']:6} {r['n']:5} {r['p50_ms']:8.2f} {r['proxy_cpu_ms_per_req']:18.3f}")
    lines += ["", "against the pass-through                    mode   Δcpu ms/req   Δp50 ms"]
    for d in f["delta"]:
        lines.append(f"  {d['case']:40} {d['mode']:6} {d['cpu_ms_per_req']:+12.3f} {d['p50_ms']:+9.2f}")
    return "\n".join(lines)
