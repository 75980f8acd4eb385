"""Readable renderings of a run, a call and an attempt for the run screen's detail pane.

Messages are shown as a conversation (role, wrapped text, tool calls), JSON (tool arguments,
the decision trace) as wrapped, highlighted Syntax rather than a raw dump.
"""
from __future__ import annotations

import json
from typing import Any

from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.rule import Rule
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from ..data import printable
from . import format as fmt

_ROLE_STYLE = {"system": "bold magenta", "user": "bold cyan", "assistant": "bold green", "tool": "bold yellow",
               "developer": "bold magenta"}
THEME = "ansi_dark"


def _json(obj: Any) -> Syntax:
    return Syntax(json.dumps(obj, indent=2, ensure_ascii=False, default=str), "json", theme=THEME,
                  word_wrap=True, background_color="default")


def _kv(rows: list[tuple[str, Any]]) -> Table:
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    for k, v in rows:
        t.add_row(k, v if isinstance(v, Text) else Text(str(v)))
    return t


def _section(title: str) -> Rule:
    return Rule(Text(title, style="bold"), align="left", style="grey37")


def _content_text(content: Any) -> RenderableType:
    if content is None:
        return Text("(no content)", style="dim italic")
    if isinstance(content, str):
        return Text(content)
    if isinstance(content, list):  # multimodal parts: show the text, name the rest
        parts = []
        for p in content:
            if isinstance(p, dict) and p.get("type") == "text":
                parts.append(Text(str(p.get("text", ""))))
            else:
                parts.append(Text(f"[{p.get('type', 'part') if isinstance(p, dict) else 'part'}]", style="dim"))
        return Group(*parts)
    return _json(content)


def _tool_calls(calls: list[dict]) -> list[RenderableType]:
    out: list[RenderableType] = []
    for tc in calls or []:
        fn = tc.get("function") or {}
        out.append(Text.assemble(("→ tool call ", "yellow"), (fn.get("name") or "?", "bold yellow"),
                                 (f"  {tc.get('id') or ''}", "dim")))
        args = fn.get("arguments")
        try:
            out.append(Padding(_json(json.loads(args)), (0, 0, 0, 2)))
        except (TypeError, ValueError):
            out.append(Padding(Text(str(args or "")), (0, 0, 0, 2)))
    return out


def message(m: dict) -> RenderableType:
    role = str(m.get("role", "?"))
    head = Text(role, style=_ROLE_STYLE.get(role, "bold"))
    if m.get("name"):
        head.append(f" ({m['name']})", style="dim")
    if m.get("tool_call_id"):
        head.append(f"  ← {m['tool_call_id']}", style="dim")
    body: list[RenderableType] = [_content_text(m.get("content"))] if m.get("content") is not None or not m.get("tool_calls") else []
    body += _tool_calls(m.get("tool_calls") or [])
    return Group(head, Padding(Group(*body), (0, 0, 1, 2)))


def render_run(run: dict, breakdown: Any = None) -> RenderableType:
    rows = [("run", printable(run["run_id"])), ("status", fmt.status(run["status"])),
            ("tags", printable(", ".join(f"{k}={v}" for k, v in run["tags"].items())) or "—"),
            ("started", run["started_at"]), ("calls", f"{run['calls']}  ({run['errors']} errors, {run['retries']} retries)"),
            ("tokens", f"{run['input_tokens']:,} in / {run['output_tokens']:,} out"),
            ("cost", fmt.money(run["cost_usd"])), ("duration", fmt.ms(run["duration_ms"])),
            ("latency", f"p50 {fmt.ms(run['p50_ms'])}  p95 {fmt.ms(run['p95_ms'])}")]
    if run.get("cached_tokens"):
        rows.append(("cache", f"{run['cached_tokens']:,} input tokens read from cache ({run['cached_share']:.0%})"))
    if run.get("anomalies"):
        rows.append(("anomalies", Text(", ".join(run["anomalies"]), style="bold yellow")))
    if run.get("abort_reason"):
        rows.append(("aborted", Text(printable(run["abort_reason"]), style="bold red")))
    if run.get("outcome"):
        rows.append(("outcome", json.dumps(run["outcome"])))
    parts: list[RenderableType] = [_section("Run"), _kv(rows)]
    if run.get("expected"):
        parts += [_section(f"Usual for {run['expected']['agent']}"), _usual(run["expected"], run["status"])]
    if breakdown is not None and (breakdown.by_alias or breakdown.repeats):
        parts += [_section("Where the money went"), *_spend(breakdown)]
    return Group(*parts)


def _usual(e: dict, status: str) -> RenderableType:
    """The agent's usual run (p50 / p90 of its recent completed runs) and where this run stands."""
    c, n, d = e["cost_usd"], e["calls"], e["duration_ms"]
    rows = [("history", f"{e['history_runs']} completed runs, last {e['window_days']} days"),
            ("cost", f"p50 {fmt.money(c['p50'])}  p90 {fmt.money(c['p90'])}"),
            ("calls", f"p50 {n['p50']:g}  p90 {n['p90']:g}"),
            ("duration", f"p50 {fmt.ms(d['p50'])}  p90 {fmt.ms(d['p90'])}")]
    if not e["judged"]:
        rows.append(("this run", Text(f"not judged: {e['min_history']} runs of history needed", style="dim")))
    elif e["over_usual"] is not None:
        ratio = e["over_usual"]
        rows.append(("this run", Text(f"x{ratio:.2f} of the p90 {e['over_usual_by']}",
                                      style="bold magenta" if ratio >= 1 else "")))
    return _kv(rows)


