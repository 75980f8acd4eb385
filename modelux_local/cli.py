"""Argument parsing and wiring only: each command lives in modelux_local/commands/."""
from __future__ import annotations

import argparse
import sys


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="where modelux.db lives (default: $MODELUX_HOME or the platform data dir)")
    p.add_argument("--config-dir", help="config directory (default: $MODELUX_CONFIG_DIR or the embedded default)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="modelux-local", description="A local LLM gateway for agent builders.")
    ap.add_argument("--version", action="version", version=_version())
    sub = ap.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the proxy (and the TUI in a terminal)")
    _common(s)
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--headless", action="store_true", help="no TUI: the proxy alone, with log lines")
    s.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host (needs MODELUX_TOKEN)")
    s.add_argument("--quiet", action="store_true", help="no per-call log lines")
    s.set_defaults(func=lambda a: _cmd("serve").run(a))

    i = sub.add_parser("init", help="write a starter config directory")
    _common(i)
    i.add_argument("dir", nargs="?", default="modelux-config")
    i.add_argument("--force", action="store_true", help="overwrite existing files")
    i.set_defaults(func=lambda a: _cmd("init_cmd").run(a))

    c = sub.add_parser("config", help="configs: list, show, check, history, promote, rollback")
    csub = c.add_subparsers(dest="config_command", required=True)
    cc = csub.add_parser("check", help="validate a config directory")
    _common(cc)
    cc.add_argument("dir", nargs="?")
    cc.set_defaults(func=lambda a: _cmd("config_cmd").check(a))
    cl = csub.add_parser("list", help="routing configs with versions")
    _common(cl)
    cl.set_defaults(func=lambda a: _cmd("config_cmd").list_(a))
    cs = csub.add_parser("show", help="one routing config")
    _common(cs)
    cs.add_argument("name", metavar="@NAME")
    cs.set_defaults(func=lambda a: _cmd("config_cmd").show(a))
    for register in _EXTRA:
        register(sub, csub, _common)
    return ap


# Command groups added by other rooms register themselves here: fn(subparsers, config_subparsers, common).
_EXTRA: list = []


def _cmd(name: str):
    import importlib

    return importlib.import_module(f"modelux_local.commands.{name}")


def _version() -> str:
    from . import __version__

    return f"modelux-local {__version__}"


def main(argv: list[str] | None = None) -> int:
    _load_extras()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


def _load_extras() -> None:
    """Command groups of other rooms; each module exposes `register(sub, config_sub, common)`."""
    import importlib
    import pkgutil

    from . import commands

    for m in pkgutil.iter_modules(commands.__path__):
        mod = importlib.import_module(f"modelux_local.commands.{m.name}")
        reg = getattr(mod, "register", None)
        if reg is not None and reg not in _EXTRA:
            _EXTRA.append(reg)


if __name__ == "__main__":
    sys.exit(main())
