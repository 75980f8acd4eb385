"""Sending recorded requests again through a candidate config (live), or pricing them (reprice).

Live: each selected run's requests go out again in their recorded order, runs in parallel,
in-process through the proxy's own dispatcher (calls/), with a snapshot of the candidate config
and a sink of replay rows (never through the HTTP proxy itself). Replayed calls are written as calls of a replay run `<orig>~r<replay id>`,
with `replay_id` and `original_call_id` set, so they are linked to their originals and kept
out of live analytics. Reprice: no upstream call at all; the recorded usage is priced at the
rates of the models the candidate would have routed to.
"""
from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ..calls import Dispatcher, Hooks, Sink, Snapshot
from ..config.loader import ConfigSet
from ..config.schema import RoutingSection
from ..core.records import CallRecord
from ..core.usage import Usage, usage_from_openai
from ..errors import ModeluxError
from ..pricing import PriceBook
from ..providers import anthropic_passthrough as passthrough
from ..providers import build_provider
from ..providers.anthropic_in import anthropic_request_to_openai
from ..providers.responses_in import responses_request_to_chat
from ..routing import Plan, Router
from ..storage.assemble import assemble_stream
from .selection import OriginalCall, OriginalRun

_enc = msgspec.json.Encoder().encode
_dec = msgspec.json.Decoder().decode
# messages: passed through to anthropic targets, else translated; responses: replayed as the chat
# call they were routed as
REPLAYABLE = ("chat", "embeddings", "messages", "responses")


def replay_run_id(original_run_id: str, replay_id: str) -> str:
    return f"{original_run_id}~r{replay_id}"


def candidate_router(cs: ConfigSet, candidate: str) -> Router:
    """A router where the candidate serves every request (no tag bindings)."""
    server = msgspec.structs.replace(cs.server, routing=RoutingSection(default=candidate))
    return Router(dataclasses.replace(cs, server=server))


@dataclass(slots=True)
class ReplayedCall:
    original: OriginalCall
    status: str                     # ok | error | skipped | estimated
    call_id: str | None = None
    provider: str | None = None
    model: str | None = None
    cost_nusd: int | None = None
    latency_ms: float | None = None
    usage: Usage | None = None
    message: dict | None = None     # choices[0].message of a chat answer (for evaluators)
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.status in ("error", "aborted")


@dataclass(slots=True)
class RunReplay:
    original: OriginalRun
    replay_run_id: str | None
    calls: list[ReplayedCall] = field(default_factory=list)
    complete: bool = True


    @property
    def cost_nusd(self) -> int:
        return sum(c.cost_nusd or 0 for c in self.calls)


