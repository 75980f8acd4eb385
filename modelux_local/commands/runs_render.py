"""Human output of `runs`, `trace`, `analytics` and `logs search`: tables and the trace tree.

Plain text (no colour unless asked): the output is read in terminals, pasted in issues and
grepped, so every figure is on one line with its unit.
"""
from __future__ import annotations

import re

from ..core.usage import cache_share


def money(usd: float | None) -> str:
    """$0.0123; unpriced (no price known for a model) is shown as `unpriced`, never $0."""
    if usd is None:
        return "unpriced"
    if 0 < abs(usd) < 0.0001:
        return f"${usd:.6f}"
    return f"${usd:,.4f}"


def ms(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.0f}ms" if x < 1000 else f"{x / 1000:.2f}s"


def count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def _table(headers: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([line(headers), *(line(r) for r in rows)])


def runs_table(runs: list[dict]) -> str:
    if not runs:
        return "no runs match"
    headers = ["STATUS", "RUN_ID", "AGENT", "CALLS", "TOKENS", "COST", "P50", "P95", "ERRORS", "ANOMALIES", "STARTED"]
    rows = []
    for r in runs:
        rows.append([r["status"], r["run_id"], r["tags"].get("agent", "-"), count(r["calls"]),
                     count(r["input_tokens"] + r["output_tokens"]), money(r["cost_usd"]), ms(r["p50_ms"]),
                     ms(r["p95_ms"]), count(r["errors"]), ",".join(r["anomalies"]) or "-",
                     (r["started_at"] or "")[:19].replace("T", " ")])
    return _table(headers, rows, right={3, 4, 5, 6, 7, 8})


def analytics_table(doc: dict) -> str:
    groups = doc["groups"]
    if not groups:
        return "no runs match"
    key = doc["group_by"].upper()
    headers = [key, "RUNS", "CALLS", "COST", "COST/RUN", "P50", "P95", "ERROR RATE"]
    rows = []
    for g in groups:
        per_run = None if g["cost_usd"] is None or not g["runs"] else g["cost_usd"] / g["runs"]
        rows.append([g["value"] if g["value"] is not None else "(none)", count(g["runs"]), count(g["calls"]),
                     money(g["cost_usd"]), money(per_run), ms(g["p50_ms"]), ms(g["p95_ms"]),
                     f"{g['error_rate'] * 100:.2f}%"])
    note = "p50/p95: exact percentiles of call latency over every call of the group's runs"
    return _table(headers, rows, right=set(range(1, 8))) + "\n" + note


def _tags(tags: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in tags.items() if k != "run_id") or "(no tags)"


def trace_tree(run: dict) -> str:
    r = run
    out = [f"run {r['run_id']}  {r['status']}  {_tags(r['tags'])}",
           f"  {count(r['calls'])} calls · {count(r['input_tokens'])} in / {count(r['output_tokens'])} out tokens · "
           f"{money(r['cost_usd'])} · {ms(r['duration_ms'])} · p50 {ms(r['p50_ms'])} p95 {ms(r['p95_ms'])} · "
           f"{count(r['errors'])} errors · {count(r['retries'])} retries",
           f"  started {r['started_at']}" + (f"  ended {r['ended_at']}" if r.get("ended_at") else "")]
    o = r.get("outcome")
    if o:
        extra = "".join([f" score={o['score']}" if o.get("score") is not None else "",
                         f" note={o['note']!r}" if o.get("note") else ""])
        out.append(f"  outcome: {'success' if o.get('success') else 'failure'}{extra}")
    cached, total, share = cache_share(r.get("steps") or [])
    if cached:
        out.append(f"  prompt cache: {count(cached)} of {count(total)} input tokens read from cache ({share:.0%})")
    if r.get("abort_reason"):
        out.append(f"  aborted: {r['abort_reason']}")
    out.append(f"  anomalies: {', '.join(r['anomalies']) if r['anomalies'] else 'none'}")
    steps = r.get("steps") or []
    for i, s in enumerate(steps):
        last = i == len(steps) - 1
        out.append(("└─ " if last else "├─ ") + _step_line(s))
        pad = "   " if last else "│  "
        d = s.get("decision") or {}
        if d.get("strategy"):
            order = ", ".join(d.get("order") or [])
            out.append(f"{pad}  routing: @{d.get('config')} {str(d.get('config_version') or '')[:8]} "
                       f"{d['strategy']} -> {order}")
        for f in (d.get("format") or {}).get("targets") or []:
            if f.get("note"):
                out.append(f"{pad}  format: {f['note']}")
        attempts = s.get("attempts") or []
        for j, a in enumerate(attempts):
            branch = "└─ " if j == len(attempts) - 1 else "├─ "
            out.append(f"{pad}  {branch}{_attempt_line(a, j + 1)}")
    if not steps:
        out.append("   (no calls stored)")
    return "\n".join(out)


def _step_line(s: dict) -> str:
    target = f"{s['provider']}/{s['model']}" if s.get("provider") else (s.get("model") or "?")
    head = f"#{s['seq']} {s['alias'] + ' -> ' if s.get('alias') else ''}{target}"
    status = s["status"] + (f" {s['http_status']}" if s.get("http_status") else "")
    parts = [head, status, f"{count(s['input_tokens'])} in / {count(s['output_tokens'])} out",
             money(s["cost_usd"]), ms(s["latency_ms"])]
    if s.get("stream"):
        parts.append(f"stream ttft {ms(s.get('ttft_ms'))}")
    if s.get("error") and s["status"] != "ok":
        parts.append(f"error: {_short(s['error'])}")
    return "  ".join(parts)


def _attempt_line(a: dict, n: int) -> str:
    status = a.get("status", "?") + (f" {a['http_status']}" if a.get("http_status") else "")
    line = f"attempt {n}: {a.get('provider')}/{a.get('model')}  {status}  {ms(a.get('latency_ms'))}"
    if a.get("error"):
        line += f"  {_short(a['error'])}"
    if a.get("next"):
        line += f"  -> {a['next']}"
    return line


def _short(text: str, n: int = 100) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def search_results(doc: dict, bold: bool) -> str:
    results = doc["results"]
    if not results:
        return "no calls match"
    out = []
    for r in results:
        where = f"{r['run_id']} #{r['seq']}" if r.get("run_id") else "(no run)"
        out.append(f"{r['call_id']}  {where}  {r.get('provider') or '?'}/{r.get('model') or '?'}  score {r['score']}")
        snippet = " ".join((r.get("snippet") or "").split())
        if bold:
            snippet = re.sub(r"\*\*(.+?)\*\*", "\x1b[1m\\1\x1b[0m", snippet)
        out.append(f"    {snippet}")
    return "\n".join(out)
