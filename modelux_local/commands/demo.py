"""`demo [--base-url URL]`: the product page's story in under a minute, against a running server
(or one started here, in-process, on a free port): several agents, about twenty runs, one that
loops, one whose tool step fails and retries, one that hits its budget mid-stream; then what
to look at. It talks plain HTTP (httpx), as any client would, so it works against any server.
"""
from __future__ import annotations

import json
import secrets
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

import httpx

from ..pricing import format_usd
from ..settings import resolve_paths, running_servers

PARALLEL = 6
LOOP_STEPS = 12          # the looping run; the research agent normally takes 3 executor steps
FLAKY_ALIAS = "@tools"     # the embedded default routes it to a mock backend that always answers 503
BUDGET_TAG = {"demo": "budget"}   # the embedded default caps runs with this tag (config/default/modelux.toml)


def register(sub, config_sub, common) -> None:
    p = sub.add_parser("demo", help="about 20 agent runs in under a minute (loops, a retry storm, a budget abort)")
    common(p)
    p.add_argument("--base-url", metavar="URL", help="a running server (default: the one running here, "
                   "else one started in-process on a free port)")
    p.set_defaults(func=run)


@dataclass
class Outcome:
    run_id: str
    agent: str
    story: str
    calls: int = 0
    errors: list[str] = field(default_factory=list)


class Agents:
    """The demo's agents: each method is one run, made of real calls through the proxy."""

    def __init__(self, client: httpx.Client, suffix: str):
        self.c, self.suffix = client, suffix

    def _tags(self, run_id: str, agent: str, **extra: str) -> dict:
        return {"run_id": run_id, "agent": agent, "source": "demo", **extra}

    def chat(self, out: Outcome, model: str, messages: list, tags: dict, **body) -> dict | None:
        out.calls += 1
        r = self.c.post("/v1/chat/completions", json={"model": model, "messages": messages, "mlx:tags": tags, **body})
        if r.status_code >= 400:
            out.errors.append(f"{model}: HTTP {r.status_code} {_message(r)}")
            return None
        return r.json()

    def research(self, n: int, steps: int = 3, story: str = "plan, 3 steps, summary", name: str = "") -> Outcome:
        agent = "research-v2"
        out = Outcome(name or f"demo-research-{n:02d}-{self.suffix}", agent, story)
        tags = self._tags(out.run_id, agent)
        topic = ["agent cost", "prompt caching", "model routing", "tool latency", "eval drift"][n % 5]
        plan = self.chat(out, "@planner", [{"role": "system", "content": "You are a research planner."},
                                           {"role": "user", "content": f"Plan research on {topic} (#{n})."}], tags)
        text = _text(plan)
        for i in range(steps):
            # a looping agent asks the same thing again and again; a healthy one moves on
            k = 1 if steps > 3 else i + 1
            self.chat(out, "@executor", [{"role": "user", "content": f"Step {k}: carry out part {k} of: {text[:60]}"}],
                      tags)
        self.chat(out, "@summarizer", [{"role": "user", "content": f"Summarise the findings on {topic}."}], tags)
        return out

    def looping(self) -> Outcome:
        return self.research(0, steps=LOOP_STEPS, story=f"loops {LOOP_STEPS} times instead of 3 (flag: loop)",
                             name=f"demo-loop-{self.suffix}")

    def coder(self, n: int) -> Outcome:
        agent = "coder-v1"
        out = Outcome(f"demo-coder-{n:02d}-{self.suffix}", agent, "tool call, tool result, patch")
        tags = self._tags(out.run_id, agent)
        tools = [{"type": "function", "function": {"name": "run_tests", "description": "Run the test suite",
                                                   "parameters": {"type": "object", "properties": {
                                                       "path": {"type": "string"}}}}}]
        msgs = [{"role": "user", "content": f"Fix the failing test in module {n} of the billing service."}]
        first = self.chat(out, "@planner", msgs, tags, tools=tools)
        call = ((first or {}).get("choices") or [{}])[0].get("message") or {}
        if call.get("tool_calls"):
            tc = call["tool_calls"][0]
            msgs += [call, {"role": "tool", "tool_call_id": tc["id"], "content": "1 failed: test_rounding"}]
            self.chat(out, "@planner", msgs, tags, tools=tools)
        self.chat(out, "@executor", [{"role": "user", "content": f"Write the patch for module {n}."}], tags)
        return out

    def support(self, n: int) -> Outcome:
        """The support bot speaks Anthropic's Messages format (POST /v1/messages)."""
        agent = "support-bot"
        out = Outcome(f"demo-support-{n:02d}-{self.suffix}", agent, "two turns over /v1/messages")
        history = [{"role": "user", "content": f"My invoice #{1000 + n} shows a charge twice."}]
        for _ in range(2):
            out.calls += 1
            r = self.c.post("/v1/messages", json={"model": "@summarizer", "max_tokens": 200, "messages": history,
                                                  "metadata": {"mlx:tags": self._tags(out.run_id, agent)}})
            if r.status_code >= 400:
                out.errors.append(f"/v1/messages: HTTP {r.status_code} {_message(r)}")
                break
            reply = "".join(b.get("text", "") for b in r.json().get("content", []))
            history += [{"role": "assistant", "content": reply}, {"role": "user", "content": "Thanks, and the refund?"}]
        return out

    def flaky_tool(self) -> Outcome:
        agent = "research-v2"
        out = Outcome(f"demo-flaky-{self.suffix}", agent, "tool step fails, retried 3 ways (flag: retry_storm)")
        tags = self._tags(out.run_id, agent)
        self.chat(out, "@planner", [{"role": "user", "content": "Plan: fetch the latest prices, then compare."}], tags)
        for attempt in ("fetch prices", "fetch prices again, smaller page", "fetch prices from the mirror"):
            if self.chat(out, FLAKY_ALIAS, [{"role": "user", "content": attempt}], tags) is not None:
                break
        self.chat(out, "@summarizer", [{"role": "user", "content": "Summarise what could be done without prices."}],
                  tags)
        return out

    def over_budget(self) -> Outcome:
        agent = "research-v2"
        out = Outcome(f"demo-budget-{self.suffix}", agent, "hits max_cost_usd, aborted mid-stream")
        tags = self._tags(out.run_id, agent, **BUDGET_TAG)
        self.chat(out, "@planner", [{"role": "user", "content": "Plan a long literature review on agent costs."}],
                  tags)
        out.calls += 1
        body = {"model": "@planner", "stream": True, "mlx:tags": tags,
                "messages": [{"role": "user", "content": "Write the whole literature review now, in full detail."}]}
        chunks = 0
        with self.c.stream("POST", "/v1/chat/completions", json=body) as r:
            if r.status_code >= 400:
                r.read()
                out.errors.append(f"refused before streaming: HTTP {r.status_code} {_message(r)}")
                return out
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    out.errors.append(f"cut after {chunks} chunks: {event['error'].get('message')}")
                    break
                chunks += 1
        r = self.c.post("/v1/chat/completions", json={"model": "@summarizer", "mlx:tags": tags,
                                                      "messages": [{"role": "user", "content": "Summarise."}]})
        out.calls += 1
        if r.status_code >= 400:
            out.errors.append(f"next call refused: HTTP {r.status_code} {_message(r)}")
        return out


