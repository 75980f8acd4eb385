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

from ..data import DataSource, RunBreakdown, printable
from ..widgets import detail
from ..widgets import format as fmt
from ..widgets.timeline import Timeline

REFRESH_S = 1.0


def run_label(run: dict) -> Text:
    t = Text.assemble((printable(run["run_id"]), "bold"), " ", fmt.status(run["status"]),
                      f" {fmt.money(run['cost_usd'])} {run['calls']} calls {fmt.ms(run['duration_ms'])}")
    if run.get("anomalies"):
        t.append("  " + ", ".join(run["anomalies"]), style="bold yellow")
    return t


def call_label(step: dict, width: int = 200) -> Text:
    """`#2 @executor ✓ $0.0002 402ms 800+60 → mock/mock-small`, fitted to `width`: the figures give way
    (they are in the detail), the model name never does."""
    ok = step["status"] == "ok"
    tok = f"{fmt.tokens(step['input_tokens'])}+{fmt.tokens(step['output_tokens'])}" if step["input_tokens"] is not None else "—"
    t = Text.assemble((f"#{step['seq']} ", "dim"), (step["alias"] or "(direct)", "bold" if ok else "bold red"), " ",
                      fmt.status_glyph(step["status"]) if ok else fmt.status(step["status"]))
    if len(step["attempts"]) > 1:
        t.append(f" ×{len(step['attempts'])}", style="yellow")
    if step["provider"] is None:  # refused before any target was tried (a budget, an abort): no route, no cost
        t.append(" refused before routing", style="dim")
        return fmt.fit(t, Text(), width)
    t.append(f" {fmt.money(step['cost_usd'])} {fmt.ms(step['latency_ms'])} {tok}")
    return fmt.fit(t, Text(f" → {step['provider']}/{step['model']}", style="dim"), width)


def attempt_label(a: dict, n: int, width: int = 200) -> Text:
    head = Text.assemble((f"attempt {n} ", "dim"), fmt.status(str(a.get("status"))),
                         f"  {a.get('http_status') or '—'}  {fmt.ms(a.get('latency_ms'))}",
                         (f"  → {a['next']}" if a.get("next") else "", "yellow"))
    return fmt.fit(head, Text(f"  {a.get('provider')}/{a.get('model')}"), width)


class RunScreen(Screen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        # the Screen has no focus_next action: it is the app's (without the prefix tab did nothing)
        Binding("tab", "app.focus_next", "Tree ⇄ detail", key_display="tab"),
        Binding("shift+tab", "app.focus_previous", "Tree ⇄ detail", show=False),
        Binding("e", "expand_all", "Expand all"),
        Binding("t", "timeline", "Timeline"),
    ]

    def __init__(self, data: DataSource, run_id: str):
        super().__init__()
        self.data = data
        self.run_id = run_id
        self.nodes: dict[str, TreeNode] = {}
        self.run: dict | None = None
        self.breakdown: RunBreakdown | None = None
        self._breakdown_at: tuple[int, float] = (-1, 0.0)   # (calls, when) the breakdown was read for
        self._loading = False
        self._detail_for: str | None = None
        self.shown_call: dict | None = None     # the call whose detail is on screen
        self._label_width = 0

    def compose(self) -> ComposeResult:
        self.sub_title = f"run {printable(self.run_id)}"
        yield Header()
        with VerticalScroll(id="timeline-scroll"):
            yield Timeline(id="timeline")
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

    def on_resize(self) -> None:
        self.call_after_refresh(self._relabel)

    def refresh_data(self) -> None:
        if self._loading or (self.run is not None and self.run["status"] != "running"):
            return
        self._loading = True
        self._load()

    @work(thread=True, group="run-load")
    def _load(self) -> None:
        import time

        run = self.data.run_detail(self.run_id)
        breakdown = None
        # the breakdown reads every request body of the run: again only when calls landed, and at most every
        # few s while it runs (the last read, once it stopped, is always made: no refresh follows it)
        if run is not None and run["calls"] != self._breakdown_at[0] and (
                run["status"] != "running" or time.monotonic() - self._breakdown_at[1] > 3):
            breakdown = self.data.run_breakdown(self.run_id)
            self._breakdown_at = (run["calls"], time.monotonic())
        self.app.call_from_thread(self._apply, run, breakdown)

    def _apply(self, run: dict | None, breakdown: RunBreakdown | None = None) -> None:
        self._loading = False
        tree = self.query_one("#trace", Tree)
        if run is None:
            tree.root.set_label(Text(f"{printable(self.run_id)}: no such run", style="red"))
            return
        first = self.run is None
        self.run = run
        self.breakdown = breakdown or self.breakdown
        self.query_one("#timeline", Timeline).update_run(run, self.data.clock())
        tree.root.set_label(fmt.fit(run_label(run), Text(), self._tree_width()))
        tree.root.data = ("run", run)
        width = self._tree_width()
        for step in run["steps"]:
            node = self.nodes.get(step["call_id"])
            if node is None:
                node = tree.root.add(call_label(step, width - 4), data=("call", step), expand=False)
                self.nodes[step["call_id"]] = node
                for n, a in enumerate(step["attempts"], 1):
                    node.add_leaf(attempt_label(a, n, width - 8), data=("attempt", (a, n)))
            else:
                node.set_label(call_label(step, width - 4))
                node.data = ("call", step)
        if first or self._detail_for == "run":
            self._show(tree.root)

    def _tree_width(self) -> int:
        """Cells a label of the tree's top level has (the guides take 4 a level)."""
        tree = self.query_one("#trace", Tree)
        return max(20, tree.scrollable_content_region.width - 2) if tree.size.width else 200

    def _relabel(self) -> None:
        width = self._tree_width()
        if width == self._label_width:
            return
        self._label_width = width
        for node in self.nodes.values():
            node.set_label(call_label(node.data[1], width - 4))
            for leaf in node.children:
                leaf.set_label(attempt_label(*leaf.data[1], width - 8))

    @on(Tree.NodeHighlighted, "#trace")
    def _highlighted(self, event: Tree.NodeHighlighted) -> None:
        self._show(event.node)

    @on(Timeline.Jump)
    def _jump(self, event: Timeline.Jump) -> None:
        """Enter on a bar: its call in the tree, its detail beside it."""
        node = self.nodes.get(event.call_id)
        if node is None:
            return
        tree = self.query_one("#trace", Tree)
        tree.move_cursor(node)
        tree.focus()
        self._show(node)

    def _show(self, node: TreeNode) -> None:
        kind, payload = node.data or ("run", None)
        box = self.query_one("#detail", Static)
        if kind == "run":
            self._detail_for = "run"
            box.update(detail.render_run(payload, self.breakdown) if payload else Text("loading…", style="dim"))
        elif kind == "attempt":
            self._detail_for = "attempt"
            box.update(detail.render_attempt(*payload))
        else:
            if self._detail_for == payload["call_id"]:
                return
            self._detail_for = payload["call_id"]
            box.update(Text(f"loading call {payload['call_id']}…", style="dim"))
            self._load_call(payload["call_id"])
        if kind != "run":
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

    def action_timeline(self) -> None:
        self.query_one("#timeline", Timeline).focus()
