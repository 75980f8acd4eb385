"""The replay screen: progress while the marked runs replay against a candidate config, then the
seed's diff table (CURRENT / CANDIDATE / DELTA) with promote, diff and rollback-plan actions."""
from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, ProgressBar, Static

from ..data import DataSource
from ..widgets import format as fmt
from ..widgets import stepdiff

# (label, field, kind): kind says how to show values and deltas
METRICS = [("mean cost/run", "mean_cost_per_run", "money"), ("p50 latency", "p50_latency_s", "seconds"),
           ("p95 latency", "p95_latency_s", "seconds"), ("error rate", "error_rate", "share"),
           ("agent success", "agent_success", "share")]


def _value(v, kind: str) -> str:
    if v is None:
        return "—"
    if kind == "money":
        return fmt.money(v)
    if kind == "seconds":
        return f"{v:.2f}s"
    return f"{v * 100:.2f}%"


def _delta(cur, cand, kind: str, higher_is_better: bool = False) -> Text:
    """Percent change for money and seconds, percentage points for shares; green when it improves."""
    if cur is None or cand is None or (kind != "share" and not cur):
        return Text("—", style="dim")
    d = (cand - cur) * 100 if kind == "share" else (cand - cur) / cur * 100
    text = f"{d:+.2f}pp" if kind == "share" else f"{d:+.1f}%"
    better = d >= 0 if higher_is_better else d <= 0
    return Text(text, style="green" if better else "red")


def _ci(bounds, kind: str) -> str:
    """The replay's bootstrap 95 % interval of the delta: shares of the current value, or points."""
    if not bounds:
        return "—"
    unit = "pp" if kind == "share" else "%"
    return f"[{bounds[0] * 100:+.1f}, {bounds[1] * 100:+.1f}]{unit}"


def diff_rows(report: dict) -> list[tuple[str, str, str, Text, str]]:
    cur, cand, ci = report.get("current") or {}, report.get("candidate") or {}, report.get("ci") or {}
    return [(label, _value(cur.get(key), kind), _value(cand.get(key), kind),
             _delta(cur.get(key), cand.get(key), kind, higher_is_better=key == "agent_success"), _ci(ci.get(key), kind))
            for label, key, kind in METRICS]


