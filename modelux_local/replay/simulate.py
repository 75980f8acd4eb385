"""One `simulate`: select runs, replay (or reprice) them, judge, diff, store the report.

Used by the CLI, the bench and (later) the TUI. All writes go through a storage Writer
started here, so a server writing the same database concurrently is fine (SQLite WAL), and
an interrupted replay still leaves every stored call with its run rollup and a report
marked partial.
"""
from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ..config.loader import ConfigSet
from ..errors import BadRequest
from ..pricing import NANOS_PER_USD, nanos_to_usd
from ..storage import Writer, connect, migrate
from ..storage import replays as store
from .diff import RunFigures, candidate_latency, compare
from .engine import Replayer, RunReplay, run_all
from .evaluators import Verdict, make_evaluator
from .selection import Selection, load_run, select_runs


@dataclass
class Options:
    candidate: str                      # routing config name, without the @
    selection: Selection = field(default_factory=Selection)
    mode: str = "live"                  # live | reprice
    maps: dict[str, str] = field(default_factory=dict)
    evaluator: str = "similarity"
    threshold: float | None = None
    rubric: str | None = None
    max_cost_usd: float | None = None
    concurrency: int = 8
    window_label: str | None = None     # "last 24h" for the header


@dataclass
class Progress:
    runs_total: int = 0
    runs_done: int = 0
    requests: int = 0
    spent_nusd: int = 0
    started: float = field(default_factory=time.monotonic)


def new_replay_id() -> str:
    return os.urandom(4).hex()


def _most_common_config(run_replays: list[RunReplay], default: str) -> str:
    counts: dict[str, int] = {}
    for rr in run_replays:
        for c in rr.original.calls:
            if c.config:
                counts[c.config] = counts.get(c.config, 0) + 1
    return max(counts, key=counts.get) if counts else default


def _figures(rr: RunReplay, verdict: Verdict | None, mode: str) -> tuple[RunFigures, bool | None]:
    run = rr.original
    cur_success = run.succeeded
    live = mode == "live"
    cand_cost, cand_model_ms, cand_errors, unpriced = 0, 0.0, 0, False
    for rc in rr.calls:
        if rc.status == "skipped":  # not replayable: the recorded figures stand on both sides
            cand_cost += rc.original.cost_nusd or 0
            cand_model_ms += rc.original.latency_ms or 0.0
            cand_errors += int(rc.original.failed)
            continue
        unpriced |= rc.cost_nusd is None and rc.status in ("ok", "estimated")
        cand_cost += rc.cost_nusd or 0
        cand_model_ms += rc.latency_ms or 0.0
        cand_errors += int(rc.failed)
    cand_success = None
    if live:
        accepted = verdict.accepted if verdict is not None and verdict.judged else True
        cand_success = bool(cur_success and cand_errors == 0 and accepted)
    figs = RunFigures(
        cur_cost=run.cost_nusd / NANOS_PER_USD,
        cand_cost=None if unpriced else cand_cost / NANOS_PER_USD,
        cur_latency=run.duration_s,
        cand_latency=candidate_latency(run.duration_s, run.model_time_s, cand_model_ms / 1000) if live else None,
        cur_requests=len(run.calls), cur_errors=sum(1 for c in run.calls if c.failed),
        cand_requests=len(rr.calls), cand_errors=cand_errors if live else None,
        cur_success=cur_success, cand_success=cand_success)
    return figs, cand_success


def _window(runs: list[RunReplay]) -> tuple[str, float | None, float | None]:
    if not runs:
        return "no runs", None, None
    t0 = min(r.original.started_at for r in runs)
    t1 = max(r.original.last_at for r in runs)
    a, b = (datetime.fromtimestamp(t, UTC) for t in (t0, t1))
    if (t1 - t0) < 86400 and a.date() == b.date():
        return f"{a:%Y-%m-%d %H:%M} → {b:%H:%M} UTC", t0, t1
    return f"{a:%Y-%m-%d} → {b:%Y-%m-%d}", t0, t1


