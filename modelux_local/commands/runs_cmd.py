"""`runs`, `trace`, `analytics`, `logs search`: the read side from the command line.

They read the database directly (a server may or may not be running) with the same
functions the management API uses, so `--json` is shaped exactly like the API's answer.
Exit codes (see _common): 0 ok, 1 no database / no such run / no embeddings, 2 bad input
(bad duration, filter, limit or search syntax).
"""
from __future__ import annotations

import asyncio
import sys

import msgspec

from ..core.display import printable
from ..core.durations import argparse_duration
from ..errors import BadRequest, ModeluxError
from ..settings import resolve_paths
from . import runs_render as render
from ._common import USAGE, fail, no_database, positive_int


def register(sub, config_sub, common) -> None:
    p = sub.add_parser("runs", help="runs with calls, tokens, cost, p50/p95 latency, errors")
    common(p)
    p.add_argument("--since", type=argparse_duration, help="only runs started within this duration (30m, 24h, 7d)")
    p.add_argument("--tag", action="append", default=[], metavar="K=V", help="only runs with this tag (repeatable)")
    p.add_argument("--status", choices=["running", "completed", "aborted"])
    p.add_argument("--sort", choices=["started", "cost", "calls", "over_usual"], default="started",
                   help="newest first, or highest; over_usual: running runs by how far past their agent's p90")
    p.add_argument("--limit", type=positive_int, default=50, help="at most N runs (default 50)")
    p.add_argument("--replays", action="store_true", help="include runs made by replays")
    p.add_argument("--json", action="store_true", help='one JSON document: {"runs": [RunSummary]}')
    p.set_defaults(func=runs)

    t = sub.add_parser("trace", help="a run as a tree: calls in order, attempts nested, decision trace")
    common(t)
    t.add_argument("run_id", metavar="RUN_ID")
    t.add_argument("--json", action="store_true", help="the RunSummary with steps (as GET /mlx/v1/runs/{id})")
    t.set_defaults(func=trace)

    a = sub.add_parser("analytics", help="cost, runs, calls, p50/p95 latency, error rate per tag value")
    common(a)
    a.add_argument("--group-by", required=True, metavar="TAG", help="a tag key, e.g. agent")
    a.add_argument("--since", type=argparse_duration, help="only runs started within this duration")
    a.add_argument("--tag", action="append", default=[], metavar="K=V", help="only runs with this tag (repeatable)")
    a.add_argument("--replays", action="store_true", help="include runs made by replays")
    a.add_argument("--by-model", action="store_true", help="each group's calls, tokens and cost by provider/model")
    a.add_argument("--json", action="store_true", help='one JSON document: {"groups": [...]}')
    a.set_defaults(func=analytics_cmd)

    lg = sub.add_parser("logs", help="search stored prompts and responses")
    lsub = lg.add_subparsers(dest="logs_command", required=True)
    s = lsub.add_parser("search", help="full-text (and --semantic) search over prompts and responses")
    common(s)
    s.add_argument("query", metavar="QUERY", help='FTS5 syntax: words, "a phrase", OR, NOT, prefix*')
    s.add_argument("--semantic", action="store_true", help="nearest meaning, via the @embedder alias")
    s.add_argument("--run-id", help="only calls of this run")
    s.add_argument("--tag", action="append", default=[], metavar="K=V", help="only calls with this tag (repeatable)")
    s.add_argument("--since", type=argparse_duration, help="only calls made within this duration")
    s.add_argument("--limit", type=positive_int, default=20, help="at most N calls (default 20)")
    s.add_argument("--json", action="store_true", help='one JSON document: {"query", "semantic", "results": [...]}')
    s.set_defaults(func=search_cmd)


# -- plumbing ---------------------------------------------------------------------------------

def _reader(args):
    """The paths and a Reader, or None for the Reader when there is no database (never created here)."""
    from ..config.loader import load_dir
    from ..errors import ConfigError
    from ..storage import Reader

    paths = resolve_paths(args.data_dir, args.config_dir)
    if not paths.db_path.exists():
        return paths, None
    try:
        server = load_dir(paths.config_dir).server
        idle, args.min_history = server.runs.idle_timeout_s, server.anomalies.cost_min_history
    except ConfigError as e:
        # a broken config must not hide the runs (the server would refuse to start on it anyway)
        print(f"warning: config not loaded ({e.message}); runs idle for 300 s count as completed",
              file=sys.stderr)
        idle, args.min_history = 300.0, 20
    return paths, Reader(paths.db_path, idle)


