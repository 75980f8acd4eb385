"""Sending recorded requests again through a candidate config (live), or pricing them (reprice).

Live: each selected run's requests go out again in their recorded order, runs in parallel,
in-process through the same providers, router and attempt loop the proxy uses (never through
the proxy itself). Replayed calls are written as calls of a replay run `<orig>~r<replay id>`,
with `replay_id` and `original_call_id` set, so they are linked to their originals and kept
out of live analytics. Reprice: no upstream call at all; the recorded usage is priced at the
rates of the models the candidate would have routed to.
"""
from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable

import msgspec

from ..config.loader import ConfigSet
from ..config.schema import RoutingSection
from ..core.records import CallRecord
from ..core.usage import Usage, usage_from_openai
from ..errors import AllTargetsFailed, ModeluxError, UpstreamError
from ..pricing import PriceBook
from ..providers import ChatRequest, build_provider
from ..providers.messages_api import anthropic_request_to_openai
from ..routing import Attempt, Plan, Router, execute
from ..storage.record_rows import assemble_stream
from .selection import OriginalCall, OriginalRun

_enc = msgspec.json.Encoder().encode
_dec = msgspec.json.Decoder().decode
REPLAYABLE = ("chat", "embeddings", "messages")  # messages: replayed as the chat call it was translated to


def new_call_id() -> str:
    return f"call_{time.time_ns():x}{os.urandom(3).hex()}"


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
        self.providers = {} if mode == "reprice" else {n: build_provider(n, pc) for n, pc in cs.server.providers.items()}
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

    # -- live ------------------------------------------------------------------------------

    async def replay_call(self, oc: OriginalCall, run_id: str | None, tags: dict[str, str]) -> ReplayedCall:
        try:
            body = _dec(oc.request)
        except msgspec.DecodeError:
            return ReplayedCall(oc, "skipped", error="recorded request is not JSON")
        if not isinstance(body, dict):
            return ReplayedCall(oc, "skipped", error="recorded request is not a JSON object")
        body.pop("mlx:tags", None)
        if oc.endpoint == "messages":  # the Anthropic body as received: replay what the gateway routed
            try:
                body, _ = anthropic_request_to_openai(body)
            except ModeluxError as e:
                return ReplayedCall(oc, "skipped", error=f"recorded /v1/messages request: {e.message}")
        requested = self.maps.get(str(body.get("model")), str(body.get("model")))
        body["model"] = requested
        started, t0 = time.time(), time.perf_counter()
        stream = bool(body.get("stream")) and oc.endpoint != "embeddings"
        attempts: list[Attempt] = []
        try:
            plan = self.plan_for(requested)
        except ModeluxError as e:
            return await self._record(oc, run_id, tags, body, None, attempts, started, t0, status="error",
                                      http_status=e.status, error=e.message, stream=stream)
        if stream:
            so = body.get("stream_options")
            body["stream_options"] = {**(so if isinstance(so, dict) else {}), "include_usage": True}

        async def send(target):
            b = {**body, "model": target.model}
            p = self.providers[target.provider]
            if oc.endpoint == "embeddings":
                return await p.embeddings(b, target.model, target.timeout_s), None
            req = ChatRequest(b, target.model, stream, target.timeout_s, raw=_enc(b))
            if not stream:
                return await p.chat(req), None
            up = await p.chat_stream(req)
            return up, [e async for e in up.events]

        try:
            (result, events), target = await execute(plan, send, attempts)
        except (UpstreamError, AllTargetsFailed) as e:
            status = e.upstream_status if isinstance(e, UpstreamError) and e.category is None else e.status
            return await self._record(oc, run_id, tags, body, plan, attempts, started, t0, status="error",
                                      http_status=status or 502, error=e.message, stream=stream)
        return await self._record(oc, run_id, tags, body, plan, attempts, started, t0, status="ok", http_status=200,
                                  target=target, result=result, events=events, stream=stream)

    async def _record(self, oc: OriginalCall, run_id: str | None, tags: dict, body: dict, plan: Plan | None,
                      attempts: list[Attempt], started: float, t0: float, *, status: str, http_status: int,
                      stream: bool, target=None, result: Any = None, events: list[bytes] | None = None,
                      error: str | None = None) -> ReplayedCall:
        latency = (time.perf_counter() - t0) * 1000
        usage, message, response = None, None, None
        if events is not None:
            assembled = assemble_stream(events)
            usage = usage_from_openai(assembled.get("usage"))
            message = _first_message(assembled)
        elif result is not None:
            response = result.body
            decoded = _safe_decode(result.body)
            usage = result.usage or usage_from_openai(decoded.get("usage") if isinstance(decoded, dict) else None)
            message = _first_message(decoded)
        provider = target.provider if target else (attempts[-1].provider if attempts else None)
        model = target.model if target else (attempts[-1].model if attempts else None)
        cost = None
        if usage is not None and provider and model:
            rates = self.prices.rates(provider, model)
            cost = rates.cost_nanos(usage) if rates is not None else None
        self.spent_nusd += cost or 0
        self.requests += 1
        call_id = new_call_id()
        if self.submit is not None:
            decision = plan.trace() if plan else {"requested": body.get("model"), "config": self.candidate}
            decision.update(attempts_made=len(attempts), served_by=target.label if target else None,
                            replay={"replay_id": self.replay_id, "original_call_id": oc.call_id})
            await self.submit(CallRecord(
                call_id=call_id, run_id=run_id, tags=tags, started_at=started,
                endpoint="chat" if oc.endpoint == "messages" else oc.endpoint,  # the body stored is OpenAI's
                alias=plan.alias if plan else None, config=self.candidate, config_version=self.version,
                provider=provider, model=model, status=status, http_status=http_status, usage=usage,
                latency_ms=latency, ttft_ms=None, stream=stream, attempts=[a.as_dict() for a in attempts],
                decision=decision, error=error, request=_enc(body), response=response, stream_events=events,
                replay_id=self.replay_id, original_call_id=oc.call_id or None, price_book=self.prices))
        return ReplayedCall(oc, status, call_id, provider, model, cost, latency, usage, message, error)

    # -- calls the evaluators make (priced into the replay's own cost, recorded under no run) --

    async def aux_call(self, alias: str, body: dict, endpoint: str = "chat") -> dict | None:
        """One evaluator call (embeddings or judge) through the candidate's (else the baseline's) alias."""
        router = self.router
        try:
            plan = router.resolve(alias, {})
        except ModeluxError:
            plan = Router(self.cs).resolve(alias, {})  # the baseline config may define it instead
        oc = OriginalCall("", endpoint, 0.0, alias, None, None, None, "ok", *([None] * 7), False, None, None)
        tags = {"replay_id": self.replay_id, "replay_purpose": "evaluator"}
        attempts: list[Attempt] = []
        started, t0 = time.time(), time.perf_counter()

        async def send(target):
            b = {**body, "model": target.model}
            p = self.providers[target.provider]
            if endpoint == "embeddings":
                return await p.embeddings(b, target.model, target.timeout_s)
            return await p.chat(ChatRequest(b, target.model, False, target.timeout_s, raw=_enc(b)))

        try:
            result, target = await execute(plan, send, attempts)
        except (UpstreamError, AllTargetsFailed) as e:
            await self._record(oc, None, tags, body, plan, attempts, started, t0, status="error",
                               http_status=e.status, error=e.message, stream=False)
            return None
        await self._record(oc, None, tags, body, plan, attempts, started, t0, status="ok", http_status=200,
                           target=target, result=result, stream=False)
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
