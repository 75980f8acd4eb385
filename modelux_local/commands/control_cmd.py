"""`outcome`, `abort`, `webhooks`: act on runs and inspect webhook deliveries, straight on the database.

These work whether or not a server is running: a running server learns of a CLI abort within
about a second (it polls `run_aborts`) and delivers events the CLI queued (it polls the outbox).
"""
from __future__ import annotations

import json
import sys

from ..errors import ConfigError
from ..settings import resolve_paths
from ..storage import outbox, runs
from ._common import fail, no_database, positive_int


def register(sub, config_sub, common) -> None:
    o = sub.add_parser("outcome", help="record an agent's result for a run")
    common(o)
    o.add_argument("run_id", metavar="RUN_ID")
    g = o.add_mutually_exclusive_group(required=True)
    g.add_argument("--success", dest="success", action="store_true", help="the run achieved its goal")
    g.add_argument("--failure", dest="success", action="store_false", help="it did not")
    o.add_argument("--score", type=float, help="a score, e.g. 0.0-1.0")
    o.add_argument("--note", help="free text")
    o.set_defaults(func=outcome)

    a = sub.add_parser("abort", help="abort a run: its next calls are refused (402 run_aborted)")
    common(a)
    a.add_argument("run_id", metavar="RUN_ID")
    a.add_argument("--reason", help="why (shown in the 402 and the run.aborted webhook)")
    a.set_defaults(func=abort)

    w = sub.add_parser("webhooks", help="webhook events and their delivery attempts")
    common(w)
    w.add_argument("--limit", type=positive_int, default=50, help="most recent N events (default 50)")
    w.add_argument("--json", action="store_true", help="one JSON document: {\"events\": [...]}")
    w.set_defaults(func=webhooks)


def _open(args):
    """The database, the webhooks of the config, and a Reader for run summaries; None when there is
    no database (there is no run to act on, and a mistyped --data-dir must not leave one behind)."""
    from ..config.loader import load_dir
    from ..storage import Reader, open_db

    paths = resolve_paths(args.data_dir, args.config_dir)
    if not paths.db_path.exists():
        no_database(paths)
        return None
    try:
        server = load_dir(paths.config_dir).server
        hooks, idle = server.webhooks, server.runs.idle_timeout_s
    except ConfigError as e:  # still act on the run; events then go to no webhook
        print(f"warning: config not loaded ({e.message}); no webhooks will be notified", file=sys.stderr)
        hooks, idle = [], 300.0
    conn = open_db(paths.db_path)
    return conn, hooks, Reader(paths.db_path, idle), paths


def outcome(args) -> int:
    from ..analytics.events import record_outcome

    opened = _open(args)
    if opened is None:
        return 1
    conn, hooks, reader, paths = opened
    out = {"success": args.success, "score": args.score, "note": args.note}
    with conn:
        found = record_outcome(conn, reader, hooks, args.run_id, out)
    if not found:
        return fail(f"no run {args.run_id!r} in {paths.db_path} (list runs with `modelux-local runs`)")
    print(f"run {args.run_id}: outcome {'success' if args.success else 'failure'}"
          + (f", score {args.score:g}" if args.score is not None else ""))
    return 0


def abort(args) -> int:
    from ..analytics.budgets import ABORTED
    from ..analytics.events import mark_aborted

    opened = _open(args)
    if opened is None:
        return 1
    conn, hooks, reader, paths = opened
    with conn:
        if not runs.exists(conn, args.run_id):
            return fail(f"no run {args.run_id!r} in {paths.db_path} (list runs with `modelux-local runs`)")
        changed = mark_aborted(conn, reader, hooks, args.run_id, args.reason or "aborted from the CLI", ABORTED,
                               "cli", log_abort=True)
        reason = runs.abort_reason(conn, args.run_id)
    # aborting twice is not an error (the run is aborted, as asked); the first reason stands
    print(f"run {args.run_id}: " + ("aborted; a running server refuses its next calls" if changed
                                    else f"was already aborted ({reason}); nothing changed"))
    return 0


def webhooks(args) -> int:
    opened = _open(args)
    if opened is None:
        return 1
    conn = opened[0]
    events = outbox.recent_events(conn, args.limit)
    if args.json:
        print(json.dumps({"events": events}, indent=2))
        return 0
    if not events:
        print("no events yet")
        return 0
    for e in reversed(events):
        print(f"{e['at']}  {e['event']:<20} run {e['run_id'] or '-':<24} {e['id']}")
        if not e["deliveries"]:
            print("    (no webhook subscribed)")
        for d in e["deliveries"]:
            extra = f", next try {d['next_at']}" if d["next_at"] else ""
            print(f"    -> {d['url']}  {d['status']} after {d['attempts']} attempt(s){extra}"
                  + (f"  last error: {d['last_error']}" if d["last_error"] and d["status"] != "delivered" else ""))
            for t in d["tries"]:
                res = f"HTTP {t['http_status']}" if t["http_status"] else "no response"
                print(f"       #{t['attempt']} {t['at']}  {res}  {t['latency_ms']} ms" + (f"  {t['error']}" if t["error"] else ""))
    return 0
