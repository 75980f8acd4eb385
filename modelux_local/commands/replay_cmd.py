"""`simulate`, `replays list|show`, `config history|promote|rollback`: replay, diff, ship, revert."""
from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from datetime import UTC, datetime

from ..config.loader import load_dir
from ..core.durations import DurationError, argparse_duration, parse_duration
from ..errors import ConfigError, ModeluxError
from ..settings import resolve_paths
from ._common import FAILED, USAGE, fail, no_database, non_negative_float, positive_int


def register(sub, config_sub, common) -> None:
    s = sub.add_parser("simulate", help="replay recorded runs against a candidate config and diff the results")
    common(s)
    s.add_argument("--replay", default="24h", type=argparse_duration, metavar="DURATION",
                   help="how far back to take runs (30m, 24h, 7d; default 24h)")
    s.add_argument("--config", required=True, metavar="@NAME", help="the candidate routing config")
    s.add_argument("--tag", action="append", default=[], metavar="K=V", help="only runs with this tag (repeatable)")
    s.add_argument("--run-id", action="append", default=[], metavar="ID", help="only these runs (repeatable)")
    s.add_argument("--since", help="start of the window: a duration ago (48h) or an ISO time (overrides --replay)")
    s.add_argument("--until", help="end of the window: a duration ago or an ISO time (default now)")
    s.add_argument("--sample", type=positive_int, metavar="N", help="a random sample of N of the selected runs")
    s.add_argument("--mode", choices=("live", "reprice"), default="live",
                   help="live: send every request again (default); reprice: price the recorded usage, no calls")
    s.add_argument("--map", action="append", default=[], metavar="OLD=NEW",
                   help="send requests for model OLD to NEW instead (repeatable), e.g. mock/mock-large=mock/mock-small")
    s.add_argument("--eval", default="similarity", choices=("similarity", "judge", "tool_calls", "json_valid"),
                   help="how candidate outputs are judged (default similarity)")
    s.add_argument("--threshold", type=float, help="similarity: the cosine that accepts (default [promotion])")
    s.add_argument("--rubric", help="judge: the rubric the judge applies (default [promotion] judge_rubric)")
    s.add_argument("--max-cost", type=non_negative_float, metavar="USD", help="stop the replay once it has spent this much")
    s.add_argument("--concurrency", type=positive_int, default=8, help="runs replayed at once (default 8)")
    s.add_argument("--json", action="store_true", help="the report as one JSON document")
    s.set_defaults(func=simulate)

    r = sub.add_parser("replays", help="stored replay reports")
    rsub = r.add_subparsers(dest="replays_command", required=True)
    rl = rsub.add_parser("list", help="replays, newest first")
    common(rl)
    rl.add_argument("--json", action="store_true")
    rl.set_defaults(func=replays_list)
    rs = rsub.add_parser("show", help="one replay's report, or the per-step diff of one of its runs")
    common(rs)
    rs.add_argument("replay_id", metavar="ID")
    rs.add_argument("--run", metavar="RUN_ID", help="original run id: its steps side by side with the replay's")
    rs.add_argument("--json", action="store_true")
    rs.set_defaults(func=replays_show)

    h = config_sub.add_parser("history", help="the audit trail of promotions and rollbacks")
    common(h)
    h.add_argument("--json", action="store_true")
    h.set_defaults(func=config_history)
    p = config_sub.add_parser("promote", help="make a candidate the serving config (gated by its replay)")
    common(p)
    p.add_argument("name", metavar="@NAME")
    p.add_argument("--replay", metavar="ID", help="the replay that judges it (default: the latest of this config)")
    p.add_argument("--reason", help="why, for the audit trail")
    p.add_argument("--force", action="store_true", help="promote even if the gate fails (recorded as forced)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=config_promote)
    b = config_sub.add_parser("rollback", help="restore a previous serving content from the database")
    common(b)
    b.add_argument("--to", metavar="VERSION", help="serving version number (default: what served before the last change)")
    b.add_argument("--reason", help="why, for the audit trail")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=config_rollback)


# -- helpers ----------------------------------------------------------------------------------

_err = fail


