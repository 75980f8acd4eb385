"""Argument parsing and wiring only: each command lives in modelux_local/commands/."""
from __future__ import annotations

import argparse
import sys


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="where modelux.db lives (default: $MODELUX_HOME or the platform data dir)")
    p.add_argument("--config-dir", help="config directory (default: $MODELUX_CONFIG_DIR or the embedded default)")


# The command table, in the order `--help` lists them. Each module's `register(sub, config_sub, common)`
# adds its parsers; config_cmd creates the `config` group (returned) that later modules add to.
COMMANDS = ("serve", "init_cmd", "config_cmd", "control_cmd", "export_cmd", "replay_cmd", "runs_cmd", "cassette_cmd",
            "demo", "tui_cmd")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="modelux-local", description="A local LLM gateway for agent builders.")
    ap.add_argument("--version", action="version", version=_version())
    sub = ap.add_subparsers(dest="command", required=True)
    config_sub = None
    for name in COMMANDS:
        config_sub = _cmd(name).register(sub, config_sub, _common) or config_sub
    return ap


def _cmd(name: str):
    import importlib

    return importlib.import_module(f"modelux_local.commands.{name}")


def _version() -> str:
    from . import __version__

    return f"modelux-local {__version__}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
