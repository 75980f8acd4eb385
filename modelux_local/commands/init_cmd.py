"""`init [DIR]`: a starter config directory with commented examples for real providers."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from ..config.loader import load_dir

STARTER = Path(__file__).resolve().parent.parent / "config" / "starter"


def register(sub, config_sub, common) -> None:
    i = sub.add_parser("init", help="write a starter config directory")
    common(i)
    i.add_argument("dir", nargs="?", default="modelux-config")
    i.add_argument("--force", action="store_true", help="overwrite existing files")
    i.set_defaults(func=run)


def run(args) -> int:
    dest = Path(args.dir)
    files = sorted(STARTER.glob("*.toml"))
    clashes = [f.name for f in files if (dest / f.name).exists()]
    if clashes and not args.force:
        print(f"error: {dest} already has {', '.join(clashes)}; pass --force to overwrite", file=sys.stderr)
        return 1
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copyfile(f, dest / f.name)
    cs = load_dir(dest)  # what we ship must load
    print(f"wrote {dest}/: {', '.join(f.name for f in files)}")
    print(f"  serving @{cs.default_name}; configs: {', '.join('@' + n for n in cs.routing)}")
    print(f"  next: edit {dest}/modelux.toml (uncomment a provider, export its key), then")
    print(f"        modelux-local serve --config-dir {dest}")
    return 0
