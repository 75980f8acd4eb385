"""`config check|list|show`: validate and inspect config directories."""
from __future__ import annotations

import sys
from pathlib import Path

from ..config.loader import load_dir
from ..errors import ConfigError
from ..settings import resolve_paths


def _load(dir_arg: str | None, args):
    """The config set, or None after printing why it cannot load."""
    directory = Path(dir_arg) if dir_arg else resolve_paths(args.data_dir, args.config_dir).config_dir
    try:
        return load_dir(directory)
    except ConfigError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return None


def check(args) -> int:
    cs = _load(args.dir, args)
    if cs is None:
        return 1
    print(f"ok: {cs.source}")
    print(f"  providers: {', '.join(f'{n} ({p.kind})' for n, p in cs.server.providers.items()) or 'none'}")
    for name, rc in cs.routing.items():
        mark = " (default)" if name == cs.default_name else ""
        print(f"  @{name}{mark} version {cs.versions[name]}: {', '.join('@' + a for a in rc.aliases) or 'no aliases'}")
    return 0


def list_(args) -> int:
    cs = _load(None, args)
    if cs is None:
        return 1
    print(f"{'CONFIG':<20} {'VERSION':<14} {'SERVES':<8} ALIASES")
    for name, rc in cs.routing.items():
        serves = "default" if name == cs.default_name else ""
        binds = [b for b in cs.server.routing.bind if b.config == name]
        if binds:
            serves = (serves + " ").lstrip() + "bound"
        print(f"@{name:<19} {cs.versions[name]:<14} {serves:<8} {', '.join('@' + a for a in rc.aliases)}")
    return 0


def show(args) -> int:
    cs = _load(None, args)
    if cs is None:
        return 1
    name = args.name.lstrip("@")
    if name not in cs.routing:
        print(f"error: no config @{name}; configs: {', '.join('@' + n for n in cs.routing)}", file=sys.stderr)
        return 1
    rc = cs.routing[name]
    print(f"# @{name}  version {cs.versions[name]}  ({cs.files.get(name, cs.source)})")
    if rc.description:
        print(f"# {rc.description}")
    for alias, a in rc.aliases.items():
        targets = " | ".join(f"{t.provider}/{t.model}" + (f" w={t.weight:g}" if a.strategy == "loadbalance" else "")
                             for t in a.targets)
        print(f"#   @{alias:<12} {a.strategy:<11} {targets}  (retries {a.retries.attempts} on {','.join(a.retries.on)})")
    print(cs.texts[name], end="" if cs.texts[name].endswith("\n") else "\n")
    return 0
