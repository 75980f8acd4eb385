"""The runs screen: a live table of runs with cost meters, a pulse header, filter, sort and marks.

The table is updated in place (cells that changed, rows that appeared or left the filter), never
rebuilt, so the cursor stays on the run it was on while calls land.
"""
from __future__ import annotations

from typing import Callable

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Sparkline, Static

from ..data import DataSource, Pulse, RunRow
from ..widgets import format as fmt

# column key -> header label; the order on screen (the first columns matter most at 80 columns)
COLUMNS = {"mark": " ", "status": "status", "run": "run", "cost": "cost", "budget": "budget", "calls": "calls",
           "flags": "flags", "tokens": "tokens", "agent": "agent", "duration": "time", "errors": "err", "age": "age"}
SORTS: dict[str, Callable[[RunRow], object]] = {
    "started": lambda r: r.started_at, "cost": lambda r: r.cost_usd or 0.0, "calls": lambda r: r.calls,
    "duration": lambda r: r.duration_s, "budget": lambda r: r.budget_share or 0.0,
}
REFRESH_S = 1.0


def matches(run: RunRow, query: str) -> bool:
    """Every word must match: `k=v` a tag exactly, anything else a substring of id, agent, status, tags, flags."""
    hay = " ".join([run.run_id, run.agent or "", run.status, *run.tags.values(), *run.anomalies]).lower()
    for word in query.split():
        if "=" in word:
            k, _, v = word.partition("=")
            if run.tags.get(k) != v:
                return False
        elif word.lower() not in hay:
            return False
    return True


