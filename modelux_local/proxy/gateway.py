"""The hot path: decode -> tags -> resolve -> guards -> forward -> stream back -> hand to writer.

Nothing here waits on SQLite: records go to the writer's queue. Guards (budgets, aborts) are
in-memory checks registered by the analytics room through `guards`.
"""
from __future__ import annotations

import itertools
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

import msgspec
from litestar import Response
from litestar.response import Stream

from ..core.records import CallRecord
from ..core.tags import TagError, parse_tags, pop_body_tags
from ..config.schema import Retries
from ..errors import AllTargetsFailed, BadRequest, BodyTooLarge, ModeluxError, ModelNotFound, UpstreamError
from ..providers.base import ChatRequest, ChatResult, ChatStream
from ..routing import Attempt, Plan, execute
from ..runtime import Runtime, Snapshot
from .errors import JSON, error_body, error_response

log = logging.getLogger("modelux.proxy")
_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
_DONE = b"data: [DONE]\n\n"
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
_NO_RETRIES = Retries(attempts=0)


_ID_PREFIX = os.urandom(3).hex()  # per process: ids stay unique across restarts and replays
_ID_SEQ = itertools.count()


def new_call_id() -> str:
    """Time-ordered and unique without a syscall per call (os.urandom showed up in profiles)."""
    return f"call_{time.time_ns():x}{_ID_PREFIX}{next(_ID_SEQ) % 4096:03x}"


@dataclass(slots=True)
class CallContext:
    """What guards see before a call is forwarded, and settle after it ends."""

    call_id: str
    tags: dict[str, str]
    plan: Plan
    body: dict[str, Any]
    stream: bool
    endpoint: str
    snapshot: Snapshot
    state: dict[str, Any] = field(default_factory=dict)  # guards keep their reservations here

    @property
    def run_id(self) -> str | None:
        return self.tags.get("run_id")


class Guard:
    """Interface of a pre-call check (budgets, aborts). Default methods do nothing."""

    def before(self, ctx: CallContext) -> None:
        """Raise RunBlocked to refuse the call."""

    def on_chunk(self, ctx: CallContext, payload: bytes) -> str | None:
        """Streaming: return a reason to cut the stream off now."""
        return None

    def after(self, ctx: CallContext, rec: CallRecord) -> None:
        """Settle reservations; called once per call that passed `before`."""