def _time_arg(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return time.time() - parse_duration(text)
    except DurationError:
        pass
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is neither a duration (24h) nor an ISO time (2026-04-13T09:00)") from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for it in items:
        k, sep, v = it.partition("=")
        if not sep or not k:
            raise ValueError(f"{what} {it!r}: expected K=V")
        out[k] = v
    return out


def _open(args, create: bool = False):
    """(paths, connection), or (paths, None) after saying there is no database; only `create` makes one."""
    from ..storage import connect, migrate

    paths = resolve_paths(args.data_dir, args.config_dir)
    if not create and not paths.db_path.exists():
        no_database(paths)
        return paths, None
    conn = connect(paths.db_path)
    migrate(conn)
    return paths, conn


def _dump(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


# -- simulate ---------------------------------------------------------------------------------

def simulate(args) -> int:
    from ..replay.progress import Meter
    from ..replay.report import header, render
    from ..replay.selection import Selection
    from ..replay.simulate import Options, Progress, new_replay_id
    from ..replay.simulate import simulate as run_simulate

    paths = resolve_paths(args.data_dir, args.config_dir)
    try:
        since = _time_arg(args.since) if args.since else time.time() - parse_duration(args.replay)
        until = _time_arg(args.until)
        sel = Selection(since=since, until=until, tags=_pairs(args.tag, "--tag"), run_ids=tuple(args.run_id),
                        sample=args.sample)
        maps = _pairs(args.map, "--map")
    except ValueError as e:
        return _err(str(e), USAGE)
    try:
        cs = load_dir(paths.config_dir)
    except ConfigError as e:
        return _err(e.message)
    candidate = args.config.lstrip("@")
    if candidate not in cs.routing:
        return _err(f"no config @{candidate} in {cs.source}; configs: {', '.join('@' + n for n in cs.routing)}")
    if not paths.db_path.exists():
        return no_database(paths)
    label = f"the {args.since}..{args.until or 'now'} window" if args.since else f"last {args.replay}"
    if not _any_run(paths, sel):  # checked before anything prints or a replay is stored
        return _err(f"no recorded runs to replay in {label}{_filters(args)} in {paths.db_path} "
                    "(see `modelux-local runs`; --since widens the window)")
    opts = Options(candidate=candidate, selection=sel, mode=args.mode, maps=maps,
                   evaluator=args.eval, threshold=args.threshold, rubric=args.rubric, max_cost_usd=args.max_cost,
                   concurrency=max(1, args.concurrency), window_label=label)
    if not args.json:
        print(header(args.mode, label, "@" + opts.candidate), flush=True)

    async def main() -> dict:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        task = asyncio.current_task()

        def on_sigint():
            if not stop.is_set():
                print("\n  stopping: letting requests in flight finish (Ctrl-C again to abandon them)...",
                      file=sys.stderr, flush=True)
                stop.set()
            else:
                task.cancel()

        loop.add_signal_handler(signal.SIGINT, on_sigint)
        meter = Meter(Progress())
        meter.start()
        try:
            return await run_simulate(cs, paths.db_path, opts, replay_id=new_replay_id(),
                                      on_progress=meter.update, stop=stop)
        finally:
            await meter.stop()
            loop.remove_signal_handler(signal.SIGINT)

    try:
        report = asyncio.run(main())
    except ModeluxError as e:
        return _err(e.message, USAGE if e.status == 400 else FAILED)
    if args.json:
        _dump(report)
    else:
        print(render(report), end="")
        if sys.stdout.isatty():  # the actions are a prompt; in a pipe or a file they would be noise
            print("\n  [promote]  [diff]  [rollback-plan]")
            if sys.stdin.isatty() and not report["partial"]:
                _interactive(args, paths, cs, report)
    return 130 if report.get("stopped_reason") == "interrupted" else 0


def _any_run(paths, sel) -> bool:
    from ..replay.selection import Selection, select_runs
    from ..storage import connect

    conn = connect(paths.db_path, readonly=True)
    try:
        return bool(select_runs(conn, Selection(sel.since, sel.until, sel.tags, sel.run_ids)))
    finally:
        conn.close()


def _filters(args) -> str:
    parts = [f"tag {t}" for t in args.tag] + [f"run {r}" for r in args.run_id]
    return f" matching {', '.join(parts)}" if parts else ""


def _interactive(args, paths, cs, report) -> None:
    from ..replay import promotion
    from ..storage import connect

    while True:
        try:
            choice = input("  p = promote, d = diff a run, r = rollback-plan, enter = done > ").strip().lower()
        except EOFError:
            return
        if not choice:
            return
        conn = connect(paths.db_path)
        try:
            if choice.startswith("p"):
                reason = input("  reason (for the audit trail) > ").strip() or None
                try:
                    res = promotion.promote(conn, cs, report["candidate_config"], replay_id=report["replay_id"],
                                            reason=reason)
                except ModeluxError as e:
                    print(f"  {e.message}")
                    continue
                _print_promoted(paths, conn, res)
                return
            if choice.startswith("d"):
                run_id = input("  original run id (enter: the run whose cost changed most) > ").strip()
                run_id = run_id or _most_changed(conn, report["replay_id"])
                if run_id:
                    _print_steps(conn, report["replay_id"], run_id)
            elif choice.startswith("r"):
                target = report["baseline_config"].lstrip("@")
                cur = promotion.current_serving(conn, cs, target)
                where = f"serving version {cur.number}" if cur.number else f"the content of {cur.source}"
                print(f"  [rollback-plan] after promoting {report['candidate_config']}, `modelux config rollback` "
                      f"restores @{target} to {where} (content {cur.content_version}) from the database.")
        finally:
            conn.close()


def _most_changed(conn, replay_id: str) -> str | None:
    from ..storage import replays as store

    runs = [r for r in store.replay_runs(conn, replay_id) if r["status"] == "done"]
    if not runs:
        return None
    return max(runs, key=lambda r: abs((r["detail"].get("cand_cost_usd") or 0) - (r["detail"].get("cur_cost_usd") or 0)))[
        "original_run_id"]


def _print_steps(conn, replay_id: str, run_id: str) -> None:
    from ..replay.report import render_steps
    from ..storage import replays as store

    print(render_steps(replay_id, run_id, store.step_pairs(conn, replay_id, run_id)), end="")


# -- replays ----------------------------------------------------------------------------------

def replays_list(args) -> int:
    from ..replay.report import render_list
    from ..storage import replays as store

    _, conn = _open(args)
    if conn is None:
        return FAILED
    rows = store.list_replays(conn)
    for r in rows:
        r["report"] = (store.get_replay(conn, r["replay_id"]) or {}).get("report")
    if args.json:
        _dump({"replays": rows})
    else:
        print(render_list(rows), end="") if rows else print("no replays yet: `modelux simulate --config=@NAME`")
    return 0


def replays_show(args) -> int:
    from ..replay.report import render
    from ..storage import replays as store

    _, conn = _open(args)
    if conn is None:
        return FAILED
    rp = store.get_replay(conn, args.replay_id)
    if rp is None:
        return _err(f"no replay {args.replay_id!r}; see `modelux replays list`")
    if args.run:
        pairs = store.step_pairs(conn, args.replay_id, args.run)
        if not pairs:
            return _err(f"no run {args.run!r} (give the original run id)")
        if args.json:
            _dump({"replay_id": args.replay_id, "run_id": args.run, "steps": [
                {"original": _step_json(o), "candidate": _step_json(c)} for o, c in pairs]})
        else:
            _print_steps(conn, args.replay_id, args.run)
        return 0
    if args.json:
        _dump({**rp, "runs": store.replay_runs(conn, args.replay_id)})
    elif rp["report"] is None:
        print(f"replay {args.replay_id}: {rp['status']}, no report "
              f"({rp['runs_done']}/{rp['runs_total']} runs, {rp['requests']} requests)")
    else:
        print(render(rp["report"]), end="")
    return 0


def _step_json(c: dict | None) -> dict | None:
    if c is None:
        return None
    from ..pricing import nanos_to_usd
    from ..replay.report import _answer

    return {**{k: v for k, v in c.items() if k not in ("response", "cost_nusd")},
            "cost_usd": nanos_to_usd(c.get("cost_nusd")), "output": _answer(c)}


# -- config history / promote / rollback ------------------------------------------------------

def config_history(args) -> int:
    from ..replay import promotion

    _, conn = _open(args)
    if conn is None:
        return FAILED
    hist = promotion.history(conn)
    if args.json:
        _dump({"history": hist})
        return 0
    if not hist:
        print("no promotion or rollback yet")
        return 0
    for h in hist:
        when = datetime.fromtimestamp(h["at"]).strftime("%Y-%m-%d %H:%M:%S")
        what = (f"promote {h['candidate']} as @{h['name']}" if h["action"] == "promote" else f"rollback @{h['name']}")
        line = (f"#{h['id']:<3} {when}  {h['who']:<10} {what}: v{h['from_number']} ({h['from_version']}) -> "
                f"v{h['to_number']} ({h['to_version']})")
        f = h.get("figures") or {}
        if h.get("replay_id"):
            d = f.get("delta") or {}
            from ..replay.diff import fmt_delta
            line += (f"  replay {h['replay_id']}: cost {fmt_delta('mean_cost_per_run', d.get('mean_cost_per_run'))}, "
                     f"success {fmt_delta('agent_success', d.get('agent_success'))}")
        if h["forced"]:
            line += "  [forced past the gate]"
        if h.get("reason"):
            line += f"  reason: {h['reason']}"
        print(line)
    return 0


def config_promote(args) -> int:
    from ..replay import promotion

    paths = resolve_paths(args.data_dir, args.config_dir)
    if not paths.db_path.exists():
        if not args.force:  # no database, so no replay can judge the candidate
            return _err(f"no database at {paths.db_path}, so no replay of @{args.name.lstrip('@')} to judge it "
                        "(check --data-dir or MODELUX_HOME; `modelux-local simulate` first, or --force)")
        print(f"note: no database at {paths.db_path} yet; creating it for this promotion", file=sys.stderr)
    paths, conn = _open(args, create=True)
    try:
        cs = load_dir(paths.config_dir)
        res = promotion.promote(conn, cs, args.name, replay_id=args.replay, reason=args.reason, force=args.force)
    except promotion.GateRefused as e:
        print(f"refused: @{args.name.lstrip('@')} does not pass the promotion gate:", file=sys.stderr)
        for f in e.failures:
            print(f"  - {f}", file=sys.stderr)
        print("thresholds are set in [promotion] of modelux.toml; --force promotes anyway (audited as forced)",
              file=sys.stderr)
        return 4
    except (ModeluxError, ConfigError) as e:
        return _err(e.message)
    res["live_in"], res["pending_in"] = promotion.wait_live(paths.db_path, res["audit_id"])
    if args.json:
        res["rollback_plan"] = _rollback_plan(conn, res)
        _dump(res)
    else:
        _print_promoted(paths, conn, res, waited=True)
    return 0


def _rollback_plan(conn, res: dict) -> dict:
    from ..replay import promotion

    info = promotion.version_info(conn, res["from_number"]) or {}
    return {"command": f"modelux config rollback --to {res['from_number']}", "restores": {
        "name": res["name"], "number": res["from_number"], "content_version": info.get("content_version"),
        "source": info.get("source"), "routes": info.get("routes")}}


def _print_promoted(paths, conn, res: dict, waited: bool = False) -> None:
    from ..replay import promotion

    if not waited:
        res["live_in"], res["pending_in"] = promotion.wait_live(paths.db_path, res["audit_id"])
    forced = " (forced past: " + "; ".join(res["forced_past"]) + ")" if res.get("forced_past") else ""
    print(f"promoted {res['candidate']}: @{res['name']} now serves version {res['to_number']} "
          f"(content {res['to_version']}), was version {res['from_number']} ({res['from_version']}){forced}")
    print(f"  audit #{res['audit_id']} by {res['who']}" + (f", replay {res['replay_id']}" if res["replay_id"] else ""))
    if res["live_in"]:
        print(f"  live now in the running server (pid {', '.join(map(str, res['live_in']))})")
    elif res["pending_in"]:
        print(f"  the running server (pid {', '.join(map(str, res['pending_in']))}) has not confirmed yet; "
              "it applies the change within a second")
    else:
        print("  no running server seen: it takes effect when `modelux serve` starts")
    plan = _rollback_plan(conn, res)
    r = plan["restores"]
    print("\n[rollback-plan]")
    print(f"  {plan['command']}")
    print(f"  restores @{r['name']} to version {r['number']} (content {r['content_version']}, from {r['source']}):")
    for alias, targets in (r["routes"] or {}).items():
        print(f"    {alias:<14} -> {' | '.join(targets)}")
    print("  the content comes from the database, so it restores even if the file has changed or is gone")


def config_rollback(args) -> int:
    from ..replay import promotion

    to = None
    if args.to:
        try:
            to = int(args.to.lstrip("vV#"))
        except ValueError:
            return _err(f"--to {args.to!r}: a version number from `modelux config history`", USAGE)
    paths, conn = _open(args)
    if conn is None:
        return FAILED
    try:
        cs = load_dir(paths.config_dir)
        res = promotion.rollback(conn, cs, to=to, reason=args.reason)
    except (ModeluxError, ConfigError) as e:
        return _err(e.message)
    res["live_in"], res["pending_in"] = promotion.wait_live(paths.db_path, res["audit_id"])
    if args.json:
        _dump(res)
        return 0
    info = promotion.version_info(conn, res["to_number"]) or {}
    print(f"rolled back @{res['name']}: now serves version {res['to_number']} (content {res['to_version']}, "
          f"from {info.get('source')}), was version {res['from_number']} ({res['from_version']})")
    for alias, targets in (info.get("routes") or {}).items():
        print(f"    {alias:<14} -> {' | '.join(targets)}")
    print(f"  audit #{res['audit_id']} by {res['who']}"
          + (f"; live now in the running server (pid {', '.join(map(str, res['live_in']))})" if res["live_in"] else ""))
    return 0

