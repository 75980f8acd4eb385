"""The run as a waterfall: one bar per call on a shared time axis, where its time and money went.

Each bar runs from the call's start to its end; its attempts are segments (a failed try red, a
fallback to another target cyan, the answer green). The stretch between the end of the previous
calls and a call's start is the agent's own time (thinking, running tools), shaded. Cost and
tokens stand at the end of each bar. The axis scales to the width; `+`/`-` zoom around the
selected call, left/right pan, enter opens the selected call's detail.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from rich.text import Text
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.widget import Widget

from . import format as fmt

BAR, FAILED, AGENT = "█", "▓", "░"
LANE = "grey23"  # the empty cells of a bar's lane: styled apart from the figures, so that exports keep them apart
MAX_ZOOM = 64
_SEGMENT_STYLE = {"ok": "green", "fallback": "cyan", "error": "red"}


def _ts(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso).timestamp() if iso else None


@dataclass(frozen=True)
class Bar:
    call_id: str
    label: str
    start: float                             # seconds from the run's start
    end: float
    segments: tuple[tuple[float, float, str], ...]   # (start, end, kind): kind ok | fallback | error
    cost: float | None
    tokens_in: int | None
    tokens_out: int | None
    failed: bool


def bars_of(run: dict) -> tuple[list[Bar], float]:
    """The run's calls as bars (seconds since the run's first call) and the time of the latest end."""
    steps = run.get("steps") or []
    t0 = min((_ts(s["started_at"]) for s in steps), default=_ts(run.get("started_at")) or 0.0)
    bars, last = [], 0.0
    for s in steps:
        start = _ts(s["started_at"]) - t0
        dur = (s.get("latency_ms") or 0) / 1000
        attempts = s.get("attempts") or []
        tried = sum((a.get("latency_ms") or 0) for a in attempts) / 1000
        gap = max(0.0, dur - tried) / max(1, len(attempts) - 1) if len(attempts) > 1 else 0.0  # backoff
        segs, t, first = [], start, attempts[0] if attempts else {}
        for a in attempts:
            length = (a.get("latency_ms") or 0) / 1000
            other = (a.get("provider"), a.get("model")) != (first.get("provider"), first.get("model"))
            kind = "ok" if a.get("status") == "ok" and not other else "fallback" if a.get("status") == "ok" else "error"
            segs.append((t, min(start + dur, t + length) if dur else t + length, kind))
            t += length + gap
        if not segs:
            segs.append((start, start + dur, "ok" if s["status"] == "ok" else "error"))
        bars.append(Bar(s["call_id"], f"#{s['seq']} {s.get('alias') or s.get('model') or '?'}", start, start + dur,
                        tuple(segs), s.get("cost_usd"), s.get("input_tokens"), s.get("output_tokens"),
                        s["status"] != "ok"))
        last = max(last, start + dur)
    return bars, last


class TimelineView:
    """The drawing: pure (no widget), so that the layout is tested on its own."""

    def __init__(self, bars: list[Bar], total: float, width: int):
        self.bars, self.total, self.width = bars, max(total, 1e-3), width
        wide = width >= 110
        self.label_w = 16 if wide else 12
        self.right_w = 22 if wide else 15
        self.wide = wide
        self.bar_w = max(10, width - self.label_w - self.right_w - 2)

    def window(self, zoom: float, offset: float) -> tuple[float, float]:
        span = self.total / zoom
        v0 = min(max(0.0, offset), max(0.0, self.total - span))
        return v0, span

    def _cells(self, a: float, b: float, v0: float, span: float) -> range:
        """Cells a stretch covers; at least one when it is inside the window, however short."""
        if b < v0 or a > v0 + span:
            return range(0)
        dt = span / self.bar_w
        lo = max(0, int((a - v0) / dt))
        hi = min(self.bar_w, max(lo + 1, round((b - v0) / dt)))
        return range(min(lo, self.bar_w - 1), hi)

    def axis(self, v0: float, span: float) -> Text:
        cells = [" "] * self.bar_w
        for frac in (0.0, 0.25, 0.5, 0.75):
            label = "╵" + fmt.duration(v0 + frac * span) if frac or v0 else "╵0s"
            at = int(frac * self.bar_w)
            if all(c == " " for c in cells[at:at + len(label) + 1]) and at + len(label) < self.bar_w - 8:
                cells[at:at + len(label)] = label
        end = fmt.duration(v0 + span) + "╵"
        cells[self.bar_w - len(end):] = end
        head = "call".ljust(self.label_w)
        right = ("cost".rjust(8) + " " + "tokens in+out".rjust(self.right_w - 9)) if self.wide else \
            ("cost".rjust(8) + " " + "tokens".rjust(self.right_w - 9))
        return Text.assemble((head, "bold"), " ", ("".join(cells), "dim"), " ", (right, "bold"))

    def row(self, i: int, v0: float, span: float, selected: bool) -> Text:
        bar = self.bars[i]
        cells: list[tuple[str, str]] = [(" ", LANE)] * self.bar_w
        agent_from = max((b.end for b in self.bars[:i]), default=bar.start)
        for c in self._cells(agent_from, bar.start, v0, span) if bar.start - agent_from > 0 else ():
            cells[c] = (AGENT, "grey42")
        # answers first, failures over them: a short failed try stays visible beside a long answer
        for a, b, kind in sorted(bar.segments, key=lambda s: s[2] == "error"):
            for c in self._cells(a, b, v0, span):
                cells[c] = (FAILED if kind == "error" else BAR, _SEGMENT_STYLE[kind])
        label = bar.label if len(bar.label) <= self.label_w else bar.label[:self.label_w - 1] + "…"
        t = Text.assemble((label.ljust(self.label_w), "reverse bold" if selected else "bold red" if bar.failed else "bold"),
                          (" ", LANE))
        for ch, style in cells:
            t.append(ch, style=style)
        if bar.tokens_in is None:
            tok = "—"
        elif self.wide:
            tok = f"{fmt.tokens(bar.tokens_in)}+{fmt.tokens(bar.tokens_out)}"
        else:
            tok = fmt.tokens(bar.tokens_in + (bar.tokens_out or 0))
        t.append(" " + fmt.money(bar.cost).rjust(8) + " " + tok.rjust(self.right_w - 9), style="reverse" if selected else "")
        return t

    def agent_row(self, v0: float, span: float) -> Text:
        """A running run: the agent's time since its last call ended, up to now."""
        last = max((b.end for b in self.bars), default=0.0)
        shaded = self._cells(last, self.total, v0, span)
        t = Text.assemble(("(agent)".ljust(self.label_w), "dim"), (" ", LANE))
        for c in range(self.bar_w):
            t.append(AGENT, "grey42") if c in shaded else t.append(" ", LANE)
        return t

    def summary(self) -> Text:
        """How the run's time splits between waiting on models and the agent's own time."""
        covered, reach = 0.0, 0.0
        for b in sorted(self.bars, key=lambda b: b.start):
            covered += max(0.0, b.end - max(b.start, reach))
            reach = max(reach, b.end)
        own = max(0.0, self.total - covered)
        share = own / self.total if self.total else 0.0
        return Text.assemble(("in calls ", "dim"), fmt.duration(covered) + "  ", ("agent's own time ", "dim"),
                             (AGENT * 2, "grey42"), f" {fmt.duration(own)} ({share:.0%})", ("  ", ""),
                             (BAR, "green"), (" ok ", "dim"), (FAILED, "red"), (" failed try ", "dim"),
                             (BAR, "cyan"), (" fallback", "dim"))