def _text(resp: dict | None) -> str:
    try:
        return resp["choices"][0]["message"]["content"] or ""
    except (TypeError, KeyError, IndexError):
        return ""


def _message(r: httpx.Response) -> str:
    try:
        err = r.json().get("error")
        return err.get("message", "") if isinstance(err, dict) else str(err)
    except (ValueError, AttributeError):
        return r.text[:200]


def plan(agents: Agents) -> list:
    """About twenty runs: mostly healthy traffic, plus the three the product page warns about."""
    jobs = [lambda n=n: agents.research(n) for n in range(1, 11)]
    jobs += [lambda n=n: agents.coder(n) for n in range(1, 5)]
    jobs += [lambda n=n: agents.support(n) for n in range(1, 4)]
    return jobs + [agents.looping, agents.flaky_tool, agents.over_budget]


def run(args) -> int:
    base_url, server, note = _target(args)
    if base_url is None:
        return 1
    print(f"modelux-local demo against {base_url} {note}", flush=True)
    try:
        return _run_demo(base_url, args, server)
    finally:
        if server is not None:
            server.stop()


def _run_demo(base_url: str, args, server) -> int:
    import os

    headers = {"authorization": f"Bearer {os.environ['MODELUX_TOKEN']}"} if os.environ.get("MODELUX_TOKEN") else {}
    suffix = secrets.token_hex(3)
    t0 = time.monotonic()
    with httpx.Client(base_url=base_url.rstrip("/"), timeout=60, headers=headers) as client:
        try:
            client.get("/healthz").raise_for_status()
        except httpx.HTTPError as e:
            print(f"error: no modelux-local server answers at {base_url} ({e})", file=sys.stderr)
            return 1
        agents = Agents(client, suffix)
        jobs = plan(agents)
        outcomes: list[Outcome] = []
        lock = threading.Lock()
        with ThreadPoolExecutor(PARALLEL) as pool:
            for fut in as_completed([pool.submit(j) for j in jobs]):
                o = fut.result()
                with lock:
                    outcomes.append(o)
                    note = f"\n{'':>8}{o.errors[0][:150]}" if o.errors else ""
                    print(f"  [{len(outcomes):2d}/{len(jobs)}] {o.agent:<12} {o.run_id:<26} {o.calls:2d} calls  "
                          f"{o.story}{note}", flush=True)
        runs = _collect(client, [o.run_id for o in outcomes])
    _summary(outcomes, runs, time.monotonic() - t0, args, server, suffix)
    return 0


