"""The budget guard: per-run limits checked in memory before each call is forwarded.

State per run (calls admitted, settled tokens and cost, reservations of calls in flight, first
call time) lives in this process; nothing here touches SQLite. A call is admitted while the
run's settled spend plus what calls in flight have reserved is below the cap, and it reserves
its own worst case (prompt estimate + max output tokens at the highest output price of its
plan). So N concurrent calls overspend by at most the last admitted reservation. On completion
the reservation is released and the real cost (priced here from cached rates) is settled.

What must reach the database (the run aborted, `budget.warning`) is handed to the writer with
the call that caused it (`Pending`), so it commits in that call's transaction.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from ..calls import Addon, CallContext
from ..config.schema import Budget
from ..core.records import CallRecord
from ..core.tags import tags_match
from ..core.usage import Usage
from ..errors import RunBlocked
from ..pricing import format_usd, nanos_to_usd
from .spend import (
    body_usage,
    chunk_output_chars,
    max_output_tokens,
    output_tokens_for_chars,
    prompt_tokens_estimate,
    stream_usage,
)

ABORTED = "run_aborted"
EXCEEDED = "run_budget_exceeded"


@dataclass(slots=True)
class RunState:
    started: float                      # wall time of the run's first call (max_duration_s counts from it)
    last: float
    calls: int = 0                      # admitted calls (refused ones do not count)
    tokens: int = 0                     # settled
    cost: int = 0                       # settled, nano-dollars
    reserved_cost: int = 0
    reserved_tokens: int = 0
    inflight: int = 0
    warned: bool = False
    blocked: tuple[str, str] | None = None   # (code, message): every later call is refused with it


@dataclass(slots=True)
class Ticket:
    """One admitted call's reservation, kept in ctx.state until it settles."""

    run: RunState
    budgets: list[Budget]
    prompt_tokens: int
    res_tokens: int
    res_cost: int
    prompt_cost: int                    # of the prompt estimate at the reserving price
    out_price: float                    # nanos per output token at the reserving price (0: unpriced)
    streamed_chars: int = 0
    cut: str | None = None


class Pending:
    """Events the guard raised, keyed by the call that caused them; the writer hook takes them."""

    def __init__(self) -> None:
        self._items: dict[str, list[tuple]] = {}
        self._lock = threading.Lock()

    def add(self, call_id: str, item: tuple) -> None:
        with self._lock:
            self._items.setdefault(call_id, []).append(item)

    def take(self, call_id: str) -> list[tuple]:
        if not self._items:
            return []
        with self._lock:
            return self._items.pop(call_id, [])


def _usd(n: int) -> str:
    return format_usd(nanos_to_usd(n), 6).rstrip("0").rstrip(".") if n else "$0"


def _limits(b: Budget) -> dict:
    return {k: v for k, v in (("max_cost_usd", b.max_cost_usd), ("max_calls", b.max_calls),
                              ("max_tokens", b.max_tokens), ("max_duration_s", b.max_duration_s),
                              ("warn_at", b.warn_at)) if v is not None}