class Timeline(Widget, can_focus=True):
    """The waterfall widget of the run screen; `update_run` as the run grows, `Jump` on enter."""

    DEFAULT_CSS = "Timeline { height: auto; }"
    BINDINGS = [
        Binding("up", "move(-1)", "Prev call", show=False),
        Binding("down", "move(1)", "Next call", show=False),
        Binding("enter", "jump", "Call detail"),
        Binding("plus,equals_sign", "zoom(2)", "Zoom in", key_display="+"),
        Binding("minus", "zoom(0.5)", "Zoom out", key_display="-"),
        Binding("0", "fit", "Fit", show=False),
        Binding("left", "pan(-1)", "Pan", show=False),
        Binding("right", "pan(1)", "Pan", show=False),
    ]

    class Jump(Message):
        def __init__(self, call_id: str) -> None:
            super().__init__()
            self.call_id = call_id

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.bars: list[Bar] = []
        self.total = 0.0
        self.running = False
        self.selected = 0
        self.zoom_x = 1.0
        self.view_from = 0.0

    def update_run(self, run: dict, now: float) -> None:
        """New data (the run screen's refresh); a running run's axis reaches `now`."""
        self.bars, last = bars_of(run)
        self.running = run["status"] == "running"
        start = _ts(run.get("started_at")) or 0.0
        first = min((_ts(s["started_at"]) for s in run.get("steps") or []), default=start)
        self.total = max(last, now - first) if self.running else last
        self.selected = min(self.selected, max(0, len(self.bars) - 1))
        self.refresh(layout=True)

    @property
    def selected_call(self) -> str | None:
        return self.bars[self.selected].call_id if self.bars else None

    def _view(self) -> TimelineView:
        return TimelineView(self.bars, self.total, self.content_size.width or 80)

    def render(self) -> Text:
        if not self.bars:
            return Text("no calls yet", style="dim")
        view = self._view()
        v0, span = view.window(self.zoom_x, self.view_from)
        summary = view.summary()  # first: a long run scrolls its bars, never this line
        if self.zoom_x > 1:
            summary.append(f"  zoom x{self.zoom_x:g}", style="bold")
        lines = [summary, view.axis(v0, span)] + [view.row(i, v0, span, self.has_focus and i == self.selected)
                                                  for i in range(len(self.bars))]
        if self.running:
            lines.append(view.agent_row(v0, span))
        out = Text("\n").join(lines)
        out.no_wrap, out.overflow = True, "crop"  # a wrapped bar would read as two calls
        return out

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(self.bars) + 2 + int(self.running) if self.bars else 1

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    def action_move(self, step: int) -> None:
        if self.bars:
            self.selected = max(0, min(len(self.bars) - 1, self.selected + step))
            self.scroll_visible_row()
            self.refresh()

    def scroll_visible_row(self) -> None:
        """Keeps the selected bar in view when the bars outgrow the pane (the scrolling container)."""
        parent = self.parent
        if parent is not None and hasattr(parent, "scroll_to_region"):
            parent.scroll_to_region(Region(0, self.selected + 2, 1, 1), animate=False)  # under summary and axis

    def action_jump(self) -> None:
        if self.bars:
            self.post_message(self.Jump(self.bars[self.selected].call_id))

    def action_zoom(self, factor: float) -> None:
        if not self.bars:
            return
        old_span = self.total / self.zoom_x
        self.zoom_x = min(MAX_ZOOM, max(1.0, self.zoom_x * factor))
        span = self.total / self.zoom_x
        # keep the selected call in view: zoom around its start
        focus = self.bars[self.selected].start if factor > 1 else self.view_from + old_span / 2
        self.view_from = max(0.0, min(self.total - span, focus - span / 4 if factor > 1 else focus - span / 2))
        self.refresh()

    def action_fit(self) -> None:
        self.zoom_x, self.view_from = 1.0, 0.0
        self.refresh()

    def action_pan(self, direction: int) -> None:
        span = self.total / self.zoom_x
        self.view_from = max(0.0, min(self.total - span, self.view_from + direction * span / 4))
        self.refresh()
