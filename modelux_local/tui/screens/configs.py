"""The configs screen: routing configs (aliases -> targets), versions, what serves, hot-reload status,
promotion history, and promote / rollback with a confirmation."""
from __future__ import annotations

from datetime import datetime

from rich.console import Group, RenderableType
from rich.rule import Rule
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from ..data import ConfigsState, DataSource, ReloadView

REFRESH_S = 2.0


def when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "—"


def render_reload(r: ReloadView) -> RenderableType:
    if r.ok:
        head = Text("✓ ", style="bold green")
        head.append("hot reload: " if r.live else "config files: ", style="bold")
        head.append(r.message)
        if r.at:
            head.append(f"  (at {when(r.at)})", style="dim")
        return head
    where = f"{r.file}:{r.line}" if r.file and r.line else (r.file or "")
    t = Text("✗ ", style="bold red")
    t.append("config change refused" if r.live else "config files invalid", style="bold red")
    if r.at:
        t.append(f"  (at {when(r.at)})", style="dim")
    t.append("\n  ")
    if where:
        t.append(where, style="bold underline")
        t.append("\n  ")
    msg = r.message.removeprefix(f"{where}: ") if where else r.message
    t.append(msg, style="red")
    t.append("\n  the last good config keeps serving", style="dim")
    return t


def render_configs(state: ConfigsState) -> RenderableType:
    parts: list[RenderableType] = [render_reload(state.reload), Text(f"source: {state.source}", style="dim"), Text()]
    for c in state.configs:
        head = Text.assemble((f"@{c.name}", "bold cyan"), f"  version {c.version}  ")
        if c.serving:
            head.append(" ● serving (default) ", style="bold black on green")
        for b in c.binds:
            head.append(f"  bound to {b}", style="green")
        if c.pinned:
            head.append(f"  serves {c.pinned}", style="bold magenta")
        parts.append(head)
        if c.description:
            parts.append(Text(c.description, style="italic dim"))
        t = Table(box=None, padding=(0, 2), show_edge=False, header_style="bold")
        t.add_column("alias", style="bold")
        t.add_column("strategy")
        t.add_column("targets (in order)", overflow="fold")
        t.add_column("retries", justify="right")
        for a in c.aliases:
            t.add_row(a.name, a.strategy, " → ".join(a.targets) if a.strategy == "fallback" else ", ".join(a.targets),
                      str(a.retries))
        parts += [t, Text()]
    parts.append(Rule(Text("versions seen", style="bold"), align="left", style="grey37"))
    if state.versions:
        v = Table(box=None, padding=(0, 2), show_edge=False, header_style="bold")
        for col in ("first seen", "config", "version", "source"):
            v.add_column(col, overflow="fold" if col == "source" else "ellipsis")
        for row in state.versions[:20]:
            v.add_row(when(row["first_seen"]), f"@{row['name']}", row["version"], row["source"] or "")
        parts.append(v)
    else:
        parts.append(Text("none recorded yet (the server records each config version it loads)", style="dim"))
    parts.append(Rule(Text("promotions", style="bold"), align="left", style="grey37"))
    if state.promotions:
        p = Table(box=None, padding=(0, 2), show_edge=False, header_style="bold")
        keys = list(state.promotions[0])
        for k in keys:
            p.add_column(k)
        for row in state.promotions[:20]:
            p.add_row(*(str(row.get(k, "")) for k in keys))
        parts.append(p)
    else:
        parts.append(Text("no promotions yet", style="dim"))
    return Group(*parts)


class ConfigsScreen(Screen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("p", "promote", "Promote"),
        Binding("b", "rollback", "Rollback"),
    ]

    def __init__(self, data: DataSource):
        super().__init__()
        self.data = data
        self.state: ConfigsState | None = None
        self._loading = False

    def compose(self) -> ComposeResult:
        self.sub_title = "configs"
        yield Header()
        with VerticalScroll(id="configs-scroll"):
            yield Static(Text("loading…", style="dim"), id="configs")
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_data()
        self.set_interval(REFRESH_S, self.refresh_data)

    def refresh_data(self) -> None:
        if not self._loading:
            self._loading = True
            self._load()

    @work(thread=True, group="configs-load")
    def _load(self) -> None:
        state = self.data.configs()
        self.app.call_from_thread(self._apply, state)

    def _apply(self, state: ConfigsState) -> None:
        self._loading = False
        if state != self.state:
            self.state = state
            self.query_one("#configs", Static).update(render_configs(state))

    def action_promote(self) -> None:
        self.app.promote_dialog()

    def action_rollback(self) -> None:
        self.app.rollback_dialog()
