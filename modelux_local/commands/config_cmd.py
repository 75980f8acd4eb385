"""`config check|list|show`: validate and inspect config directories."""
from __future__ import annotations

import sys
from pathlib import Path

from ..config.loader import load_dir
from ..errors import ConfigError
from ..settings import resolve_paths


def register(sub, config_sub, common):
    """The `config` group and its check/list/show; returns the group for other modules' subcommands."""
    c = sub.add_parser("config", help="configs: list, show, check, history, promote, rollback")
    csub = c.add_subparsers(dest="config_command", required=True)
    cc = csub.add_parser("check", help="validate a config directory")
    common(cc)
    cc.add_argument("dir", nargs="?")
    cc.set_defaults(func=check)
    cl = csub.add_parser("list", help="routing configs with versions")
    common(cl)
    cl.set_defaults(func=list_)
    cs = csub.add_parser("show", help="one routing config")
    common(cs)
    cs.add_argument("name", metavar="@NAME")
    cs.set_defaults(func=show)
    return csub


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
    promoted = _promoted(args, cs)
    print(f"{'CONFIG':<20} {'VERSION':<14} {'SERVES':<20} ALIASES")
    for name, rc in cs.routing.items():
        roles = (["default"] if name == cs.default_name else []) + \
                (["bound"] if any(b.config == name for b in cs.server.routing.bind) else [])
        version = cs.versions[name]
        if name in promoted:
            number, version, source = promoted[name]
            roles.append(f"promoted v{number}")
        print(f"@{name:<19} {version:<14} {' '.join(roles):<20} {', '.join('@' + a for a in rc.aliases)}")
    for name, (number, version, source) in promoted.items():
        print(f"  @{name}: serving v{number} ({source}) from the database; `config history` for the audit trail")
    return 0


def _promoted(args, cs) -> dict[str, tuple[int, str, str]]:
    """Configs whose serving content was pinned by `config promote`/`rollback` (read from the database)."""
    db = resolve_paths(args.data_dir, args.config_dir).db_path
    if not db.exists():
        return {}
    from ..replay.promotion import current_serving
    from ..storage import connect

    conn = connect(db, readonly=True)
    try:
        out = {}
        for name in cs.routing:
            try:
                s = current_serving(conn, cs, name)
            except Exception:  # an older database without the serving tables: files serve
                return {}
            if s.number is not None:
                out[name] = (s.number, s.content_version, s.source)
        return out
    finally:
        conn.close()


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
