"""The runs screen: a live table of runs with cost meters, a pulse header, filter, sort and marks.

The table is updated in place (cells that changed, rows that appeared or left the filter), never
rebuilt, so the cursor stays on the run it was on while calls land. Its columns fit the terminal:
under WIDE columns the status is a glyph, the meter shorter, and the least useful columns go, so
that at 80 columns nothing scrolls sideways out of sight (the run id included).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Sparkline, Static

from ..data import DataSource, Pulse, ReloadView, RunRow, printable
from ..runfilter import matches
from ..widgets import format as fmt

# column key -> header label; the order on screen (the first columns matter most at 80 columns)
COLUMNS = {"mark": " ", "status": "status", "run": "run", "cost": "cost", "budget": "budget", "calls": "calls",
           "flags": "flags", "tokens": "tokens", "agent": "agent", "duration": "time", "errors": "err", "age": "age"}
# the columns that fit a width, widest first: the least useful go first (the run screen has them all);
# in the narrow layouts (no "mark" column) the status is a glyph after the mark and the meter is shorter
LAYOUTS = [
    (125, tuple(COLUMNS)),
    (110, ("mark", "status", "run", "cost", "budget", "calls", "flags", "agent", "duration", "age")),
    (90, ("status", "run", "cost", "budget", "calls", "flags", "agent", "age")),
    (0, ("status", "run", "cost", "budget", "calls", "flags", "agent")),
]
NARROW_LABELS = {"status": "  "}
NARROW_METER = 5
MARK = "◆"
FULL_READ_S = 5.0   # without a write to the database, re-read at most this often (statuses go idle, ages move)
SORTS: dict[str, Callable[[RunRow], object]] = {
    "started": lambda r: r.started_at, "cost": lambda r: r.cost_usd or 0.0, "calls": lambda r: r.calls,
    "duration": lambda r: r.duration_s, "budget": lambda r: r.budget_share or 0.0,
    "usual": lambda r: r.usual or 0.0,
}
REFRESH_S = 1.0


class RunsTable(DataTable):
    """The runs table. Until the user moves the cursor (`picked`) it stays on the top row, so the newest
    run is under it as runs arrive; once the user picked a run, the cursor stays on that run."""

    picked = False

    def _pick(self) -> None:
        self.picked = True

    def action_cursor_up(self) -> None:
        self._pick()
        super().action_cursor_up()

    def action_cursor_down(self) -> None:
        self._pick()
        super().action_cursor_down()

    def action_page_up(self) -> None:
        self._pick()
        super().action_page_up()

    def action_page_down(self) -> None:
        self._pick()
        super().action_page_down()

    def action_scroll_top(self) -> None:
        self._pick()
        super().action_scroll_top()

    def action_scroll_bottom(self) -> None:
        self._pick()
        super().action_scroll_bottom()

    def action_scroll_home(self) -> None:  # home / end: first / last row (the row cursor never scrolls sideways)
        self._pick()
        self.move_cursor(row=0)

    def action_scroll_end(self) -> None:
        self._pick()
        self.move_cursor(row=self.row_count - 1)

    async def _on_click(self, event) -> None:
        self._pick()
        await super()._on_click(event)


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
        self.columns: tuple[str, ...] = ()       # the keys on screen (set from the width)
        self._read_version: int | None = None    # the database's data_version at the last read
        self._read_at = 0.0
        self._read_query = ""                     # the filter the last read was made for
        self._pulse: Pulse | None = None
        self._status_text: Text | None = None
        self._restore_cursor: str | None = None  # the run to put the cursor back on after a column rebuild
        self._reload: ReloadView | None = None   # a refused config edit is flagged here, not only on `c`

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="pulse"):
            yield Static(id="pulse-text")
            yield Sparkline([0.0], id="spark")
        yield Static(id="runs-status")
        yield RunsTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Static(id="runs-empty")
        yield Input(placeholder="filter: words or tag k=v  (enter: keep, esc: clear)", id="filter")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#filter").display = False
        self.query_one("#runs-empty").display = False
        self._set_columns(self._layout_for(self.app.size.width))
        self.query_one(DataTable).focus()
        self.refresh_data()
        self.set_interval(REFRESH_S, self.refresh_data)

    def on_resize(self) -> None:
        layout = self._layout_for(self.size.width)
        if layout != self.columns:
            self._set_columns(layout)
            self._sync_table()
        else:
            self._show_status()  # the legend is shown when it fits the width

    # -- columns that fit ------------------------------------------------------------------

    @staticmethod
    def _layout_for(width: int) -> tuple[str, ...]:
        return next(keys for min_width, keys in LAYOUTS if width >= min_width)

    @property
    def narrow(self) -> bool:
        return "mark" not in self.columns

    def _set_columns(self, keys: tuple[str, ...]) -> None:
        """(Re)builds the columns; the rows come back on the next sync, the cursor on its run."""
        table = self.query_one("#runs", DataTable)
        current = self.current_run_id() if self.columns else None
        table.clear(columns=True)
        self.columns = keys
        for key in keys:
            table.add_column((NARROW_LABELS.get(key) if self.narrow else None) or COLUMNS[key], key=key)
        self.shown = {}
        self._restore_cursor = current

    # -- loading (thread worker: never on the proxy's loop, never blocking this one) ---------

    def refresh_data(self) -> None:
        if not self._loading:
            self._loading = True
            self._load()

    @work(thread=True, group="runs-load")
    def _load(self) -> None:
        import time

        try:
            # nothing written since the last read: skip it (a 1M-call database costs nothing while idle),
            # but re-read now and then for what changes with the clock (idle runs complete, ages move)
            reload = self.data.reload_status()
            version = self.data.data_version()
            if (version is not None and version == self._read_version and self._read_query == self.query_text
                    and time.monotonic() - self._read_at < FULL_READ_S):
                self.app.call_from_thread(self._unchanged, reload)
                return
            runs, pulse = self.data.runs(query=self.query_text), self.data.pulse()
        except Exception as e:  # a locked or half-written database: try again next tick
            self.app.call_from_thread(self._failed, e)
            return
        self._read_version, self._read_at, self._read_query = version, time.monotonic(), self.query_text
        self.app.call_from_thread(self._apply, runs, pulse, reload)

    def _unchanged(self, reload: ReloadView) -> None:
        self._loading = False
        if reload != self._reload:
            self._reload = reload
            self._show_status()

    def _failed(self, e: Exception) -> None:
        self._loading = False
        self._status_text = None
        self.query_one("#runs-status", Static).update(Text(f"read failed: {e}", style="red"))

    def _apply(self, runs: list[RunRow], pulse: Pulse, reload: ReloadView | None = None) -> None:
        self._loading = False
        self._reload = reload
        self.runs = {r.run_id: r for r in runs}
        self._alert(runs)
        if pulse != self._pulse:  # an update re-lays the header out: only when a figure moved
            self._pulse = pulse
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
                    self.notify(f"{printable(r.run_id)}: {what}", title="run flagged",
                                severity="error" if "aborted" in new else "warning")
        self._seen_flags = now

    def _show_pulse(self, p: Pulse) -> None:
        text = Text.assemble(("spend today ", "dim"), (fmt.money(p.spend_today_usd), "bold"),
                             ("  calls/min ", "dim"), (str(p.calls_per_min), "bold"),
                             ("  running ", "dim"), (str(p.runs_running), "bold"),
                             *((("  otlp ", "dim"), (p.otlp, "bold red" if "·" in p.otlp else "bold")) if p.otlp else ()),
                             ("  spend/min, 30m ", "dim"))
        if p.storage:
            text = Text.assemble((p.storage, "bold red"), "  ", text)  # first: the header is one line
        self.query_one("#pulse-text", Static).update(text)
        self.query_one("#spark", Sparkline).data = p.spend_per_minute

    # -- the table -------------------------------------------------------------------------

    def _mark_cell(self, run_id: str):
        return Text(MARK, style="bold magenta") if run_id in self.marked else Text(" ")

    def _cells(self, r: RunRow) -> tuple:
        """The row's cells for the columns on screen."""
        flagged_style = "bold red" if r.status == "aborted" else "bold yellow" if r.anomalies else ""
        flags = ", ".join(r.anomalies)
        if r.status == "aborted":  # the status says aborted; the flag says which limit (the detail has the text)
            flags = fmt.abort_label(r.abort_reason) + (f", {flags}" if flags else "")
        use = r.budget_use
        cell = {
            "mark": lambda: self._mark_cell(r.run_id),
            "status": lambda: Text.assemble(self._mark_cell(r.run_id), fmt.status_glyph(r.status)) if self.narrow
                              else fmt.status(r.status),
            "run": lambda: _run_cell(r, flagged_style),
            "cost": lambda: fmt.money(r.cost_usd),
            "budget": lambda: fmt.meter(use[0], NARROW_METER if self.narrow else fmt.METER_WIDTH, use[1],
                                        running=r.status == "running", label=not self.narrow)
                              if use else fmt.meter(None),
            "calls": lambda: str(r.calls),
            "flags": lambda: Text(flags, style=("white on red" if r.status == "aborted" else "black on yellow")
                                  if flags else ""),
            "tokens": lambda: fmt.tokens(r.tokens),
            "agent": lambda: Text(printable(r.agent)) if r.agent else (Text(printable(r.first_alias), style="dim") if r.first_alias else "—"),
            "duration": lambda: fmt.duration(r.duration_s),
            "errors": lambda: Text(str(r.errors), style="red" if r.errors else "dim"),
            "age": lambda: fmt.age_coarse(self.data.clock() - r.started_at),
        }
        return tuple(cell[key]() for key in self.columns)

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
                for key, a, b in zip(self.columns, old, cells):
                    if _look(a) != _look(b):
                        table.update_cell(r.run_id, key, b, update_width=True)
                        reorder = reorder or key in ("cost", "calls", "duration", "budget")
            self.shown[r.run_id] = cells
        restore, self._restore_cursor = self._restore_cursor, None
        if reorder:
            # the first rows: the cursor starts at the top; after a column rebuild: back on its run
            self._resort(keep_cursor=not was_empty or restore is not None, current=restore)
        self._show_status()
        self._show_empty()

    def _resort(self, keep_cursor: bool = True, current: str | None = None) -> None:
        table = self.query_one("#runs", RunsTable)
        if not table.picked:  # the user has not chosen a run: the top row (the newest run by default)
            keep_cursor, current = False, None
        current = current or (self.current_run_id() if keep_cursor else None)
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
        text = Text("  ·  ".join(bits), style="dim")
        if self._reload is not None and not self._reload.ok:
            where = self._reload.file and Path(self._reload.file).name + (f":{self._reload.line}" if self._reload.line else "")
            text = Text.assemble((f"✗ config edit refused{': ' + where if where else ''} (c: details)", "bold red"),
                                 "  ·  ", text)
        legend = f"  ·  ● running ✓ done ✗ aborted {MARK} marked"
        if self.narrow and text.cell_len + len(legend) < (self.size.width or self.app.size.width) - 2:
            text.append(legend, style="dim")
        if self._status_text is None or _look(text) != _look(self._status_text):
            self._status_text = text
            self.query_one("#runs-status", Static).update(text)

    def _show_empty(self) -> None:
        """An empty table says what to do: where to point the client, or that the filter hides everything."""
        box = self.query_one("#runs-empty", Static)
        table = self.query_one("#runs", DataTable)
        table.styles.height = "1fr" if self.shown else "auto"  # empty: the header line, then the hint
        if self.shown:
            box.display = False
            return
        if self.runs:
            hint = Text.assemble(("no run matches the filter ", "bold"), (self.query_text, "bold cyan"),
                                 ("\nesc clears it; words match the run id, agent, status, tags and flags; "
                                  "k=v matches a tag exactly", "dim"))
        else:
            hint = Text.assemble(
                ("No runs yet.\n\n", "bold"),
                "Point an OpenAI client at ", (self.app.base_url, "bold cyan"), " and tag each call with its run:\n\n",
                ("  client = OpenAI(base_url=\"" + self.app.base_url + "\", api_key=\"unused\")\n"
                 "  client.chat.completions.create(model=\"@planner\", messages=...,\n"
                 "      extra_body={\"mlx:tags\": {\"run_id\": \"run_1\", \"agent\": \"my-agent\"}})\n\n", "green"),
                ("Runs appear here as their calls land. Try: python examples/agent.py", "dim"),
                *_untagged_note(self._pulse))
        box.update(hint)
        box.display = True

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
        table = self.query_one("#runs", DataTable)
        if run_id in self.shown and run_id in self.runs:
            cells = self._cells(self.runs[run_id])
            for key, a, b in zip(self.columns, self.shown[run_id], cells):
                if _look(a) != _look(b):
                    table.update_cell(run_id, key, b, update_width=True)
            self.shown[run_id] = cells
        table.picked = True  # marking is choosing: the cursor now stays with the runs, not the top row
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
        # focus now, not on the next loop turn (Widget.focus): keys typed right after `/` (a fast typist, a
        # paste, tmux send-keys) went to the table, and the `c` of "coder" opened the configs screen
        self.set_focus(box)

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
        self.refresh_data()  # runs older than the loaded ones may match: ask the database too

    @on(Input.Submitted, "#filter")
    def _filter_done(self, event: Input.Submitted) -> None:
        if not event.value.strip():
            event.input.display = False
        self.query_one("#runs", DataTable).focus()

    def key_escape(self) -> None:
        if self.query_one("#filter", Input).has_focus:
            self.action_clear_filter()


def _look(cell) -> object:
    """What a cell looks like: Text equality ignores the base style (a run id turning yellow when its
    run is flagged compares equal to the plain one), so compare the style and spans too."""
    if isinstance(cell, Text):
        return cell.plain, str(cell.style), tuple(cell.spans)
    return cell


def _untagged_note(pulse: Pulse | None) -> tuple:
    """Calls that did arrive, but without a run_id, so they are in no run: say so rather than 'nothing'."""
    n = pulse.untagged_calls if pulse else 0
    if not n:
        return ()
    return (f"\n\n{n:,} call{'s' if n != 1 else ''} arrived without a run_id (no mlx:tags.run_id or x-mlx-run-id): "
            "they are recorded (see `modelux-local export --jsonl -`) but belong to no run.", "bold yellow")


def _run_cell(r: RunRow, style: str) -> Text:
    cell = Text(printable(r.run_id), style=style)
    if r.played_back:  # answered from a cassette / the dev cache, at no cost
        cell.append(" ⏵ playback", style="dim cyan")
    return cell
