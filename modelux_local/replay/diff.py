"""CURRENT vs CANDIDATE over the same runs, with a 95% paired bootstrap interval per delta.

Per run: cost (USD), latency (s), requests, failed requests, success. Latency rows are per
run; error rate is per request (failed / sent, pooled over runs); success is per run.

Run latency: CURRENT is the recorded run duration (first call's start to last call's end).
A replay cannot reproduce the agent's own time between calls, so CANDIDATE keeps it and swaps
the model time: candidate = max(0, recorded duration - recorded call latencies) + replayed
call latencies. Runs are resampled as pairs, so the interval reflects run-to-run variation.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from ..core.stats import percentile

METRICS = ("mean_cost_per_run", "p50_latency_s", "p95_latency_s", "error_rate", "agent_success")
RELATIVE = ("mean_cost_per_run", "p50_latency_s", "p95_latency_s")  # deltas as a share; the rates as a difference
BOOTSTRAP_SAMPLES = 1000


@dataclass(frozen=True, slots=True)
class RunFigures:
    cur_cost: float
    cand_cost: float | None
    cur_latency: float
    cand_latency: float | None      # None: not measured (reprice)
    cur_requests: int
    cur_errors: int
    cand_requests: int
    cand_errors: int | None         # None: not measured (reprice)
    cur_success: bool
    cand_success: bool | None       # None: not measured (reprice)


def candidate_latency(recorded_duration_s: float, recorded_model_s: float, replayed_model_s: float) -> float:
    return max(0.0, recorded_duration_s - recorded_model_s) + replayed_model_s


def _side(runs: Sequence[RunFigures], cand: bool) -> dict[str, float | None]:
    if not runs:
        return {m: None for m in METRICS}
    if cand:
        costs = [r.cand_cost for r in runs]
        lats = [r.cand_latency for r in runs]
        reqs, errs = [r.cand_requests for r in runs], [r.cand_errors for r in runs]
        succ = [r.cand_success for r in runs]
    else:
        costs = [r.cur_cost for r in runs]
        lats = [r.cur_latency for r in runs]
        reqs, errs = [r.cur_requests for r in runs], [r.cur_errors for r in runs]
        succ = [r.cur_success for r in runs]
    out: dict[str, float | None] = {}
    out["mean_cost_per_run"] = None if any(c is None for c in costs) else sum(costs) / len(costs)
    if any(x is None for x in lats):
        out["p50_latency_s"] = out["p95_latency_s"] = None
    else:
        s = sorted(lats)
        out["p50_latency_s"], out["p95_latency_s"] = percentile(s, 50), percentile(s, 95)
    total = sum(reqs)
    out["error_rate"] = None if any(e is None for e in errs) else (sum(errs) / total if total else 0.0)
    out["agent_success"] = None if any(x is None for x in succ) else sum(1 for x in succ if x) / len(succ)
    return out


def _delta(cur: dict, cand: dict) -> dict[str, float | None]:
    d: dict[str, float | None] = {}
    for m in METRICS:
        a, b = cur[m], cand[m]
        if a is None or b is None:
            d[m] = None
        elif m in RELATIVE:
            d[m] = (b - a) / a if a else (0.0 if b == a else None)
        else:
            d[m] = b - a
    return d


def compare(runs: Sequence[RunFigures], seed: str = "", samples: int = BOOTSTRAP_SAMPLES) -> dict:
    """{"current", "candidate", "delta", "ci"}: ci[m] = [low, high] of the delta, or None."""
    cur, cand = _side(runs, False), _side(runs, True)
    delta = _delta(cur, cand)
    return {"current": cur, "candidate": cand, "delta": delta, "ci": bootstrap_ci(runs, seed, samples, delta)}


def bootstrap_ci(runs: Sequence[RunFigures], seed: str, samples: int, delta: dict) -> dict[str, list[float] | None]:
    n = len(runs)
    wanted = [m for m in METRICS if delta.get(m) is not None]
    if n == 0 or not wanted:
        return {m: None for m in METRICS}
    rng = random.Random(f"bootstrap:{seed}")
    draws: dict[str, list[float]] = {m: [] for m in wanted}
    idx = range(n)
    for _ in range(samples):
        pick = [runs[i] for i in rng.choices(idx, k=n)]
        d = _delta(_side(pick, False), _side(pick, True))
        for m in wanted:
            if d[m] is not None:
                draws[m].append(d[m])
    out: dict[str, list[float] | None] = {m: None for m in METRICS}
    for m in wanted:
        s = sorted(draws[m])
        if s:
            out[m] = [percentile(s, 2.5), percentile(s, 97.5)]
    return out


def fmt_delta(metric: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    if metric in RELATIVE:
        return f"{value * 100:+.1f}%"
    return f"{value * 100:+.2f}pp"