class Replayer:
    """One replay's engine: candidate routing, providers, spend so far, and the stop switch."""

    def __init__(self, cs: ConfigSet, candidate: str, replay_id: str, *, mode: str = "live",
                 maps: dict[str, str] | None = None, submit: Callable[[CallRecord], Awaitable[None]] | None = None,
                 max_cost_nusd: int | None = None):
        self.cs, self.candidate, self.replay_id, self.mode = cs, candidate, replay_id, mode
        self.version = cs.versions[candidate]
        self.router = candidate_router(cs, candidate)
        self.prices = PriceBook(cs.server.prices, cs.server.providers)
        self.maps = maps or {}
        self.submit = submit
        self.max_cost_nusd = max_cost_nusd
        self.providers = {} if mode == "reprice" else {n: build_provider(n, pc, cs.server.limits) for n, pc in cs.server.providers.items()}
        self.snapshot = Snapshot(cs, self.router, self.prices, self.providers)
        self.dispatcher = Dispatcher(Hooks(), Sink(self._sink, self._sink_nowait))
        self.spent_nusd = 0           # everything this replay paid for: replayed calls and evaluator calls
        self.requests = 0
        self.stop = asyncio.Event()
        self.stop_reason: str | None = None

    def halt(self, reason: str) -> None:
        if not self.stop.is_set():
            self.stop_reason = reason
            self.stop.set()

    async def aclose(self) -> None:
        for p in self.providers.values():
            await p.aclose()

    def plan_for(self, model: str) -> Plan:
        return self.router.resolve(self.maps.get(model, model), {})

    # -- a run -----------------------------------------------------------------------------

    async def replay_run(self, run: OriginalRun) -> RunReplay:
        rr = RunReplay(run, replay_run_id(run.run_id, self.replay_id) if self.mode == "live" else None)
        tags = {**run.tags, "run_id": rr.replay_run_id or run.run_id, "replay_id": self.replay_id}
        for oc in run.calls:
            if oc.endpoint not in REPLAYABLE or oc.request is None:
                rr.calls.append(ReplayedCall(oc, "skipped", error=f"endpoint {oc.endpoint} is not replayed"))
                continue
            if self.mode == "reprice":
                rr.calls.append(self.reprice_call(oc))
                continue
            if self.stop.is_set() or self._over_budget():
                rr.complete = False
                break
            rr.calls.append(await self.replay_call(oc, rr.replay_run_id, tags))
        return rr

    def _over_budget(self) -> bool:
        if self.max_cost_nusd is not None and self.spent_nusd >= self.max_cost_nusd:
            self.halt(f"--max-cost ${self.max_cost_nusd / 1e9:.4f} reached")
            return True
        return False

    # -- reprice ---------------------------------------------------------------------------

    def reprice_call(self, oc: OriginalCall) -> ReplayedCall:
        """The recorded usage at the candidate's rates; a loadbalanced alias is weighted by its targets."""
        try:
            plan = self.plan_for(_model_of(oc))
        except ModeluxError as e:
            return ReplayedCall(oc, "error", error=e.message)
        usage = Usage(oc.input_tokens or 0, oc.output_tokens or 0, oc.cached_tokens or 0,
                      oc.cache_write_tokens or 0, oc.reasoning_tokens or 0)
        targets = plan.targets if plan.strategy == "loadbalance" else plan.targets[:1]
        total_w = sum(t.weight for t in targets) or 1.0
        cost, unpriced = 0.0, False
        for t in targets:
            r = self.prices.rates(t.provider, t.model)
            if r is None:
                unpriced = True
                continue
            cost += r.cost_nanos(usage) * (t.weight / total_w)
        first = plan.targets[0]
        self.requests += 1
        return ReplayedCall(oc, "estimated", provider=first.provider, model=first.model,
                            cost_nusd=None if unpriced else round(cost), usage=usage)

    # -- live: through the same dispatcher as the proxy, with the candidate's snapshot and replay rows --

    async def _sink(self, rec: CallRecord) -> None:
        if self.submit is not None:
            await self.submit(rec)

    def _sink_nowait(self, rec: CallRecord) -> None:
        if self.submit is not None:
            asyncio.ensure_future(self.submit(rec))

    def _stamp(self, original_call_id: str, seen: list[CallRecord]) -> Callable[[CallRecord], None]:
        def stamp(rec: CallRecord) -> None:
            rec.config, rec.config_version, rec.replay_id = self.candidate, self.version, self.replay_id
            rec.original_call_id = original_call_id or None
            rec.decision["replay"] = {"replay_id": self.replay_id, "original_call_id": original_call_id}
            seen.append(rec)
        return stamp

    async def replay_call(self, oc: OriginalCall, run_id: str | None, tags: dict[str, str]) -> ReplayedCall:
        try:
            body = _dec(oc.request)
        except msgspec.DecodeError:
            return ReplayedCall(oc, "skipped", error="recorded request is not JSON")
        if not isinstance(body, dict):
            return ReplayedCall(oc, "skipped", error="recorded request is not a JSON object")
        body.pop("mlx:tags", None)
        pt = None
        if oc.endpoint == "messages":  # the Anthropic body as received: replay what the gateway routed
            try:  # passed through to anthropic targets, as the proxy does (cache_control, thinking kept)
                chat, _ = anthropic_request_to_openai(body)
                deferred = None
            except ModeluxError as e:
                if not any(passthrough.is_anthropic(p) for p in self.snapshot.providers.values()):
                    return ReplayedCall(oc, "skipped", error=f"recorded /v1/messages request: {e.message}")
                chat, deferred = {"model": body.get("model"), "messages": [], "stream": bool(body.get("stream"))}, e
            pt, body = passthrough.Passthrough(body, {}, deferred), chat
        elif oc.endpoint == "responses":  # the chat body it was routed as, earlier turns included
            if oc.chat_body is not None:
                body = _dec(oc.chat_body)
            elif body.get("previous_response_id"):
                return ReplayedCall(oc, "skipped", error="recorded /v1/responses call: its earlier turns are not stored")
            else:
                try:
                    body = responses_request_to_chat(body, [])
                except ModeluxError as e:
                    return ReplayedCall(oc, "skipped", error=f"recorded /v1/responses request: {e.message}")
        body["model"] = self.maps.get(str(body.get("model")), str(body.get("model")))
        return (await self._call(oc, body, tags, "chat" if oc.endpoint in ("messages", "responses") else oc.endpoint,
                                 pt=pt))[0]

    async def _call(self, oc: OriginalCall, body: dict, tags: dict[str, str], endpoint: str,
                    plan: Plan | None = None, pt: Any = None) -> tuple[ReplayedCall, Any]:
        """One call through the dispatcher; the replayed call and the provider's result (non-stream)."""
        seen: list[CallRecord] = []
        stamp = self._stamp(oc.call_id, seen)
        if pt is not None:  # a /v1/messages call: its pass-through notes join the replayed record's trace
            replay_stamp = stamp

            def stamp(rec: CallRecord) -> None:
                pt.stamp(rec)
                replay_stamp(rec)
        try:
            if endpoint == "embeddings":
                out = await self.dispatcher.embeddings(self.snapshot, body, None, tags, plan=plan, stamp=stamp)
            else:
                out = await self.dispatcher.start_chat(self.snapshot, body, None, tags, endpoint, plan=plan,
                                                       stamp=stamp, buffer=True,
                                                       forward=pt.forward if pt is not None else None)
        except ModeluxError as e:  # the candidate cannot route this model (recorded when in a run)
            self.requests += 1
            return ReplayedCall(oc, "error", seen[0].call_id if seen else None, error=e.message), None
        return self._replayed(oc, out.record, out.result), out.result

    def _replayed(self, oc: OriginalCall, rec: CallRecord, result: Any) -> ReplayedCall:
        usage, message = rec.usage, None
        if rec.stream_events is not None:
            assembled = assemble_stream(rec.stream_events)
            usage = usage_from_openai(assembled.get("usage"))
            message = _first_message(assembled)
        elif result is not None:
            decoded = _safe_decode(result.body)
            usage = result.usage or usage_from_openai(decoded.get("usage") if isinstance(decoded, dict) else None)
            message = _first_message(decoded)
        cost = None
        if usage is not None and rec.provider and rec.model:
            rates = self.prices.rates(rec.provider, rec.model)
            cost = rates.cost_nanos(usage) if rates is not None else None
        self.spent_nusd += cost or 0
        self.requests += 1
        return ReplayedCall(oc, rec.status, rec.call_id, rec.provider, rec.model, cost, rec.latency_ms, usage,
                            message, rec.error)

    # -- calls the evaluators make (priced into the replay's own cost, recorded under no run) --

    async def aux_call(self, alias: str, body: dict, endpoint: str = "chat") -> dict | None:
        """One evaluator call (embeddings or judge) through the candidate's (else the baseline's) alias."""
        try:
            plan = self.router.resolve(alias, {})
        except ModeluxError:
            plan = Router(self.cs).resolve(alias, {})  # the baseline config may define it instead
        oc = OriginalCall("", endpoint, 0.0, alias, None, None, None, "ok", *([None] * 7), False, None, None)
        tags = {"replay_id": self.replay_id, "replay_purpose": "evaluator"}
        done, result = await self._call(oc, dict(body), tags, endpoint, plan)
        if done.status != "ok":
            return None
        self.requests -= 1  # evaluator calls are part of the cost, not of the replayed requests
        return _safe_decode(result.body)