def _collect(client: httpx.Client, run_ids: list[str]) -> dict[str, dict]:
    """The recorded runs; flags land just after the calls (the writer), so wait for them briefly."""
    deadline = time.monotonic() + 10
    while True:
        runs = {}
        for rid in run_ids:
            r = client.get(f"/mlx/v1/runs/{rid}")
            if r.status_code == 200:
                runs[rid] = r.json()
        flags = {f for r in runs.values() for f in r.get("anomalies") or []} | {
            "aborted" for r in runs.values() if r.get("status") == "aborted"}
        if {"loop", "retry_storm", "aborted"} <= {_flag_name(f) for f in flags} or time.monotonic() > deadline:
            return runs
        time.sleep(0.3)


def _flag_name(f) -> str:
    return f.get("type") or f.get("name") or "" if isinstance(f, dict) else str(f)


def _summary(outcomes: list[Outcome], runs: dict[str, dict], secs: float, args, server, suffix: str) -> None:
    calls = sum(r.get("calls", 0) for r in runs.values())
    cost = sum(r.get("cost_usd") or 0 for r in runs.values())
    print(f"\n{len(runs)} runs, {calls} calls, {format_usd(cost)} in {secs:.1f}s. Flagged:")
    flagged = [(rid, r) for rid, r in sorted(runs.items()) if r.get("anomalies") or r.get("status") == "aborted"]
    for rid, r in flagged:
        what = [_flag_name(a) for a in r.get("anomalies") or []]
        if r.get("status") == "aborted":
            what.append(f"aborted: {r.get('abort_reason')}")
        print(f"  {rid:<26} {', '.join(what)}")
    if not flagged:
        print("  none (this server's config has no [anomalies]/[[budgets]] that match the demo's runs)")
    dd = ""
    if server is not None and args.data_dir:
        dd = f" --data-dir {args.data_dir}"
    print(f"""
Look at it:
  modelux-local runs --tag source=demo{dd}      # every run: calls, tokens, cost, p50/p95, flags
  modelux-local trace demo-loop-{suffix}{dd}     # the loop: the same executor step {LOOP_STEPS} times
  modelux-local trace demo-flaky-{suffix}{dd}    # the retry storm: each failed attempt, nested
  modelux-local trace demo-budget-{suffix}{dd}   # the abort: the stream cut at max_cost_usd
  modelux-local tui{dd}      # arrows pick a run, enter opens it, / filters (try "loop"), s sorts, c configs, q quits
  modelux-local simulate --replay=1h --tag source=demo --config=@default{dd}   # replay these runs, diff cost""")


def _target(args):
    """(base URL, in-process server or None, a note), or (None, None, None) after an error message."""
    if args.base_url:
        return args.base_url, None, ""
    found = running_servers()
    if len(found) == 1 and not args.data_dir:
        s = found[0]
        return f"http://{s['host']}:{s['port']}", None, f"(the server running here, pid {s['pid']}; data {s['data_dir']})"
    paths = resolve_paths(args.data_dir, args.config_dir, discover=False)
    try:
        server = InProcessServer(paths)
    except Exception as e:  # a bad config or an unusable data dir: say which
        print(f"error: could not start a server for the demo: {getattr(e, 'message', e)}", file=sys.stderr)
        return None, None, None
    return server.url, server, f"(started in-process for the demo; data {paths.data_dir})"


class InProcessServer:
    """The real server (runtime, Litestar app, uvicorn) on a thread, on a free localhost port."""

    def __init__(self, paths):
        import logging
        import socket

        import uvicorn

        from ..proxy.app import asgi_app
        from ..runtime import Runtime

        logging.getLogger("modelux").setLevel(logging.ERROR)  # the demo prints its own account
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.rt = Runtime(paths)
        config = uvicorn.Config(asgi_app(self.rt), host="127.0.0.1", port=port, log_level="warning",
                                access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.server.install_signal_handlers = lambda: None  # not the main thread
        self.thread = threading.Thread(target=self.server.run, name="modelux-demo-server", daemon=True)
        self.thread.start()
        while not self.server.started and self.thread.is_alive():
            self.thread.join(0.02)
        if not self.server.started:
            raise RuntimeError("the in-process server did not start")
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)
