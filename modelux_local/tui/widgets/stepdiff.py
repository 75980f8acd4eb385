"""The per-step comparison of a replayed run: original vs candidate, one row per call, as a table
whose two sides share the width (the CLI's fixed-width text wrapped mid-word at 80 columns).

What changed between the sides is coloured: a different model in cyan, a failed call in red,
a cheaper / dearer call in green / red.
"""
from __future__ import annotations

import json

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from . import format as fmt

ANSWER_CHARS = 240  # enough to judge the answer; the run screen has the whole response


def answer(call: dict | None) -> str:
    """The assistant's text (or its tool calls, or the error) of a stored call."""
    if call is None:
        return "(not replayed)"
    if call.get("status") != "ok":
        return f"error: {call.get('error') or call.get('status')}"
    try:
        body = json.loads(bytes(call["response"])) if call.get("response") is not None else None
    except ValueError:
        return "(unreadable response)"
    if not isinstance(body, dict):
        return ""
    if body.get("object") == "list":
        return f"(embedding ×{len(body.get('data') or [])})"
    msg = ((body.get("choices") or [{}])[0] or {}).get("message") or {}
    if msg.get("tool_calls"):
        return "tool: " + ", ".join(f"{(t.get('function') or {}).get('name')}({(t.get('function') or {}).get('arguments', '')})"
                                    for t in msg["tool_calls"])
    text = " ".join(str(msg.get("content") or "").split())
    return text if len(text) <= ANSWER_CHARS else text[:ANSWER_CHARS - 1] + "…"


def _side(call: dict | None, other: dict | None) -> RenderableType:
    if call is None:
        return Text("(not replayed)", style="dim italic")
    ok = call.get("status") == "ok"
    route = Text(f"{call.get('provider')}/{call.get('model')}",
                 style="bold cyan" if other is not None and (other.get("provider"), other.get("model"))
                 != (call.get("provider"), call.get("model")) else "bold")
    head = Text.assemble(route, " ", fmt.status_glyph("ok") if ok else fmt.status(str(call.get("status"))))
    cost = call.get("cost_usd")
    other_cost = other.get("cost_usd") if other is not None else None
    cost_style = "" if cost is None or other_cost is None or cost == other_cost else "green" if cost < other_cost else "red"
    figures = Text.assemble((fmt.money(cost), cost_style),
                            f"  {call.get('input_tokens') or 0}+{call.get('output_tokens') or 0} tok"
                            f"  {fmt.ms(call.get('latency_ms'))}", style="dim" if not cost_style else "")
    return Group(head, figures, Text(answer(call), style="" if ok else "red"))


def render_step_diff(replay_id: str, run_id: str, pairs: list[tuple[dict, dict | None]]) -> RenderableType:
    head = Text.assemble(("run ", "dim"), (run_id, "bold"), ("  vs  replay ", "dim"), (replay_id, "bold magenta"),
                         ("   cyan: other model, green/red: cheaper/dearer", "dim"))
    if not pairs:
        return Group(head, Text("no calls recorded for this run", style="dim"))
    t = Table(expand=True, show_lines=True, header_style="bold", pad_edge=False, border_style="grey37")
    t.add_column("#", justify="right", width=3, no_wrap=True)
    t.add_column("ORIGINAL", ratio=1, overflow="fold")
    t.add_column("CANDIDATE", ratio=1, overflow="fold")
    for i, (orig, cand) in enumerate(pairs, 1):
        # colours on the candidate side compare it with the original (cheaper is green)
        t.add_row(str(i), _side(orig, None), _side(cand, orig))
    return Group(head, t)
