"""The replay report as text: the seed's layout plus CI, quality, the replay's cost and id."""
from __future__ import annotations

import json
import shutil

from ..pricing import format_usd, nanos_to_usd
from .diff import METRICS, fmt_delta

LABELS = {"mean_cost_per_run": "mean cost/run", "p50_latency_s": "p50 latency", "p95_latency_s": "p95 latency",
          "error_rate": "error rate", "agent_success": "agent success"}


def money(v: float | None) -> str:
    if v is None:
        return "n/a"
    return format_usd(v)


def _value(metric: str, v: float | None, measured: bool = True) -> str:
    if not measured:
        return "not measured"
    if v is None:
        return "n/a"
    if metric == "mean_cost_per_run":
        return money(v)
    if metric.endswith("latency_s"):
        return f"{v:.2f}s"
    if metric == "error_rate":
        return f"{v * 100:.2f}%"
    return f"{v * 100:.1f}%"


def header(rep_or_opts_mode: str, window_label: str | None, candidate: str) -> str:
    what = window_label or "the selected"
    if rep_or_opts_mode == "reprice":
        return f"Repricing {what} tagged agent traffic at {candidate}'s rates (estimate, no upstream calls)..."
    return f"Replaying {what} of tagged agent traffic against {candidate}..."


def render(rep: dict) -> str:
    est = rep["estimate"]
    lines = [""]
    if rep["partial"]:
        lines.append(f"  PARTIAL REPORT: {rep.get('stopped_reason') or 'stopped early'} after "
                     f"{rep['runs_replayed']} of {rep['runs_selected']} runs; the figures cover the runs replayed.")
        lines.append("")
    lines += [f"  runs_replayed   {rep['runs_replayed']:,}",
              f"  requests        {rep['requests']:,}",
              f"  window          {rep['window']}", ""]
    cur_h, cand_h = "CURRENT", "CANDIDATE" + (" (est.)" if est else "")
    lines.append(f"  {'':<17}{cur_h:>9}  {cand_h:>15}{'DELTA':>11}   95% CI")
    for m in METRICS:
        measured = not (est and m != "mean_cost_per_run")
        cur = _value(m, rep["current"][m])
        cand = _value(m, rep["candidate"][m], measured)
        delta = fmt_delta(m, rep["delta"][m]) if measured else ""
        ci = rep["ci"].get(m)
        ci_s = f"[{fmt_delta(m, ci[0])}, {fmt_delta(m, ci[1])}]" if ci and measured else ""
        lines.append(f"  {LABELS[m]:<17}{cur:>9}  {cand:>15}{delta:>11}   {ci_s}".rstrip())
    lines.append("")
    q = rep["quality"]
    if q["evaluator"]:
        mean = f", mean score {q['mean_score']:.3f}" if q["mean_score"] is not None else ""
        lines.append(f"  quality         {q['description']}: {q['accepted']:,} of {q['judged']:,} judged runs "
                     f"accepted{mean}; {q['not_judged']:,} not judged")
    else:
        lines.append(f"  quality         {q['description']}")
    if est:
        lines.append("  estimate        recorded token counts priced at the candidate's rates; another model "
                     "family would count tokens differently")
        lines.append("  replay cost     $0 (no upstream calls)")
    else:
        cap = f" (limit {money(rep['max_cost_usd'])})" if rep.get("max_cost_usd") is not None else ""
        lines.append(f"  replay cost     {money(rep['replay_cost_usd'])} spent by this replay "
                     f"({rep['requests_sent']:,} requests + evaluator calls){cap}")
    lines.append(f"  replay id       {rep['replay_id']}   "
                 f"(modelux config promote {rep['candidate_config']} --replay {rep['replay_id']})")
    return "\n".join(lines) + "\n"


def render_list(replays: list[dict]) -> str:
    out = [f"{'REPLAY':<10} {'CREATED':<17} {'STATUS':<11} {'MODE':<7} {'CANDIDATE':<16} {'RUNS':>9} "
           f"{'REQUESTS':>9} {'COST':>10} {'Δ COST':>8} {'Δ SUCCESS':>9}"]
    from datetime import datetime
    for r in replays:
        rep = r.get("report") or {}
        delta = rep.get("delta") or {}
        created = datetime.fromtimestamp(r["created_at"]).strftime("%Y-%m-%d %H:%M")
        runs = f"{r['runs_done']}/{r['runs_total']}"
        out.append(f"{r['replay_id']:<10} {created:<17} {r['status']:<11} {r['mode']:<7} {'@' + r['candidate']:<16} "
                   f"{runs:>9} {r['requests']:>9,} {money(r['cost_usd']):>10} "
                   f"{fmt_delta('mean_cost_per_run', delta.get('mean_cost_per_run')) if delta else '':>8} "
                   f"{fmt_delta('agent_success', delta.get('agent_success')) if delta else '':>9}")
    return "\n".join(out) + "\n"


def _answer(call: dict | None) -> str:
    if call is None:
        return "(not replayed)"
    if call.get("status") != "ok":
        return f"ERROR: {call.get('error') or call.get('status')}"
    try:
        body = json.loads(bytes(call["response"]) if call.get("response") is not None else b"null")
    except ValueError:
        return "(unreadable response)"
    if not isinstance(body, dict):
        return ""
    if body.get("object") == "list":
        return f"(embedding x{len(body.get('data') or [])})"
    msg = ((body.get("choices") or [{}])[0] or {}).get("message") or {}
    if msg.get("tool_calls"):
        return "tool: " + ", ".join(f"{t['function']['name']}({t['function'].get('arguments', '')})"
                                    for t in msg["tool_calls"])
    return str(msg.get("content") or "")


def _cell(call: dict | None) -> str:
    if call is None:
        return "-"
    cost = nanos_to_usd(call.get("cost_nusd"))
    return (f"{call.get('provider')}/{call.get('model')} {call.get('status')} "
            f"{call.get('input_tokens') or 0}+{call.get('output_tokens') or 0} tok "
            f"{money(cost)} {(call.get('latency_ms') or 0):.0f}ms")


def _wrap(text: str, width: int, lines: int = 3) -> list[str]:
    text = " ".join(text.split())
    out = [text[i:i + width] for i in range(0, len(text), width)][:lines] or [""]
    if len(text) > width * lines:
        out[-1] = out[-1][:-1] + "…"
    return out


def render_steps(replay_id: str, run_id: str, pairs: list[tuple[dict, dict | None]]) -> str:
    """Original vs candidate, side by side, step by step."""
    width = max(30, (min(shutil.get_terminal_size((140, 20)).columns, 200) - 8) // 2)
    out = [f"run {run_id}  vs  replay {replay_id}", "",
           f"{'#':>3}  {'ORIGINAL':<{width}} CANDIDATE"]
    for i, (o, c) in enumerate(pairs, 1):
        out.append(f"{i:>3}  {_cell(o)[:width]:<{width}} {_cell(c)[:width]}".rstrip())
        left, right = _wrap(_answer(o), width), _wrap(_answer(c), width)
        for k in range(max(len(left), len(right))):
            lt = left[k] if k < len(left) else ""
            rt = right[k] if k < len(right) else ""
            out.append(f"     {lt:<{width}} {rt}".rstrip())
    return "\n".join(out) + "\n"