def _spend(b: Any) -> list[RenderableType]:
    """By alias, by model, and the input that repeated the previous call's prompt."""
    out: list[RenderableType] = []
    for title, lines in (("alias", b.by_alias), ("model", b.by_model)):
        t = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold")
        t.add_column(title, overflow="fold")
        for name in ("calls", "in", "out", "cost"):
            t.add_column(name, justify="right", no_wrap=True)
        for s in lines:
            d = s.as_dict()
            t.add_row(s.name, str(s.calls), fmt.tokens(s.input_tokens), fmt.tokens(s.output_tokens),
                      fmt.money(d["cost_usd"]))
        out.append(t)
    r = b.repeats
    if r is not None and r.input_tokens:
        saving = (f"caching would save ~{fmt.money(r.saving_nusd / 1e9)}" if r.saving_nusd else
                  f"caching would save at most {fmt.money(r.saving_max_nusd / 1e9)}" if r.saving_max_nusd else "")
        out.append(Text.assemble(("repeated prompt ", "bold"),
                                 f"{r.share:.0%} of input tokens ({fmt.tokens(r.repeated_tokens)} of "
                                 f"{fmt.tokens(r.input_tokens)}) repeat the previous call's prompt; ",
                                 (saving, "bold"),
                                 (f" ({fmt.tokens(r.cached_tokens)} already cached)" if r.cached_tokens else "", "dim")))
    return out


def render_call(call: dict) -> RenderableType:
    parts: list[RenderableType] = [_section(f"Call #{call.get('seq') or '?'}  {call['call_id']}")]
    route = (f"{call.get('alias') or '(direct)'} → {call.get('provider')}/{call.get('model')}" if call.get("provider")
             else f"{call.get('alias') or '(direct)'} (refused before a target was chosen)")
    parts.append(_kv([
        ("route", route), ("config", f"@{call.get('config')} {call.get('config_version')}"),
        ("status", Text.assemble(fmt.status(call["status"]), f"  HTTP {call['http_status']}")),
        ("tokens", f"{call.get('input_tokens') or 0} in / {call.get('output_tokens') or 0} out"
                   + (f" / {call['cached_tokens']} cached" if call.get("cached_tokens") else "")),
        ("cost", fmt.money(call.get("cost_usd")) + ("" if call.get("priced") else "  (unpriced)")),
        ("latency", f"{fmt.ms(call.get('latency_ms'))}" + (f"  ttft {fmt.ms(call['ttft_ms'])}" if call.get("ttft_ms") else "")
                    + ("  stream" if call.get("stream") else "")),
        ("started", call["started_at"])]))
    if call.get("error"):
        parts += [_section("Error"), Text(call["error"], style="red")]
    req = call.get("request")
    if isinstance(req, dict):
        if req.get("messages"):
            parts.append(_section(f"Messages ({len(req['messages'])})"))
            parts += [message(m) for m in req["messages"] if isinstance(m, dict)]
        elif "input" in req:
            parts += [_section("Input"), _content_text(req["input"])]
        if req.get("tools"):
            names = [((t.get("function") or {}).get("name") or t.get("name") or "?") for t in req["tools"] if isinstance(t, dict)]
            parts.append(Text.assemble(("tools offered: ", "dim"), ", ".join(names)))
    elif req is not None:
        parts += [_section("Request"), Text(str(req))]
    parts += [_section("Response"), *response(call.get("response"))]
    parts += [_section("Decision trace"), _json(call.get("decision") or {})]
    return Group(*parts)


def response(resp: Any) -> list[RenderableType]:
    if resp is None:
        return [Text("(none stored)", style="dim italic")]
    if not isinstance(resp, dict):
        return [Text(str(resp))]
    if "error" in resp:
        return [_json(resp["error"])]
    out: list[RenderableType] = []
    for ch in resp.get("choices") or []:
        msg = ch.get("message") or {}
        out.append(message({**msg, "role": msg.get("role", "assistant")}))
        if ch.get("finish_reason"):
            out.append(Text(f"finish_reason: {ch['finish_reason']}", style="dim"))
    if resp.get("data") and not out:  # embeddings
        out.append(Text(f"{len(resp['data'])} embedding(s)", style="dim"))
    if resp.get("usage"):
        out.append(Text("usage: " + ", ".join(f"{k}={v}" for k, v in resp["usage"].items()
                                               if isinstance(v, (int, float))), style="dim"))
    return out or [_json(resp)]


def render_attempt(a: dict, n: int) -> RenderableType:
    rows = [("target", f"{a.get('provider')}/{a.get('model')}"), ("status", fmt.status(str(a.get("status")))),
            ("http", a.get("http_status") or "—"), ("latency", fmt.ms(a.get("latency_ms")))]
    if a.get("error"):
        rows.append(("error", Text(str(a["error"]), style="red")))
    extra = {k: v for k, v in a.items()
             if v is not None and k not in {"provider", "model", "status", "http_status", "latency_ms", "error"}}
    parts: list[RenderableType] = [_section(f"Attempt {n}"), _kv(rows)]
    if extra:
        parts.append(_json(extra))
    return Group(*parts)