def _print_json(obj) -> None:
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(obj), indent=2).decode() + "\n")


# -- commands ---------------------------------------------------------------------------------

def runs(args) -> int:
    from ..storage.analytics_queries import list_runs, make_filter
    from ..storage.queries import untagged_calls

    paths, reader = _reader(args)
    if reader is None:
        return no_database(paths)
    try:
        flt = make_filter(since=args.since, tags=args.tag, status=args.status, include_replays=args.replays)
        found = list_runs(reader, flt, args.sort, args.limit, args.min_history)
    except BadRequest as e:
        return fail(e.message, USAGE)
    untagged = untagged_calls(reader.conn(), flt.since)
    if args.json:
        _print_json({"runs": found, "untagged_calls": untagged})
    else:
        print(render.runs_table(found, usual_first=args.sort == "over_usual"))
        if untagged:  # calls outside any run would otherwise be invisible here
            print(f"\n{untagged:,} call{'s' if untagged != 1 else ''} without a run_id (not in any run above): "
                  "tag calls with mlx:tags.run_id or the x-mlx-run-id header")
    return 0


def trace(args) -> int:
    paths, reader = _reader(args)
    if reader is None:
        return no_database(paths)
    run = reader.get_run(args.run_id, min_history=args.min_history)
    if run is None:
        return fail(f"no run {printable(args.run_id)!r} in {paths.db_path} (list runs with `modelux-local runs`)")
    if args.json:
        _print_json(run)
    else:
        from ..storage.breakdown import run_breakdown

        print(printable(render.trace_tree(run, run_breakdown(reader.conn(), args.run_id)), keep_newlines=True))  # client text
    return 0


def analytics_cmd(args) -> int:
    from ..storage.analytics_queries import analytics, make_filter

    paths, reader = _reader(args)
    if reader is None:
        return no_database(paths)
    try:
        flt = make_filter(since=args.since, tags=args.tag, include_replays=args.replays)
        doc = analytics(reader, args.group_by, flt, by_model=args.by_model)
    except BadRequest as e:
        return fail(e.message, USAGE)
    if args.json:
        _print_json(doc)
    else:
        print(render.analytics_table(doc))
    return 0


def search_cmd(args) -> int:
    from ..storage.search import catch_up, full_text, search_filter, semantic, unembedded

    paths, reader = _reader(args)
    if reader is None:
        return no_database(paths)
    if not 1 <= args.limit <= 1000:
        return fail("--limit must be between 1 and 1000", USAGE)
    try:
        flt = search_filter(args.run_id, args.tag, args.since, "=")
        conn = reader.conn()
        catch_up(conn)  # calls stored before the index existed (a no-op once caught up)
        if args.semantic:
            model, vec = _query_vector(paths, args.query)
            results = semantic(conn, vec, model, flt, args.query, args.limit)
            doc = {"query": args.query, "semantic": True, "model": model, "results": results}
            pending = unembedded(conn)
            if pending and not args.json:
                print(f"note: {pending} calls are not embedded yet (the server embeds them in the background)",
                      file=sys.stderr)
        else:
            doc = {"query": args.query, "semantic": False, "results": full_text(conn, args.query, flt, args.limit)}
    except BadRequest as e:
        return fail(e.message, USAGE if e.code != "no_embeddings" else 1)
    except ModeluxError as e:
        return fail(e.message)
    if args.json:
        _print_json(doc)
    else:
        print(render.search_results(doc, bold=sys.stdout.isatty()))
    return 0


def _query_vector(paths, query: str) -> tuple[str, list[float]]:
    """The query's embedding, the way the server embeds calls: @embedder of the config, no Runtime."""
    from ..calls import Snapshot
    from ..calls.embedder import Embedder
    from ..config.loader import load_dir
    from ..pricing import PriceBook
    from ..providers import build_provider
    from ..routing import Router

    cs = load_dir(paths.config_dir)
    providers = {name: build_provider(name, pc) for name, pc in cs.server.providers.items()}

    async def go():
        try:
            snap = Snapshot(cs, Router(cs), PriceBook(cs.server.prices, cs.server.providers), providers)
            return await Embedder(snap).embed([query])
        finally:
            for p in providers.values():
                await p.aclose()

    model, vectors = asyncio.run(go())
    return model, vectors[0]