class RunsScreen(Screen):
    BINDINGS = [
        Binding("enter", "open", "Open", show=True),
        Binding("space", "mark", "Mark"),
        Binding("r", "replay", "Replay"),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("s", "sort", "Sort"),
        Binding("S", "reverse", "Reverse", show=False),
        Binding("c", "app.configs", "Configs"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    def __init__(self, data: DataSource):
        super().__init__()
        self.data = data
        self.runs: dict[str, RunRow] = {}
        self.shown: dict[str, tuple] = {}       # run_id -> the cells on screen
        self.marked: set[str] = set()
        self.query_text = ""
        self.sort_by, self.descending = "started", True
        self._loading = False
        self._seen_flags: dict[str, tuple] | None = None  # None until the first load: no alerts for history

    def compose(self) -> ComposeResult:
        with Horizontal(id="pulse"):
            yield Static(id="pulse-text")
            yield Sparkline([0.0], id="spark")
        yield Static(id="runs-status")
        table = DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        for key, label in COLUMNS.items():
            table.add_column(label, key=key)
        yield table
        yield Input(placeholder="filter: words or tag k=v  (enter: keep, esc: clear)", id="filter")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#filter").display = False
        self.query_one(DataTable).focus()
        self.refresh_data()
        self.set_interval(REFRESH_S, self.refresh_data)

    # -- loading (thread worker: never on the proxy's loop, never blocking this one) ---------

    def refresh_data(self) -> None:
        if not self._loading:
            self._loading = True
            self._load()

    @work(thread=True, group="runs-load")
    def _load(self) -> None:
        try:
            runs, pulse = self.data.runs(), self.data.pulse()
        except Exception as e:  # a locked or half-written database: try again next tick
            self.app.call_from_thread(self._failed, e)
            return
        self.app.call_from_thread(self._apply, runs, pulse)

    def _failed(self, e: Exception) -> None:
        self._loading = False
        self.query_one("#runs-status", Static).update(Text(f"read failed: {e}", style="red"))

    def _apply(self, runs: list[RunRow], pulse: Pulse) -> None:
        self._loading = False
        self.runs = {r.run_id: r for r in runs}
        self._alert(runs)
        self._show_pulse(pulse)
        self._sync_table()

    def _alert(self, runs: list[RunRow]) -> None:
        """Anomalies and aborts as they happen: a toast, besides the row's highlight."""
        now = {r.run_id: (*r.anomalies, "aborted" if r.status == "aborted" else "") for r in runs}
        if self._seen_flags is not None:
            for r in runs:
                before = set(self._seen_flags.get(r.run_id, ()))
                new = [f for f in now[r.run_id] if f and f not in before]
                if new:
                    what = ", ".join(new) + (f": {r.abort_reason}" if r.abort_reason and "aborted" in new else "")
                    self.notify(f"{r.run_id}: {what}", title="run flagged",
                                severity="error" if "aborted" in new else "warning")
        self._seen_flags = now

    def _show_pulse(self, p: Pulse) -> None:
        text = Text.assemble(("spend today ", "dim"), (fmt.money(p.spend_today_usd), "bold"),
                             ("  calls/min ", "dim"), (str(p.calls_per_min), "bold"),
                             ("  running ", "dim"), (str(p.runs_running), "bold"), ("  spend/min, 30m ", "dim"))
        self.query_one("#pulse-text", Static).update(text)
        self.query_one("#spark", Sparkline).data = p.spend_per_minute

    # -- the table -------------------------------------------------------------------------

    def _cells(self, r: RunRow) -> tuple:
        flagged_style = "bold red" if r.status == "aborted" else "bold yellow" if r.anomalies else ""
        flags = ", ".join(r.anomalies)
        if r.status == "aborted":
            flags = ("aborted" + (f" ({r.abort_reason})" if r.abort_reason else "")) + (f", {flags}" if flags else "")
        return (
            Text("●", style="bold magenta") if r.run_id in self.marked else " ",
            fmt.status(r.status),
            Text(r.run_id, style=flagged_style),
            fmt.money(r.cost_usd),
            fmt.meter(r.budget_share),
            str(r.calls),
            Text(flags, style=("white on red" if r.status == "aborted" else "black on yellow") if flags else ""),
            fmt.tokens(r.tokens),
            r.agent or "—",
            fmt.duration(r.duration_s),
            Text(str(r.errors), style="red" if r.errors else "dim"),
            fmt.age(self.data.clock() - r.started_at),
        )

    def _sync_table(self) -> None:
        table = self.query_one("#runs", DataTable)
        wanted = [r for r in self.runs.values() if matches(r, self.query_text)]
        ids = {r.run_id for r in wanted}
        for gone in [k for k in self.shown if k not in ids]:
            table.remove_row(gone)
            del self.shown[gone]
        reorder, was_empty = False, not self.shown
        for r in wanted:
            cells = self._cells(r)
            old = self.shown.get(r.run_id)
            if old is None:
                table.add_row(*cells, key=r.run_id)
                reorder = True
            else:
                for key, a, b in zip(COLUMNS, old, cells):
                    if a != b:
                        table.update_cell(r.run_id, key, b)
                        reorder = reorder or key in ("cost", "calls", "duration", "budget")
            self.shown[r.run_id] = cells
        if reorder:
            self._resort(keep_cursor=not was_empty)  # the first rows: the cursor starts at the top
        self._show_status()

    def _resort(self, keep_cursor: bool = True) -> None:
        table = self.query_one("#runs", DataTable)
        current = self.current_run_id() if keep_cursor else None
        value = SORTS[self.sort_by]
        table.sort("run", key=lambda cell: (value(self.runs[cell.plain]) if cell.plain in self.runs else 0,
                                            cell.plain), reverse=self.descending)
        if current is not None and current in self.shown:
            table.move_cursor(row=table.get_row_index(current), animate=False)
        elif not keep_cursor:
            table.move_cursor(row=0, animate=False)

    def _show_status(self) -> None:
        bits = [f"{len(self.shown)} of {len(self.runs)} runs" if self.query_text else f"{len(self.runs)} runs",
                f"sorted by {self.sort_by} {'↓' if self.descending else '↑'}"]
        if self.query_text:
            bits.append(f"filter: {self.query_text}")
        if self.marked:
            bits.append(f"{len(self.marked)} marked (r: replay)")
        if not self.runs:
            bits.append("no runs yet: send calls with extra_body={'mlx:tags': {'run_id': ...}}")
        self.query_one("#runs-status", Static).update(Text("  ·  ".join(bits), style="dim"))

    def current_run_id(self) -> str | None:
        table = self.query_one("#runs", DataTable)
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    # -- actions ---------------------------------------------------------------------------

    @on(DataTable.RowSelected, "#runs")
    def _selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open()

    def action_open(self) -> None:
        run_id = self.current_run_id()
        if run_id:
            from .run import RunScreen

            self.app.push_screen(RunScreen(self.data, run_id))

    def action_mark(self) -> None:
        run_id = self.current_run_id()
        if run_id is None:
            return
        self.marked ^= {run_id}
        if run_id in self.shown:
            cell = Text("●", style="bold magenta") if run_id in self.marked else " "
            self.query_one("#runs", DataTable).update_cell(run_id, "mark", cell)
            self.shown[run_id] = (cell, *self.shown[run_id][1:])
        table = self.query_one("#runs", DataTable)
        if table.cursor_row < table.row_count - 1:
            table.move_cursor(row=table.cursor_row + 1)
        self._show_status()

    def action_replay(self) -> None:
        # the marked runs; else, with a filter on, every run it shows; else the run under the cursor
        ids = [k for k in self.shown if k in self.marked] or (list(self.shown) if self.query_text else []) \
            or ([self.current_run_id()] if self.current_run_id() else [])
        if not ids:
            self.notify("no run to replay: mark runs with space", severity="warning")
            return
        self.app.start_replay(ids)

    def action_sort(self) -> None:
        keys = list(SORTS)
        self.sort_by = keys[(keys.index(self.sort_by) + 1) % len(keys)]
        self.descending = True
        self._resort()
        self._show_status()

    def action_reverse(self) -> None:
        self.descending = not self.descending
        self._resort()
        self._show_status()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        if box.value or box.display:
            box.value = ""
            box.display = False
            self.query_one("#runs", DataTable).focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.query_text = event.value.strip()
        self._sync_table()

    @on(Input.Submitted, "#filter")
    def _filter_done(self, event: Input.Submitted) -> None:
        if not event.value.strip():
            event.input.display = False
        self.query_one("#runs", DataTable).focus()

    def key_escape(self) -> None:
        if self.query_one("#filter", Input).has_focus:
            self.action_clear_filter()
