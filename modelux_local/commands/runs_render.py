"""Human output of `runs`, `trace`, `analytics` and `logs search`: tables and the trace tree.

Plain text (no colour unless asked): the output is read in terminals, pasted in issues and
grepped, so every figure is on one line with its unit.
"""
from __future__ import annotations

import re

from ..core.display import printable
from ..core.usage import cache_share
from ..pricing import format_usd


def money(usd: float | None) -> str:
    """$0.0123; unpriced (no price known for a model) is shown as `unpriced`, never $0."""
    if usd is None:
        return "unpriced"
    return format_usd(usd)


def ms(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.0f}ms" if x < 1000 else f"{x / 1000:.2f}s"


def count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def _table(headers: list[str], rows: list[list[str]], right: set[int]) -> str:
    rows = [[printable(c) for c in r] for r in rows]  # cells hold client text: run ids, tags
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([line(headers), *(line(r) for r in rows)])


def usual(e: dict | None) -> str:
    """`x2.30 cost` (how far along its agent's p90 a run is, by cost or calls), or why there is no ratio."""
    if not e:
        return "-"
    if not e["judged"]:
        return f"{e['history_runs']}/{e['min_history']} runs"
    return f"x{e['over_usual']:.2f} {e['over_usual_by']}" if e["over_usual"] is not None else "-"


def runs_table(runs: list[dict], usual_first: bool = False) -> str:
    if not runs:
        return "no runs match"
    headers = ["STATUS", "RUN_ID", "AGENT", "CALLS", "TOKENS", "COST", "USUAL", "P50", "P95", "ERRORS", "ANOMALIES",
               "STARTED"]
    rows = []
    for r in runs:
        e = r.get("expected")
        status = r["status"] + (" (playback)" if r.get("played_back_calls") else "")
        rows.append([status, r["run_id"], r["tags"].get("agent") or (e or {}).get("agent") or "-",
                     count(r["calls"]), count(r["input_tokens"] + r["output_tokens"]), money(r["cost_usd"]),
                     usual(e), ms(r["p50_ms"]), ms(r["p95_ms"]), count(r["errors"]), ",".join(r["anomalies"]) or "-",
                     (r["started_at"] or "")[:19].replace("T", " ")])
    if usual_first:  # the column the list is sorted by comes first
        headers.insert(0, headers.pop(6))
        for row in rows:
            row.insert(0, row.pop(6))
    return _table(headers, rows, right={4, 5, 6, 7, 8, 9} if usual_first else {3, 4, 5, 7, 8, 9})


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
    played = sum(g.get("played_back_calls", 0) + g.get("cache_hits", 0) for g in groups)
    if played:  # playback room: answers that cost nothing
        note += (f"\nsaved {money(sum(g['saved_usd'] for g in groups))} by answering {count(played)} calls from "
                 f"recordings ({count(sum(g['cache_hits'] for g in groups))} cache hits)")
    out = _table(headers, rows, right=set(range(1, 8))) + "\n" + note
    if any("by_model" in g for g in groups):
        out += "\n\n" + _by_model(groups, key)
    return out


def _by_model(groups: list[dict], key: str) -> str:
    """Where each group's money went: its calls by provider/model, with the share of the group's cost."""
    rows = []
    for g in groups:
        total = sum(m["cost_usd"] or 0 for m in g["by_model"])
        for m in g["by_model"]:
            share = f"{(m['cost_usd'] or 0) / total * 100:.0f}%" if total else "-"
            rows.append([g["value"] if g["value"] is not None else "(none)", m["name"], count(m["calls"]),
                         count(m["input_tokens"]), count(m["output_tokens"]), money(m["cost_usd"]), share])
    return _table([key, "MODEL", "CALLS", "IN TOKENS", "OUT TOKENS", "COST", "SHARE"], rows, right={2, 3, 4, 5, 6})


def _tags(tags: dict) -> str:
    return " ".join(f"{printable(k)}={printable(v)}" for k, v in tags.items() if k != "run_id") or "(no tags)"