async def simulate(cs: ConfigSet, db_path: Path, opts: Options, *, replay_id: str | None = None,
                   on_progress: Callable[[Progress], None] | None = None,
                   stop: asyncio.Event | None = None) -> dict:
    """Runs the replay and returns its report (also stored). `stop` set -> a partial report."""
    if opts.candidate not in cs.routing:
        raise BadRequest(f"no config @{opts.candidate} in {cs.source}; configs: "
                         + ", ".join("@" + n for n in cs.routing))
    if opts.mode not in ("live", "reprice"):
        raise BadRequest(f"--mode must be live or reprice, not {opts.mode!r}")
    replay_id = replay_id or new_replay_id()
    sel = opts.selection
    if not sel.seed:
        sel = Selection(sel.since, sel.until, sel.tags, sel.run_ids, sel.sample, replay_id)
    conn = connect(db_path)
    migrate(conn)
    run_ids = select_runs(conn, sel)
    writer = Writer(db_path)
    writer.start()
    max_cost = None if opts.max_cost_usd is None else int(opts.max_cost_usd * NANOS_PER_USD)
    replayer = Replayer(cs, opts.candidate, replay_id, mode=opts.mode, maps=opts.maps,
                        submit=writer.submit if opts.mode == "live" else None, max_cost_nusd=max_cost)
    evaluator = None
    if opts.mode == "live":
        evaluator = make_evaluator(opts.evaluator, cs.server.promotion, replayer, conn=conn,
                                   cache_write=writer.execute, threshold=opts.threshold, rubric=opts.rubric)
    progress = Progress(runs_total=len(run_ids))
    done: list[tuple[RunReplay, RunFigures, Verdict | None]] = []
    incomplete: list[RunReplay] = []
    writer.execute(store.insert_replay(replay_id, mode=opts.mode, candidate=opts.candidate,
                                       candidate_version=replayer.version, baseline=cs.default_name,
                                       evaluator=opts.evaluator if evaluator else "none", selection=sel.as_dict(),
                                       runs_total=len(run_ids)))

    async def on_done(rr: RunReplay) -> None:
        verdict = None
        if rr.complete and evaluator is not None and not replayer.stop.is_set():
            verdict = await evaluator.judge(rr)
        if not rr.complete or (evaluator is not None and verdict is None):
            incomplete.append(rr)  # stopped inside the run (Ctrl-C, --max-cost): left out of the diff
            writer.execute(store.insert_replay_run(replay_id, rr.original.run_id, rr.replay_run_id, "partial",
                                                   rr.original.succeeded, None, None, {"calls": len(rr.calls)}))
        else:
            figs, cand_ok = _figures(rr, verdict, opts.mode)
            done.append((rr, figs, verdict))
            detail = {"cur_cost_usd": figs.cur_cost, "cand_cost_usd": figs.cand_cost,
                      "cur_latency_s": figs.cur_latency, "cand_latency_s": figs.cand_latency,
                      "requests": figs.cand_requests, "cand_errors": figs.cand_errors}
            writer.execute(store.insert_replay_run(replay_id, rr.original.run_id, rr.replay_run_id, "done",
                                                   figs.cur_success, cand_ok, verdict, detail))
        for c in rr.calls:  # keep only figures: bodies of finished runs are not needed any more
            c.original.request = c.original.response = None
            c.message = None
        progress.runs_done += 1
        progress.requests, progress.spent_nusd = replayer.requests, replayer.spent_nusd
        if on_progress:
            on_progress(progress)

    async def watch_stop() -> None:
        if stop is not None:
            await stop.wait()
            replayer.halt("interrupted")

    watcher = asyncio.create_task(watch_stop())
    failed: BaseException | None = None
    try:
        await run_all(replayer, run_ids, lambda rid: load_run(conn, rid), on_done, opts.concurrency)
    except BaseException as e:  # noqa: BLE001 - a crash still stores a partial report below
        failed = e
        replayer.halt(f"failed: {type(e).__name__}: {e}")
    finally:
        watcher.cancel()
        await replayer.aclose()
    report = build_report(replay_id, opts, cs, replayer, done, incomplete, len(run_ids), evaluator)
    status = "completed" if not report["partial"] else "partial"
    writer.execute(store.finish_replay(replay_id, status, report, len(done), replayer.requests,
                                       replayer.spent_nusd, replayer.stop_reason))
    await asyncio.to_thread(writer.close)
    conn.close()
    if failed is not None and not isinstance(failed, (asyncio.CancelledError, KeyboardInterrupt)):
        raise failed
    return report


def build_report(replay_id: str, opts: Options, cs: ConfigSet, replayer: Replayer,
                 done: list[tuple[RunReplay, RunFigures, Verdict | None]], incomplete: list[RunReplay],
                 selected: int, evaluator) -> dict:
    done.sort(key=lambda t: (t[0].original.started_at, t[0].original.run_id))
    figs = [f for _, f, _ in done]
    diff = compare(figs, seed=replay_id)
    verdicts = [v for _, _, v in done if v is not None]
    judged = [v for v in verdicts if v.judged]
    scores = [v.score for v in judged if v.score is not None]
    window, t0, t1 = _window([rr for rr, _, _ in done])
    partial = replayer.stop.is_set() or len(done) < selected
    quality = {"evaluator": opts.evaluator if evaluator else None,
               "description": evaluator.describe if evaluator else "not measured (reprice: no new outputs)",
               "threshold": getattr(evaluator, "threshold", None),
               "judged": len(judged), "accepted": sum(1 for v in judged if v.accepted),
               "not_judged": len(done) - len(judged) if evaluator else len(done),
               "mean_score": round(sum(scores) / len(scores), 4) if scores else None}
    return {
        "replay_id": replay_id, "status": "partial" if partial else "completed", "partial": partial,
        "stopped_reason": replayer.stop_reason, "mode": opts.mode, "estimate": opts.mode == "reprice",
        "candidate_config": f"@{opts.candidate}", "candidate_version": replayer.version,
        "baseline_config": f"@{_most_common_config([rr for rr, _, _ in done], cs.default_name)}",
        "window_label": opts.window_label,
        "runs_selected": selected, "runs_replayed": len(done), "runs_incomplete": len(incomplete),
        "requests": sum(f.cand_requests for f in figs),
        "requests_sent": replayer.requests,
        "window": window, "window_start": t0, "window_end": t1,
        "current": diff["current"], "candidate": diff["candidate"], "delta": diff["delta"], "ci": diff["ci"],
        "quality": quality,
        "replay_cost_usd": nanos_to_usd(replayer.spent_nusd) if opts.mode == "live" else 0.0,
        "max_cost_usd": opts.max_cost_usd,
        "maps": opts.maps,
        "latency_basis": "run duration; candidate = recorded agent time + replayed call latencies",
        "created_at": time.time(),
    }