class Gateway:
    def __init__(self, rt: Runtime):
        self.rt = rt
        self.guards: list[Guard] = []
        self.on_record: list[Callable[[CallRecord], None]] = []  # live listeners (TUI); must be cheap

    # -- request parsing -------------------------------------------------------------------

    def decode(self, raw: bytes) -> dict:
        """The body as a JSON object, within [limits] max_body_mb; BadRequest / BodyTooLarge otherwise."""
        limit = int(self.rt.configs.server.limits.max_body_mb * 1024 * 1024)
        if len(raw) > limit:
            raise BodyTooLarge(f"request body is {len(raw)} bytes; the limit is {limit} ([limits] max_body_mb)")
        try:
            body = _decode(raw)
        except msgspec.DecodeError as e:
            raise BadRequest(f"request body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        return body

    def _parse(self, raw: bytes, headers: Any) -> tuple[dict, dict[str, str]]:
        body = self.decode(raw)
        try:
            tags = parse_tags(pop_body_tags(body), headers.get("x-mlx-tags"), headers.get("x-mlx-run-id"))
        except TagError as e:
            raise BadRequest(str(e), param="mlx:tags") from None
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("'model' is required: an @alias, provider/model, or a model name", param="model")
        return body, tags

    # -- records ---------------------------------------------------------------------------

    def _record(self, ctx: CallContext, raw: bytes, started: float, t0: float, attempts: list[Attempt], *,
                status: str, http_status: int, target=None, result: ChatResult | None = None,
                events: list[bytes] | None = None, raw_usage: Any = None, ttft: float | None = None,
                error: str | None = None, response: bytes | None = None, settle: bool = True) -> CallRecord:
        plan = ctx.plan
        # the plan's own trace is expanded by the writer thread, off the hot path
        decision: dict[str, Any] = {"attempts_made": len(attempts), "served_by": target.label if target else None}
        if ctx.state.get("guard_trace"):
            decision["guards"] = ctx.state["guard_trace"]
        rec = CallRecord(
            call_id=ctx.call_id, run_id=ctx.run_id, tags=ctx.tags, endpoint=ctx.endpoint, started_at=started,
            alias=plan.alias, config=plan.config, config_version=plan.config_version,
            provider=target.provider if target else (attempts[-1].provider if attempts else None),
            model=target.model if target else (attempts[-1].model if attempts else None),
            status=status, http_status=http_status, usage=result.usage if result else None,
            latency_ms=(time.perf_counter() - t0) * 1000, ttft_ms=ttft, stream=ctx.stream,
            attempts=[a.as_dict() for a in attempts], decision=decision, error=error, request=raw,
            response=result.body if result else response, stream_events=events,
            raw_usage=raw_usage if raw_usage is not None else (result.raw_usage if result else None),
            price_book=ctx.snapshot.prices, plan=plan,
        )
        for g in self.guards if settle else ():  # a call that never passed `before` has nothing to settle
            try:
                g.after(ctx, rec)
            except Exception:
                log.exception("guard %s failed to settle call %s", type(g).__name__, ctx.call_id)
        for cb in self.on_record:
            cb(rec)
        return rec

    async def _resolve(self, snap: Snapshot, body: dict, tags: dict[str, str], raw: bytes, endpoint: str,
                       started: float, t0: float) -> Plan:
        """The plan for `body["model"]`. An unknown model inside a run is recorded as a step of that
        run (its trace then shows why the agent failed) before the 404 goes back."""
        try:
            return snap.router.resolve(body["model"], tags)
        except ModelNotFound as e:
            if tags.get("run_id"):
                name = snap.router.config_for(tags)
                model = str(body["model"])
                plan = Plan(model if model.startswith("@") else None, name, snap.router.configs[name][1],
                            "unresolved", (), _NO_RETRIES)
                ctx = CallContext(new_call_id(), tags, plan, body, bool(body.get("stream")), endpoint, snap)
                await self.rt.writer.submit(self._record(
                    ctx, raw, started, t0, [], status="error", http_status=e.status, error=e.message,
                    response=error_body(e.message, e.type, e.code), settle=False))
            raise

    async def _refused(self, ctx: CallContext, raw: bytes, started: float, t0: float, e: ModeluxError) -> Response:
        await self._record_refusal(ctx, raw, started, t0, e)
        return error_response(e, {"x-mlx-call-id": ctx.call_id})

    async def _record_refusal(self, ctx: CallContext, raw: bytes, started: float, t0: float, e: ModeluxError) -> None:
        status = "aborted" if e.status == 402 else "error"
        await self.rt.writer.submit(self._record(ctx, raw, started, t0, [], status=status, http_status=e.status,
                                                 error=e.message, response=error_body(e.message, e.type, e.code)))

    # -- chat completions ------------------------------------------------------------------

    async def chat(self, raw: bytes, headers: Any, endpoint: str = "chat") -> Response:
        clock = (time.time(), time.perf_counter())
        body, tags = self._parse(raw, headers)
        out = await self.start_chat(body, raw, tags, endpoint, clock=clock)
        if out.error is not None:
            if isinstance(out.error, AllTargetsFailed):
                e = out.error
                body502 = error_body(e.message, e.type, e.code, None, attempts=out.attempts)
                return Response(body502, status_code=502, media_type=JSON, headers=out.headers)
            return error_response(out.error, out.headers)
        if out.result is not None:
            return Response(out.result.body, status_code=200, media_type=JSON, headers=out.headers)
        return Stream(out.stream(OpenAISSE(out.wants_usage)), status_code=200, media_type="text/event-stream",
                      headers={**_SSE_HEADERS, **out.headers})

    async def start_chat(self, body: dict, raw: bytes, tags: dict[str, str], endpoint: str = "chat", *,
                         clock: tuple[float, float] | None = None) -> "ChatOutcome":
        """Routes an OpenAI chat body (tags already removed) and reports how it went, format-free.

        Shared by /v1/chat/completions and /v1/messages (which translates its body first), so both
        get the same guards, retries, fallback and records. `raw` is what gets stored as the
        request. Raises ModeluxError only before a call exists (unknown alias); refusals and
        upstream failures are recorded and come back in `ChatOutcome.error`.
        """
        started, t0 = clock or (time.time(), time.perf_counter())
        snap = self.rt.snapshot
        plan = await self._resolve(snap, body, tags, raw, endpoint, started, t0)
        stream = bool(body.get("stream"))
        ctx = CallContext(new_call_id(), tags, plan, body, stream, endpoint, snap)
        hdrs = {"x-mlx-call-id": ctx.call_id}
        try:
            for g in self.guards:
                g.before(ctx)
        except ModeluxError as e:
            await self._record_refusal(ctx, raw, started, t0, e)
            return ChatOutcome(ctx.call_id, hdrs, error=e)
        wants_usage = False
        if stream:
            so = body.get("stream_options")
            wants_usage = isinstance(so, dict) and bool(so.get("include_usage"))
            body["stream_options"] = {**(so if isinstance(so, dict) else {}), "include_usage": True}
        attempts: list[Attempt] = []

        async def send(target):
            body["model"] = target.model
            req = ChatRequest(body, target.model, stream, target.timeout_s, raw=_encode(body))
            p = snap.providers[target.provider]
            return await (p.chat_stream(req) if stream else p.chat(req))

        try:
            result, target = await execute(plan, send, attempts)
        except UpstreamError as e:  # a client error from the upstream: passes through
            await self.rt.writer.submit(self._record(ctx, raw, started, t0, attempts, status="error",
                                                     http_status=e.status, error=e.message, response=e.body))
            return ChatOutcome(ctx.call_id, hdrs, error=e, attempts=[a.as_dict() for a in attempts])
        except AllTargetsFailed as e:
            await self.rt.writer.submit(self._record(ctx, raw, started, t0, attempts, status="error",
                                                     http_status=502, error=e.message))
            return ChatOutcome(ctx.call_id, hdrs, error=e, attempts=[a.as_dict() for a in attempts])
        hdrs["x-mlx-served-by"] = target.label
        if not stream:
            await self.rt.writer.submit(self._record(ctx, raw, started, t0, attempts, status="ok", http_status=200,
                                                     target=target, result=result))
            return ChatOutcome(ctx.call_id, hdrs, target=target, result=result)

        def relay(fmt: StreamFormat) -> AsyncIterator[bytes]:
            return self._relay(ctx, raw, started, t0, attempts, target, result, fmt)

        return ChatOutcome(ctx.call_id, hdrs, target=target, stream=relay, wants_usage=wants_usage)

    async def _relay(self, ctx: CallContext, raw: bytes, started: float, t0: float, attempts: list[Attempt],
                     target, up: ChatStream, fmt: "StreamFormat") -> AsyncIterator[bytes]:
        """Passes chunks on as they arrive, in `fmt`; the record is queued whatever way the stream ends."""
        events: list[bytes] = []
        status, http_status, error, ttft = "client_closed", 200, None, None
        try:
            async for payload in up.events:
                if ttft is None:
                    ttft = (time.perf_counter() - t0) * 1000
                events.append(payload)
                cut = None
                for g in self.guards:
                    cut = cut or g.on_chunk(ctx, payload)
                if cut:
                    status, http_status, error = "aborted", 402, cut
                    yield fmt.fail(402, cut, "insufficient_quota", "run_budget_exceeded")
                    _close(up)
                    break
                out = fmt.payload(payload)
                if out:
                    yield out
            else:
                status = "ok"
            yield fmt.end(status == "ok")
        except UpstreamError as e:  # failed after the stream started: no fallback possible any more
            status, http_status, error = "error", e.upstream_status or 502, e.message
            yield fmt.fail(http_status, e.message, "upstream_error", e.category)
            yield fmt.end(False)
        finally:
            if status == "client_closed":
                _close(up)
            rec = self._record(ctx, raw, started, t0, attempts, status=status, http_status=http_status, target=target,
                               events=events, raw_usage=up.raw_usage or None, ttft=ttft, error=error)
            self.rt.writer.submit_nowait(rec)  # no await: this may run inside a cancelled task

    # -- embeddings ------------------------------------------------------------------------

    async def embeddings(self, raw: bytes, headers: Any) -> Response:
        started, t0 = time.time(), time.perf_counter()
        body, tags = self._parse(raw, headers)
        snap = self.rt.snapshot
        plan = await self._resolve(snap, body, tags, raw, "embeddings", started, t0)
        ctx = CallContext(new_call_id(), tags, plan, body, False, "embeddings", snap)
        try:
            for g in self.guards:
                g.before(ctx)
        except ModeluxError as e:
            return await self._refused(ctx, raw, started, t0, e)
        attempts: list[Attempt] = []

        async def send(target):
            return await snap.providers[target.provider].embeddings({**body, "model": target.model}, target.model,
                                                                    target.timeout_s)

        hdrs = {"x-mlx-call-id": ctx.call_id}
        try:
            result, target = await execute(plan, send, attempts)
        except (UpstreamError, AllTargetsFailed) as e:
            await self.rt.writer.submit(self._record(ctx, raw, started, t0, attempts, status="error",
                                                     http_status=e.status, error=e.message))
            return error_response(e, hdrs)
        await self.rt.writer.submit(self._record(ctx, raw, started, t0, attempts, status="ok", http_status=200,
                                                 target=target, result=result))
        return Response(result.body, status_code=200, media_type=JSON, headers=hdrs)


@dataclass(slots=True)
class ChatOutcome:
    """How a routed chat call went, for an endpoint to render in its own wire format.

    Exactly one of `error` (already recorded), `result` (non-stream, already recorded) or
    `stream` (call it with a StreamFormat; the record is queued when the stream ends) is set.
    """

    call_id: str
    headers: dict[str, str]                   # x-mlx-call-id, and x-mlx-served-by on success
    error: ModeluxError | None = None
    attempts: list[dict] | None = None        # for the 502 body of AllTargetsFailed
    target: Any = None                        # the TargetPlan that answered
    result: ChatResult | None = None
    stream: Callable[["StreamFormat"], AsyncIterator[bytes]] | None = None
    wants_usage: bool = False                 # the client asked for the final usage chunk itself


class StreamFormat:
    """Turns the relayed OpenAI chunk payloads into an endpoint's SSE bytes."""

    def payload(self, payload: bytes) -> bytes | None:
        raise NotImplementedError

    def fail(self, status: int, message: str, type_: str, code: str | None) -> bytes:
        raise NotImplementedError

    def end(self, ok: bool) -> bytes:
        return b""


class OpenAISSE(StreamFormat):
    def __init__(self, wants_usage: bool):
        self.wants_usage = wants_usage

    def payload(self, payload: bytes) -> bytes | None:
        if not self.wants_usage:
            if _is_usage_only(payload):
                return None
            if b',"usage":null' in payload:  # present only because we asked for usage
                payload = payload.replace(b',"usage":null', b"")
        return b"data: " + payload + b"\n\n"

    def fail(self, status: int, message: str, type_: str, code: str | None) -> bytes:
        return b"data: " + error_body(message, type_, code) + b"\n\n"

    def end(self, ok: bool) -> bytes:
        return _DONE


def _is_usage_only(payload: bytes) -> bool:
    """The extra final chunk we asked for: `"choices": []` with a usage object."""
    if b'"usage"' not in payload or b'"usage":null' in payload:
        return False
    try:
        d = _decode(payload)
    except msgspec.DecodeError:
        return False
    return isinstance(d, dict) and not d.get("choices") and bool(d.get("usage"))


def _close(up: ChatStream) -> None:
    if up.close is None:
        return
    try:
        r = up.close()
        if hasattr(r, "__await__"):
            import asyncio
            asyncio.ensure_future(r)
    except Exception:
        log.debug("closing an upstream stream failed", exc_info=True)
