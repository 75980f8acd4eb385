"""The run screen: the trace tree (run -> calls in order -> attempts) and a detail pane.

A running run keeps growing: new calls are appended to the tree and labels updated in place,
so the highlighted node stays put.
"""
from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Static, Tree
from textual.widgets.tree import TreeNode

from ..data import DataSource, printable
from ..widgets import detail
from ..widgets import format as fmt

REFRESH_S = 1.0


def run_label(run: dict) -> Text:
    t = Text.assemble((printable(run["run_id"]), "bold"), " ", fmt.status(run["status"]),
                      f" {fmt.money(run['cost_usd'])} {run['calls']} calls {fmt.ms(run['duration_ms'])}")
    if run.get("anomalies"):
        t.append("  " + ", ".join(run["anomalies"]), style="bold yellow")
    return t


def call_label(step: dict) -> Text:
    """`#2 @executor ✓ $0.0002 402ms 800+60 → mock/mock-small`: what matters first, since the tree pane
    is narrow at 80 columns and cuts the end of a label (the model is in the attempt lines and the detail)."""
    ok = step["status"] == "ok"
    tok = f"{fmt.tokens(step['input_tokens'])}+{fmt.tokens(step['output_tokens'])}" if step["input_tokens"] is not None else "—"
    t = Text.assemble((f"#{step['seq']} ", "dim"), (step["alias"] or "(direct)", "bold" if ok else "bold red"), " ",
                      fmt.status_glyph(step["status"]) if ok else fmt.status(step["status"]))
    if len(step["attempts"]) > 1:
        t.append(f" ×{len(step['attempts'])}", style="yellow")
    if step["provider"] is None:  # refused before any target was tried (a budget, an abort): no route, no cost
        t.append(" refused before routing", style="dim")
        return t
    t.append(f" {fmt.money(step['cost_usd'])} {fmt.ms(step['latency_ms'])} {tok}")
    t.append(f" → {step['provider']}/{step['model']}", style="dim")
    return t


def attempt_label(a: dict, n: int) -> Text:
    return Text.assemble((f"attempt {n} ", "dim"), f"{a.get('provider')}/{a.get('model')}  ",
                         fmt.status(str(a.get("status"))), f"  {a.get('http_status') or '—'}  {fmt.ms(a.get('latency_ms'))}",
                         (f"  → {a['next']}" if a.get("next") else "", "yellow"))


class RunScreen(Screen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        # the Screen has no focus_next action: it is the app's (without the prefix tab did nothing)
        Binding("tab", "app.focus_next", "Tree ⇄ detail", key_display="tab"),
        Binding("shift+tab", "app.focus_previous", "Tree ⇄ detail", show=False),
        Binding("e", "expand_all", "Expand all"),
    ]

    def __init__(self, data: DataSource, run_id: str):
        super().__init__()
        self.data = data
        self.run_id = run_id
        self.nodes: dict[str, TreeNode] = {}
        self.run: dict | None = None
        self._loading = False
        self._detail_for: str | None = None
        self.shown_call: dict | None = None     # the call whose detail is on screen

    def compose(self) -> ComposeResult:
        self.sub_title = f"run {printable(self.run_id)}"
        yield Header()
        with Horizontal(id="run-body"):
            tree: Tree = Tree(Text(printable(self.run_id)), id="trace", data=("run", None))
            tree.root.expand()
            yield tree
            with VerticalScroll(id="detail-scroll"):
                yield Static(Text("loading…", style="dim"), id="detail")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#trace", Tree).focus()
        self.refresh_data()
        self.set_interval(REFRESH_S, self.refresh_data)

    def refresh_data(self) -> None:
        if self._loading or (self.run is not None and self.run["status"] != "running"):
            return
        self._loading = True
        self._load()

    @work(thread=True, group="run-load")
    def _load(self) -> None:
        run = self.data.run_detail(self.run_id)
        self.app.call_from_thread(self._apply, run)

    def _apply(self, run: dict | None) -> None:
        self._loading = False
        tree = self.query_one("#trace", Tree)
        if run is None:
            tree.root.set_label(Text(f"{printable(self.run_id)}: no such run", style="red"))
            return
        first = self.run is None
        self.run = run
        tree.root.set_label(run_label(run))
        tree.root.data = ("run", run)
        for step in run["steps"]:
            node = self.nodes.get(step["call_id"])
            if node is None:
                node = tree.root.add(call_label(step), data=("call", step), expand=False)
                self.nodes[step["call_id"]] = node
                for n, a in enumerate(step["attempts"], 1):
                    node.add_leaf(attempt_label(a, n), data=("attempt", (a, n)))
            else:
                node.set_label(call_label(step))
                node.data = ("call", step)
        if first:
            self._show(tree.root)

    @on(Tree.NodeHighlighted, "#trace")
    def _highlighted(self, event: Tree.NodeHighlighted) -> None:
        self._show(event.node)

    def _show(self, node: TreeNode) -> None:
        kind, payload = node.data or ("run", None)
        box = self.query_one("#detail", Static)
        if kind == "run":
            self._detail_for = "run"
            box.update(detail.render_run(payload) if payload else Text("loading…", style="dim"))
        elif kind == "attempt":
            self._detail_for = "attempt"
            box.update(detail.render_attempt(*payload))
        else:
            self._detail_for = payload["call_id"]
            box.update(Text(f"loading call {payload['call_id']}…", style="dim"))
            self._load_call(payload["call_id"])
        self.query_one("#detail-scroll").scroll_home(animate=False)

    @work(thread=True, exclusive=True, group="call-load")
    def _load_call(self, call_id: str) -> None:
        call = self.data.call_detail(call_id)
        self.app.call_from_thread(self._show_call, call_id, call)

    def _show_call(self, call_id: str, call: dict | None) -> None:
        if self._detail_for != call_id:  # the user moved on meanwhile
            return
        self.shown_call = call
        box = self.query_one("#detail", Static)
        box.update(detail.render_call(call) if call else Text(f"call {call_id} not found", style="red"))

    def action_expand_all(self) -> None:
        self.query_one("#trace", Tree).root.expand_all()
