"""Small modal screens: help, a yes/no confirmation, and a choice from a list."""
from __future__ import annotations

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, OptionList, Static

HELP = [
    ("everywhere", [("?  F1", "this help"), ("ctrl+p", "command palette"), ("esc", "back"), ("q", "quit (stops the proxy when serving)")]),
    ("runs", [("↑ ↓  enter", "move, open the run's trace"), ("space", "mark a run for replay"),
              ("r", "replay the marked runs (or the one under the cursor)"), ("/", "filter: words, or tag k=v"),
              ("s  S", "sort by started / cost / calls / duration / budget / usual; reverse"), ("c", "configs"),
              ("● ✓ ✗ ◆", "running / completed / aborted / marked (the status glyphs of a narrow terminal)"),
              ("budget", "the run's use of the limit it is closest to (max_cost_usd, max_calls, max_tokens…, "
                         "or its agent's usual run: x2.3 of usual = 2.3 times its p90)")]),
    ("run", [("↑ ↓", "walk the tree: run → calls → attempts"), ("enter", "expand / collapse a call"),
             ("e", "expand every call"), ("tab", "move to the detail pane and scroll it (↑ ↓ pgup pgdn)"),
             ("t", "the timeline: ↑ ↓ a call, enter its detail, + - zoom, ← → pan, 0 fit")]),
    ("configs", [("p", "promote a candidate config (asks first)"), ("b", "roll back (asks first)")]),
    ("replay", [("p  d  b", "promote / per-step diff / rollback plan")]),
]


class HelpScreen(ModalScreen):
    BINDINGS = [Binding("escape,q,question_mark,f1", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        t = Table(box=None, padding=(0, 2), show_header=False)
        t.add_column(style="bold cyan", no_wrap=True)
        t.add_column()
        for section, rows in HELP:
            t.add_row(Text(section, style="bold underline"), "")
            for k, v in rows:
                t.add_row(k, v)
        with VerticalScroll(id="dialog"):  # scrolls at 80x24
            yield Static(Text("modelux-local — keys  (↑ ↓ scroll, esc close)", style="bold"))
            yield Static(t)


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str):
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.question)
            yield Static(Text("y: yes    n / esc: no", style="dim"))
            with Horizontal(id="buttons"):
                yield Button("Yes", id="yes", variant="warning")
                yield Button("No", id="no")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class ChooseScreen(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, options: list[str], labels: list[RenderableType] | None = None,
                 highlighted: int = 0):
        super().__init__()
        self.start = highlighted
        self.title_text = title
        self.options = options            # what the dialog returns
        self.labels = labels or options   # what it shows (a name with its description)

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(Text(self.title_text, style="bold"))
            yield OptionList(*self.labels, id="choices")
            yield Static(Text("↑ ↓ enter: choose    esc: cancel", style="dim"))

    def on_mount(self) -> None:
        choices = self.query_one(OptionList)
        choices.highlighted = self.start
        choices.focus()

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.options[event.option_index])

    def action_cancel(self) -> None:
        self.dismiss(None)
