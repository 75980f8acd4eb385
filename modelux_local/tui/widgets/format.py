"""Cell formatting shared by the screens: money, tokens, durations, the budget meter, status."""
from __future__ import annotations

import re

from rich.text import Text

from ..data import format_usd

METER_WIDTH = 8
_STATUS_STYLE = {"running": "bold green", "completed": "dim", "aborted": "bold red", "ok": "green",
                 "error": "bold red", "client_closed": "yellow"}


def money(usd: float | None) -> str:
    if usd is None:
        return "—"
    if usd == 0:
        return "$0"
    if usd < 100:
        return format_usd(usd, 5 if usd < 0.01 else 4)
    return f"${usd:,.2f}"


def tokens(n: int | None) -> str:
    if n is None:
        return "—"
    if n < 1000:
        return str(n)
    if n < 1_000_000:
        return f"{n / 1000:.1f}k"
    return f"{n / 1_000_000:.2f}M"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(seconds), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


def ms(v: float | None) -> str:
    return "—" if v is None else duration(v / 1000)


def age(seconds: float) -> str:
    """'12s', '5m', '3h', '2d' ago."""
    s = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def age_coarse(seconds: float) -> str:
    """Like `age`, but '<1m' under a minute: a table of ages then changes once a minute, not every second."""
    return "<1m" if seconds < 60 else age(seconds)


def meter(share: float | None, width: int = METER_WIDTH, limit: str | None = None, *, running: bool = False,
          label: bool = True) -> Text:
    """A bar of the run's use of its budget: green, yellow past 80 %, red past 100 %. `limit` names the
    limit the share is of when it is not the cost (calls, tokens, time), or "usual": the agent's p90.
    A running run past its usual is labelled with the ratio ("x2.3 of usual"): not over a budget (red),
    but off its course (magenta). `label`: name the limit (the wide layouts)."""
    if share is None:
        return Text("—", style="dim")
    filled = min(width, round(share * width))
    usual = limit == "usual"
    # past a budget is red; past the usual only alarms while the run runs (a tenth of runs end past p90)
    style = ("bold magenta" if usual and share >= 1 and running else "red" if share >= 1 and not usual else
             "yellow" if share >= 0.8 else "green")
    bar = Text("█" * filled, style=style)
    bar.append("░" * (width - filled), style="grey37")
    if usual and share >= 1 and running:
        bar.append(f" x{min(share, 99.9):.1f}" + (" of usual" if label else ""), style=style)
        return bar
    bar.append(f" {min(share, 9.99) * 100:3.0f}%", style=f"bold {style}" if share >= 0.8 else "")
    if label and limit and limit != "cost":
        bar.append(f" {limit}", style="dim")
    return bar


_LIMIT = re.compile(r"\b(max_[a-z_]+) = ([^\s(,]+)")


def abort_label(reason: str | None, width: int = 22) -> str:
    """A budget abort's limit ('max_calls=3'), or the start of a manual abort's reason: the full text is
    long ("run 'run_…' exceeded its budget: max_calls = 3 (3 calls made)") and lives in the run's detail."""
    if not reason:
        return "aborted"
    m = _LIMIT.search(reason)
    if m:
        return f"{m[1]}={m[2]}"
    reason = " ".join(reason.split())
    return reason if len(reason) <= width else reason[:width - 1] + "…"


def status(s: str) -> Text:
    return Text(s, style=_STATUS_STYLE.get(s, ""))


_GLYPH = {"running": "●", "completed": "✓", "aborted": "✗", "ok": "✓", "error": "✗"}


def status_glyph(s: str) -> Text:
    """One cell for a status where columns are scarce (80 columns): ● running, ✓ completed, ✗ aborted."""
    return Text(_GLYPH.get(s, "?"), style=_STATUS_STYLE.get(s, ""))


def elide_middle(text: Text, width: int) -> Text:
    """`mock/very-long…model-name`: the start and the end of a text that does not fit, never a cut end."""
    if text.cell_len <= width:
        return text
    if width <= 1:
        return Text("…")
    keep = width - 1
    head = keep // 2
    return Text.assemble(text[:head], "…", text[len(text.plain) - (keep - head):])


def fit(head: Text, tail: Text, width: int) -> Text:
    """head + tail in `width` cells: the tail (a model name) whole when it fits, the head's end cut
    with an ellipsis before it; a tail too long on its own loses its middle instead."""
    if head.cell_len + tail.cell_len <= width:
        return Text.assemble(head, tail)
    room = width - tail.cell_len - 1
    if room >= min(4, head.cell_len):  # "#12…" still says which call it is
        space = head.plain.rfind(" ", 0, room + 1)
        cut = space if space >= max(3, room - 6) else room  # end on a word rather than half a figure
        return Text.assemble(head[:cut], ("…", "dim"), tail)
    return elide_middle(Text.assemble(head[:min(head.cell_len, max(0, width // 3))], tail), width)