def _model_of(oc: OriginalCall) -> str:
    if oc.alias:
        return oc.alias
    try:
        body = _dec(oc.request or b"{}")
        return str(body.get("model"))
    except (msgspec.DecodeError, AttributeError):
        return f"{oc.provider}/{oc.model}"


def _safe_decode(b: bytes | None) -> Any:
    if not b:
        return None
    try:
        return _dec(b)
    except msgspec.DecodeError:
        return None


def _first_message(body: Any) -> dict | None:
    if isinstance(body, dict):
        choices = body.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            m = choices[0].get("message")
            return m if isinstance(m, dict) else None
    return None


def message_of(response: bytes | None) -> dict | None:
    """choices[0].message of a stored chat response."""
    return _first_message(_safe_decode(response))


async def run_all(replayer: Replayer, run_ids: Iterable[str], load: Callable[[str], OriginalRun | None],
                  on_done: Callable[[RunReplay], Awaitable[None]], concurrency: int) -> None:
    """Runs in parallel (`concurrency` at a time), each run's requests in their recorded order."""
    pending = iter(run_ids)

    async def worker():
        for rid in pending:  # one iterator shared by the workers: each run is taken once
            if replayer.stop.is_set():
                return
            run = load(rid)
            if run is None:
                continue
            await on_done(await replayer.replay_run(run))

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