class BudgetGuard(Addon):
    """The budget and abort guard: `before`, `on_chunk` and `after` hooks on the hot path (calls/hooks.py)."""

    def __init__(self, pending: Pending, signals: Any = None):
        self.pending = pending
        self.signals = signals  # wake-ups for webhook delivery and the history refresh (lifecycle.Signals)
        self.runs: dict[str, RunState] = {}

    # -- control from outside ------------------------------------------------------------

    def state(self, run_id: str, now: float | None = None) -> RunState:
        st = self.runs.get(run_id)
        if st is None:
            now = time.time() if now is None else now
            st = self.runs[run_id] = RunState(now, now)
        return st

    def block(self, run_id: str, code: str, message: str) -> None:
        self.state(run_id).blocked = (code, message)

    def busy(self, run_id: str) -> bool:
        st = self.runs.get(run_id)
        return st is not None and st.inflight > 0

    def prune(self, older_than: float) -> int:
        stale = [r for r, st in self.runs.items() if st.last < older_than and st.inflight == 0]
        for r in stale:
            del self.runs[r]
        return len(stale)

    # -- Guard interface ------------------------------------------------------------------

    def before(self, ctx: CallContext) -> None:
        rid = ctx.tags.get("run_id")
        if rid is None:
            return
        now = time.time()
        st = self.runs.get(rid)
        if st is None:
            st = self.runs[rid] = RunState(now, now)
        st.last = now
        if st.blocked:
            self._refuse(ctx, st, *st.blocked, sticky=False)
        budgets = [b for b in ctx.snapshot.configs.server.budgets if tags_match(b.match, ctx.tags)]
        if not budgets:
            st.calls += 1
            st.inflight += 1
            ctx.state["budget"] = Ticket(st, budgets, 0, 0, 0, 0, 0.0)
            return
        prompt = prompt_tokens_estimate(ctx.body)
        max_out = max_output_tokens(ctx.body, ctx.endpoint)
        res_cost, prompt_cost, out_price = 0, 0, 0.0
        book = ctx.snapshot.prices
        for t in ctx.plan.targets:  # the most expensive target the plan may end up on
            p = book.rates(t.provider, t.model) if book is not None else None  # cached by the book
            if p is not None and prompt * p.input_nanos + max_out * p.output_nanos > res_cost:
                res_cost = int(prompt * p.input_nanos + max_out * p.output_nanos)
                prompt_cost, out_price = int(prompt * p.input_nanos), p.output_nanos
        res_tokens = prompt + max_out
        for b in budgets:
            self._check(ctx, st, b, now, res_cost, res_tokens)
        st.calls += 1
        st.inflight += 1
        st.reserved_cost += res_cost
        st.reserved_tokens += res_tokens
        ctx.state["budget"] = Ticket(st, budgets, prompt, res_tokens, res_cost, prompt_cost, out_price)
        ctx.state.setdefault("guard_trace", []).append({
            "guard": "budget", "result": "allowed", "budgets": [_limits(b) for b in budgets],
            "run": self._figures(st, now), "reservation": {"tokens": res_tokens, "cost_usd": nanos_to_usd(res_cost),
                                                           "prompt_tokens_estimate": prompt, "max_output_tokens": max_out}})

    def _check(self, ctx: CallContext, st: RunState, b: Budget, now: float, res_cost: int, res_tokens: int) -> None:
        rid = ctx.tags["run_id"]
        if b.max_calls is not None and st.calls >= b.max_calls:
            self._refuse(ctx, st, EXCEEDED, f"run {rid!r} exceeded its budget: max_calls = {b.max_calls} "
                         f"({st.calls} calls made)", sticky=True)
        if b.max_duration_s is not None and now - st.started > b.max_duration_s:
            self._refuse(ctx, st, EXCEEDED, f"run {rid!r} exceeded its budget: max_duration_s = {b.max_duration_s:g} "
                         f"(running for {now - st.started:.1f}s)", sticky=True)
        if b.max_cost_usd is not None:
            cap = int(b.max_cost_usd * 1_000_000_000)
            if st.cost >= cap:
                self._refuse(ctx, st, EXCEEDED, f"run {rid!r} exceeded its budget: max_cost_usd = {b.max_cost_usd:g} "
                             f"(spent {_usd(st.cost)})", sticky=True)
            if st.reserved_cost and st.cost + st.reserved_cost >= cap:
                self._refuse(ctx, st, EXCEEDED, f"run {rid!r} would exceed its budget: max_cost_usd = "
                             f"{b.max_cost_usd:g} (spent {_usd(st.cost)}, {_usd(st.reserved_cost)} reserved by "
                             f"{st.inflight} calls in flight, this call needs up to {_usd(res_cost)})", sticky=False)
        if b.max_tokens is not None:
            if st.tokens >= b.max_tokens:
                self._refuse(ctx, st, EXCEEDED, f"run {rid!r} exceeded its budget: max_tokens = {b.max_tokens} "
                             f"({st.tokens} tokens used)", sticky=True)
            if st.reserved_tokens and st.tokens + st.reserved_tokens >= b.max_tokens:
                self._refuse(ctx, st, EXCEEDED, f"run {rid!r} would exceed its budget: max_tokens = {b.max_tokens} "
                             f"({st.tokens} used, {st.reserved_tokens} reserved by {st.inflight} calls in flight)",
                             sticky=False)

    def _refuse(self, ctx: CallContext, st: RunState, code: str, message: str, *, sticky: bool) -> None:
        """Raises 402. A sticky refusal blocks the run for good and aborts it (via the writer)."""
        if sticky and st.blocked is None:
            st.blocked = (code, message)
            ctx.state["budget_abort"] = message
        ctx.state.setdefault("guard_trace", []).append({
            "guard": "budget", "result": "refused", "code": code, "message": message,
            "run": self._figures(st, time.time())})
        raise RunBlocked(message, code=code)

    @staticmethod
    def _figures(st: RunState, now: float) -> dict:
        return {"calls": st.calls, "tokens": st.tokens, "cost_usd": nanos_to_usd(st.cost),
                "reserved_cost_usd": nanos_to_usd(st.reserved_cost), "reserved_tokens": st.reserved_tokens,
                "in_flight": st.inflight, "elapsed_s": round(now - st.started, 3)}

    def on_chunk(self, ctx: CallContext, payload: bytes) -> str | None:
        t: Ticket | None = ctx.state.get("budget")
        if t is None or not t.budgets:
            return None
        t.streamed_chars += chunk_output_chars(payload)
        out = output_tokens_for_chars(t.streamed_chars)
        st = t.run
        for b in t.budgets:
            if b.max_cost_usd is not None and t.out_price:
                est = t.prompt_cost + int(out * t.out_price)
                if st.cost + est > b.max_cost_usd * 1_000_000_000:
                    t.cut = (f"run {ctx.tags['run_id']!r} exceeded its budget while streaming: max_cost_usd = "
                             f"{b.max_cost_usd:g} (spent {_usd(st.cost)} + about {_usd(est)} in this stream)")
                    return t.cut
            if b.max_tokens is not None and st.tokens + t.prompt_tokens + out > b.max_tokens:
                t.cut = (f"run {ctx.tags['run_id']!r} exceeded its budget while streaming: max_tokens = "
                         f"{b.max_tokens} ({st.tokens} used + about {t.prompt_tokens + out} in this stream)")
                return t.cut
        return None

    def after(self, ctx: CallContext, rec: CallRecord) -> None:
        t: Ticket | None = ctx.state.pop("budget", None)
        rid = ctx.tags.get("run_id")
        if t is None:  # refused in before()
            if rid and (msg := ctx.state.get("budget_abort")):
                self.pending.add(rec.call_id, ("abort", rid, msg, EXCEEDED, {}))
            return
        st = t.run
        st.inflight -= 1
        st.reserved_cost -= t.res_cost
        st.reserved_tokens -= t.res_tokens
        st.last = time.time()
        if not t.budgets:  # nothing to enforce: skip reading usage back (it costs a parse per call)
            return
        usage = self._usage(rec)
        if usage is None and rec.stream and t.streamed_chars:
            # a stream cut off (or dropped) before its usage chunk: settle what it streamed
            usage = Usage(input_tokens=t.prompt_tokens, output_tokens=output_tokens_for_chars(t.streamed_chars))
            if t.cut:
                rec.usage = usage  # so the stored call carries the estimate too (marked in its trace)
                rec.decision["usage_estimated"] = True
        if usage is not None:
            st.tokens += usage.input_tokens + usage.output_tokens
            p = (rec.price_book.rates(rec.provider, rec.model)
                 if rec.price_book is not None and rec.provider and rec.model else None)
            if p is not None:
                st.cost += p.estimate_nanos(usage)
        self._settle_checks(rid, st, t, rec)

    def _settle_checks(self, rid: str, st: RunState, t: Ticket, rec: CallRecord) -> None:
        now = time.time()
        if st.blocked is None:
            reason = t.cut
            for b in t.budgets:
                if reason:
                    break
                if b.max_cost_usd is not None and st.cost >= b.max_cost_usd * 1_000_000_000:
                    reason = (f"run {rid!r} exceeded its budget: max_cost_usd = {b.max_cost_usd:g} "
                              f"(spent {_usd(st.cost)})")
                elif b.max_tokens is not None and st.tokens >= b.max_tokens:
                    reason = f"run {rid!r} exceeded its budget: max_tokens = {b.max_tokens} ({st.tokens} tokens used)"
            if reason:
                st.blocked = (EXCEEDED, reason)
                self.pending.add(rec.call_id, ("abort", rid, reason, EXCEEDED, {"figures": self._figures(st, now)}))
        if not st.warned:
            for b in t.budgets:
                if b.warn_at is None:
                    continue
                used = _fractions(b, st, now)
                if used and max(used.values()) >= b.warn_at:
                    st.warned = True
                    self.pending.add(rec.call_id, ("warning", rid, {
                        "warn_at": b.warn_at, "used": {k: round(v, 4) for k, v in used.items()},
                        "limits": _limits(b), "figures": self._figures(st, now)}))
                    break

    @staticmethod
    def _usage(rec: CallRecord) -> Usage | None:
        if rec.usage is not None:
            return rec.usage
        if rec.stream_events is not None:
            return stream_usage(rec.stream_events)
        if rec.status == "ok":
            return body_usage(rec.response)
        return None


def _fractions(b: Budget, st: RunState, now: float) -> dict[str, float]:
    out: dict[str, float] = {}
    if b.max_cost_usd:
        out["max_cost_usd"] = st.cost / (b.max_cost_usd * 1_000_000_000)
    if b.max_calls:
        out["max_calls"] = st.calls / b.max_calls
    if b.max_tokens:
        out["max_tokens"] = st.tokens / b.max_tokens
    if b.max_duration_s:
        out["max_duration_s"] = (now - st.started) / b.max_duration_s
    return out