def spend_lines(b) -> list[str]:
    """Where the money went (a storage.breakdown.RunBreakdown): by alias, by model, repeated prompt."""
    out = []
    for title, lines in (("by alias", b.by_alias), ("by model", b.by_model)):
        parts = [f"{s.name} {money(s.as_dict()['cost_usd'])} ({count(s.calls)} calls, {count(s.input_tokens)} in / "
                 f"{count(s.output_tokens)} out)" for s in lines]
        if parts:
            out.append(f"  {title}: " + " · ".join(parts))
    r = b.repeats
    if r is not None and r.input_tokens:
        saving = (f"; caching would save ~{money(r.saving_nusd / 1e9)}" if r.saving_nusd else
                  f"; caching would save at most {money(r.saving_max_nusd / 1e9)}" if r.saving_max_nusd else "")
        out.append(f"  repeated prompt: {r.share:.0%} of input tokens ({count(r.repeated_tokens)} of "
                   f"{count(r.input_tokens)}) repeat the previous call's prompt{saving}")
    return out


def trace_tree(run: dict, breakdown=None) -> str:
    r = run
    out = [f"run {printable(r['run_id'])}  {r['status']}  {_tags(r['tags'])}",
           f"  {count(r['calls'])} calls · {count(r['input_tokens'])} in / {count(r['output_tokens'])} out tokens · "
           f"{money(r['cost_usd'])} · {ms(r['duration_ms'])} · p50 {ms(r['p50_ms'])} p95 {ms(r['p95_ms'])} · "
           f"{count(r['errors'])} errors · {count(r['retries'])} retries",
           f"  started {r['started_at']}" + (f"  ended {r['ended_at']}" if r.get("ended_at") else "")]
    e = r.get("expected")
    if e:
        out.append(expected_line(e))
    o = r.get("outcome")
    if o:
        extra = "".join([f" score={o['score']}" if o.get("score") is not None else "",
                         f" note={o['note']!r}" if o.get("note") else ""])
        out.append(f"  outcome: {'success' if o.get('success') else 'failure'}{extra}")
    cached, total, share = cache_share(r.get("steps") or [])
    if cached:
        out.append(f"  prompt cache: {count(cached)} of {count(total)} input tokens read from cache ({share:.0%})")
    if r.get("played_back_calls"):
        out.append(f"  playback: {count(r['played_back_calls'])} of {count(r['calls'])} calls answered from a "
                   "recording (cassette or cache), at no cost")
    if r.get("abort_reason"):
        out.append(f"  aborted: {r['abort_reason']}")
    out.append(f"  anomalies: {', '.join(r['anomalies']) if r['anomalies'] else 'none'}")
    if breakdown is not None:
        out += spend_lines(breakdown)
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


def expected_line(e: dict) -> str:
    """The agent's usual run (p50 / p90 over its recent completed runs), and where this run stands."""
    c, n, d = e["cost_usd"], e["calls"], e["duration_ms"]
    head = (f"  usual for {e['agent']} ({e['history_runs']} runs, {e['window_days']}d): "
            f"cost {money(c['p50'])} / {money(c['p90'])} · calls {n['p50']:g} / {n['p90']:g} · "
            f"time {ms(d['p50'])} / {ms(d['p90'])} (p50 / p90)")
    if not e["judged"]:
        return head + f" · too few runs to judge ({e['min_history']} needed)"
    return head + f" · this run: {usual(e)} of p90"


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
        where = f"{printable(r['run_id'])} #{r['seq']}" if r.get("run_id") else "(no run)"
        model = printable(r.get("model") or "?")
        out.append(f"{r['call_id']}  {where}  {r.get('provider') or '?'}/{model}  score {r['score']}")
        snippet = printable(" ".join((r.get("snippet") or "").split()))  # prompt text: escaped before our own bold
        if bold:
            snippet = re.sub(r"\*\*(.+?)\*\*", "\x1b[1m\\1\x1b[0m", snippet)
        out.append(f"    {snippet}")
    return "\n".join(out)