class ReplayScreen(Screen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("p", "promote", "Promote"),
        Binding("d", "diff", "Diff"),
        Binding("b", "rollback_plan", "Rollback plan"),
    ]

    def __init__(self, data: DataSource, run_ids: list[str], candidate: str):
        super().__init__()
        self.data = data
        self.run_ids = run_ids
        self.candidate = candidate
        self.report: dict | None = None

    def compose(self) -> ComposeResult:
        self.sub_title = f"replay against @{self.candidate}"
        yield Header()
        yield Static(Text.assemble(("Replaying ", "bold"), f"{len(self.run_ids)} run(s) against ",
                                   (f"@{self.candidate}", "bold cyan"), " …"), id="replay-title")
        yield ProgressBar(total=len(self.run_ids), id="replay-progress", show_eta=False)
        table = DataTable(id="diff", cursor_type="row", show_cursor=False)
        for col in ("", "CURRENT", "CANDIDATE", "DELTA", "95% CI"):
            table.add_column(col, key=col or "metric")
        yield table
        yield Static(id="replay-notes")
        per_run = DataTable(id="replay-runs", cursor_type="row")
        for col in ("run", "status", "cost now", "cost candidate", "verdict"):
            per_run.add_column(col, key=col)
        yield per_run
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#diff").display = False
        self.query_one("#replay-runs").display = False
        self._run()

    @work(thread=True, exclusive=True, group="replay")
    def _run(self) -> None:
        def progress(done: int, total: int) -> None:
            self.app.call_from_thread(self._progress, done, total)

        try:
            report = self.data.run_replay(self.run_ids, self.candidate, progress)
        except Exception as e:  # shown, not raised: the TUI stays up
            self.app.call_from_thread(self._failed, e)
            return
        self.app.call_from_thread(self._done, report)

    def _progress(self, done: int, total: int) -> None:
        self.query_one("#replay-progress", ProgressBar).update(total=total, progress=done)

    def _failed(self, e: Exception) -> None:
        self.query_one("#replay-title", Static).update(Text(f"replay failed: {e}", style="bold red"))

    def _done(self, report: dict) -> None:
        self.report = report
        bar = self.query_one("#replay-progress", ProgressBar)
        bar.update(total=bar.total or 1, progress=bar.total or 1)
        self.query_one("#replay-title", Static).update(Text.assemble(
            ("Replay ", "bold"), (str(report.get("replay_id")), "bold magenta"), f"  @{self.candidate}  ",
            f"runs_replayed {report.get('runs_replayed')}  requests {report.get('requests')}"))
        table = self.query_one("#diff", DataTable)
        table.clear()
        for label, cur, cand, delta, ci in diff_rows(report):
            table.add_row(label, cur, cand, delta, ci, key=label)
        table.display = True
        self.query_one("#replay-notes", Static).update(self._notes(report))
        self._load_runs(report["replay_id"])

    @work(thread=True, group="replay")
    def _load_runs(self, replay_id: str) -> None:
        rows = self.data.replay_runs(replay_id)
        self.app.call_from_thread(self._show_runs, rows)

    def _show_runs(self, rows: list[dict]) -> None:
        per_run = self.query_one("#replay-runs", DataTable)
        for r in rows:
            d = r["detail"]
            verdict = r.get("verdict") or ("accepted" if r.get("accepted") else "—")
            per_run.add_row(r["original_run_id"], r["status"], fmt.money(d.get("cur_cost_usd")),
                            fmt.money(d.get("cand_cost_usd")), str(verdict), key=r["original_run_id"])
        per_run.display = bool(rows)
        if rows:
            per_run.focus()

    def _notes(self, report: dict) -> RenderableType:
        lines: list[RenderableType] = []
        if report.get("replay_cost_usd") is not None:
            lines.append(Text(f"the replay itself cost {fmt.money(report['replay_cost_usd'])}", style="dim"))
        q = report.get("quality") or {}
        if q.get("description"):
            lines.append(Text(f"quality: {q['description']}: {q.get('accepted', 0)} of {q.get('judged', 0)} "
                              f"judged runs accepted", style="dim"))
        if report.get("replay_id"):
            lines.append(Text(f"replay id {report['replay_id']}: `modelux config promote @{self.candidate} "
                              f"--replay {report['replay_id']}`", style="dim"))
        lines.append(Text("[p] promote   [d] diff (the run highlighted below)   [b] rollback-plan", style="bold"))
        return Group(*lines)

    def action_promote(self) -> None:
        if not self.report:
            return
        self.app.promote_dialog(self.candidate, self.report.get("replay_id"))

    def action_diff(self) -> None:
        if not self.report:
            return
        per_run = self.query_one("#replay-runs", DataTable)
        run_id = self.run_ids[0]
        if per_run.row_count:
            run_id = per_run.coordinate_to_cell_key(per_run.cursor_coordinate).row_key.value
        pairs = self.data.replay_step_pairs(self.report["replay_id"], run_id)
        self.app.push_screen(TextScreen(f"per-step diff of {run_id}",
                                        stepdiff.render_step_diff(self.report["replay_id"], run_id, pairs)))

    def action_rollback_plan(self) -> None:
        if self.report:
            try:
                plan = self.data.rollback_plan(self.candidate)
            except Exception as e:  # noqa: BLE001 - shown, the TUI stays up
                plan = f"no rollback plan: {e}"
            self.app.push_screen(TextScreen("rollback plan", plan))


class TextScreen(Screen):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, title: str, body: RenderableType | str):
        super().__init__()
        self.title_text, self.body = title, body

    def compose(self) -> ComposeResult:
        self.sub_title = self.title_text
        yield Header()
        with VerticalScroll(id="text-scroll"):
            yield Static(self.body)
        yield Footer()
