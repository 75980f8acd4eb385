"""The Textual app: screens, global keys, the command palette, and the replay / promotion flows."""
from __future__ import annotations

import re
from collections.abc import Iterable

from rich.text import Text
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from .data import NOTHING_TO_ROLL_BACK, DataSource
from .screens.configs import ConfigsScreen
from .screens.dialogs import ChooseScreen, ConfirmScreen, HelpScreen
from .screens.replay import ReplayScreen
from .screens.runs import RunsScreen


def _url_in(text: str) -> str | None:
    """`serve` passes its address in the subtitle ("serving http://127.0.0.1:4000/v1 · log …")."""
    m = re.search(r"https?://\S+/v1", text)
    return m[0] if m else None


def _freeze_heap() -> None:
    import gc

    gc.freeze()


class ModeluxApp(App):
    CSS_PATH = "modelux.tcss"
    TITLE = "modelux-local"
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark,f1", "help", "Help", key_display="?"),
    ]

    def __init__(self, data: DataSource, *, subtitle: str = "", base_url: str | None = None):
        super().__init__()
        self.data = data
        self.sub_title = subtitle
        self.theme = "textual-dark"
        self.base_url = base_url or _url_in(subtitle) or data.base_url()

    def on_mount(self) -> None:
        self.push_screen(RunsScreen(self.data))
        # once the screens exist, take their widgets out of the cyclic GC's full scans too: in
        # `serve` a long gen-2 collection here would stall the proxy thread (same GIL)
        self.set_timer(2.0, _freeze_heap)
        if not self.is_headless:
            self.set_interval(1.0, self._exit_if_terminal_gone)

    def _exit_if_terminal_gone(self) -> None:
        """A closed terminal (window closed, ssh dropped) without a SIGHUP leaves stdin at EOF and
        the input loop spinning; quit instead, so `serve` stops the proxy and drains the writer."""
        import os
        import sys

        try:
            os.get_terminal_size(sys.__stdout__.fileno())
        except (OSError, ValueError):
            self.exit()

    # -- navigation ------------------------------------------------------------------------

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_configs(self) -> None:
        if not isinstance(self.screen, ConfigsScreen):
            self.push_screen(ConfigsScreen(self.data))

    def action_runs(self) -> None:
        while len(self.screen_stack) > 2 and not isinstance(self.screen, RunsScreen):
            self.pop_screen()

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield SystemCommand("Runs", "The live runs table", self.action_runs)
        yield SystemCommand("Configs", "Routing configs, hot-reload status, promotions", self.action_configs)
        yield SystemCommand("Replay marked runs", "Replay the marked runs against a candidate config",
                            self._replay_marked)
        yield SystemCommand("Promote", "Promote a config (asks first)", self.promote_dialog)
        yield SystemCommand("Roll back", "Roll back the last promotion (asks first)", self.rollback_dialog)
        yield SystemCommand("Help", "Keys", self.action_help)
        yield from super().get_system_commands(screen)

    def _runs_screen(self) -> RunsScreen | None:
        return next((s for s in self.screen_stack if isinstance(s, RunsScreen)), None)

    def _replay_marked(self) -> None:
        runs = self._runs_screen()
        if runs is not None:
            runs.action_replay()

    # -- replay ----------------------------------------------------------------------------

    def start_replay(self, run_ids: list[str]) -> None:
        if not self.data.replay_available():
            self.notify("replay is not available in this build", severity="warning")
            return
        configs, labels = self._config_options()

        def chosen(name: str | None) -> None:
            if name:
                self.push_screen(ReplayScreen(self.data, run_ids, name))

        # the cursor starts on a candidate: replaying against the serving config compares it with itself
        serving = {name for name, _, is_serving in self.data.config_choices() if is_serving}
        first = next((i for i, name in enumerate(configs) if name not in serving), 0)
        self.push_screen(ChooseScreen(f"replay {len(run_ids)} run(s) against which config?", configs, labels,
                                      highlighted=first), chosen)

    def _config_options(self) -> tuple[list[str], list[Text]]:
        """Config names, and how a chooser shows them: which one serves, and each one's description."""
        choices = self.data.config_choices()
        labels = [Text.assemble((f"@{name}", "bold cyan"), ("  serving" if serving else "", "green"),
                                (f"  {description}" if description else "", "dim"))
                  for name, description, serving in choices]
        return [name for name, _, _ in choices], labels

    # -- promotion -------------------------------------------------------------------------

    def promote_dialog(self, name: str | None = None, replay_id: str | None = None) -> None:
        if not self.data.promotion_available():
            self.notify("promotion is not available in this build", severity="warning")
            return

        def confirm(target: str | None) -> None:
            if not target:
                return
            what = f"Promote @{target}" + (f" (replay {replay_id})" if replay_id else " without a replay")
            self.push_screen(ConfirmScreen(what + "?  It becomes the serving config."),
                             lambda yes: yes and self._do(self.data.promote, target, replay_id))

        if name:
            confirm(name)
        else:
            self.push_screen(ChooseScreen("promote which config?", *self._config_options()), confirm)

    def rollback_dialog(self) -> None:
        if not self.data.promotion_available():
            self.notify("rollback is not available in this build", severity="warning")
            return
        plan = self.data.rollback_plan(None)
        if plan == NOTHING_TO_ROLL_BACK:  # no question to ask
            self.notify(plan, severity="warning")
            return
        self.push_screen(ConfirmScreen(f"Roll back?\n{plan}"), lambda yes: yes and self._do(self.data.rollback))

    def _do(self, fn, *args) -> None:
        try:
            message = fn(*args)
        except Exception as e:  # refused promotions (gate, bad config) are messages, not crashes
            self.notify(str(e), title="refused", severity="error", timeout=8)
            return
        self.notify(Text(str(message)).plain, title="done")
