"""`cassette save|show`, and `serve --cassette FILE [--on-miss error|live|record]`."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..settings import resolve_paths
from ._common import FAILED, OK, USAGE, fail, no_database


def register(sub, config_sub, common) -> None:
    c = sub.add_parser("cassette", help="recorded calls as a cassette file, for playback in tests")
    csub = c.add_subparsers(dest="cassette_command", required=True)
    s = csub.add_parser("save", help="write the calls of recorded runs to a cassette file")
    common(s)
    s.add_argument("--run", action="append", default=[], metavar="ID", help="a run to include (repeatable)")
    s.add_argument("--tag", action="append", default=[], metavar="K=V", help="only runs with this tag (repeatable)")
    s.add_argument("--since", help="only runs started since: a duration ago (24h) or an ISO time")
    s.add_argument("--out", required=True, metavar="FILE", help="the cassette to write (replaced atomically)")
    s.set_defaults(func=save)
    sh = csub.add_parser("show", help="what a cassette holds, one line per recorded call")
    common(sh)
    sh.add_argument("file", metavar="FILE")
    sh.add_argument("--json", action="store_true", help="the header and calls as one JSON document")
    sh.set_defaults(func=show)
    # serve registers itself first (cli.COMMANDS); playback adds its two flags to it here
    serve = sub.choices["serve"]
    serve.add_argument("--cassette", metavar="FILE", help="answer from this cassette instead of the providers")
    serve.add_argument("--on-miss", choices=("error", "live", "record"), default="error",
                       help="a request the cassette lacks: error (4xx cassette_miss, default), live (route it), "
                            "record (route it and append it to the cassette)")


def save(args) -> int:
    from ..playback.save import cassette_from
    from ..replay.selection import Selection
    from ..storage import connect
    from .replay_cmd import _pairs, _time_arg

    if not (args.run or args.tag or args.since):
        return fail("say which runs: --run ID, --tag K=V and/or --since 24h", USAGE)
    try:
        sel = Selection(since=_time_arg(args.since), tags=_pairs(args.tag, "--tag"), run_ids=tuple(args.run))
    except ValueError as e:
        return fail(str(e), USAGE)
    paths = resolve_paths(args.data_dir, args.config_dir)
    if not paths.db_path.exists():
        return no_database(paths)
    conn = connect(paths.db_path, readonly=True)
    try:
        cas, skipped = cassette_from(conn, sel, Path(args.out))
    finally:
        conn.close()
    if not cas.entries:
        runs = cas.header["selection"]["runs"]
        return fail(f"no answered calls in the selected runs ({len(runs)} runs matched); nothing written")
    cas.save()
    runs = cas.header["selection"]["runs"]
    print(f"wrote {args.out}: {len(cas.entries)} calls from {len(runs)} run(s)"
          + (f" ({skipped} failed or unanswerable calls left out)" if skipped else ""))
    return OK


def show(args) -> int:
    from ..playback import CassetteError, load

    try:
        cas = load(args.file)
    except CassetteError as e:
        return fail(str(e))
    rows = [_row(i, e) for i, e in enumerate(cas.entries)]
    if args.json:
        print(json.dumps({"header": cas.header, "calls": rows}, indent=2))
        return OK
    h = cas.header
    saved = sum(r["cost_usd"] or 0 for r in rows)
    print(f"{args.file}: cassette format v{h.get('modelux_cassette')}, created {h.get('created_at')}, "
          f"{len(rows)} calls, ${saved:.6f} recorded cost")
    runs = (h.get("selection") or {}).get("runs")
    if runs:
        print(f"  runs: {', '.join(runs)}")
    print(f"  {'LINE':>4}  {'ENDPOINT':<10} {'ALIAS':<14} {'ANSWERED BY':<26} {'STREAM':<6} {'COST':>10}  REQUEST")
    for r in rows:
        cost = "-" if r["cost_usd"] is None else f"${r['cost_usd']:.6f}"
        print(f"  {r['line']:>4}  {r['endpoint']:<10} {r['alias'] or '-':<14} {r['answered_by'] or '-':<26} "
              f"{'yes' if r['stream'] else 'no':<6} {cost:>10}  {r['summary']}")
    return OK


def _row(i: int, e) -> dict:
    return {"line": i + 2, "endpoint": e.endpoint, "alias": e.alias, "answered_by": e.answered_by,
            "stream": e.stream, "cost_usd": e.cost_usd, "summary": _summary(e.request)}


def _summary(req: dict, width: int = 60) -> str:
    """The last message (or the input) of a request, on one line."""
    hist = req.get("messages") if "messages" in req else req.get("input")
    last = hist[-1] if isinstance(hist, list) and hist else hist
    if isinstance(last, dict):
        content = last.get("content")
        text = content if isinstance(content, str) else json.dumps(content)
        text = f"{last.get('role', '?')}: {text}"
    else:
        text = json.dumps(last) if not isinstance(last, str) else last
    n = len(hist) if isinstance(hist, list) else 1
    text = f"[{n}] " + " ".join(str(text).split())
    return text if len(text) <= width else text[:width - 1] + "…"


def playback_for(args):
    """serve: the Playback to attach (None when the flags ask for nothing), or an exit code on a bad file."""
    from ..playback import CassetteError, load_playback

    try:
        return load_playback(getattr(args, "cassette", None), getattr(args, "on_miss", "error"))
    except CassetteError as e:
        print(f"modelux-local: {e}", file=sys.stderr)
        return FAILED


def banner_line(pb) -> str | None:
    if pb.cassette is None:
        return None
    return (f"  playback: {pb.cassette.path} ({len(pb.cassette.entries)} recorded calls; on a miss: {pb.on_miss})")


