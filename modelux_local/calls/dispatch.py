"""The dispatcher: resolve -> hooks.before -> routing.execute -> provider -> record -> sink.

The only module outside routing/ that calls `routing.execute`. Every way a call can end after
admission — answered, refused, upstream error, a bug of ours, the client gone, a stream cut —
goes through `_finish`, which builds the record, settles the hooks exactly once and hands the
record to the sink.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from ..config.schema import Retries
from ..core.records import CallRecord
from ..errors import AllTargetsFailed, InternalError, ModelNotFound, ModeluxError, UpstreamError
from ..providers.base import ChatRequest, ChatResult, ChatStream
from ..routing import Attempt, Plan, TargetPlan, execute
from .context import CallContext, Sink, Snapshot, new_call_id
from .hooks import Hooks

log = logging.getLogger("modelux.calls")
_encode = msgspec.json.Encoder().encode
_NO_RETRIES = Retries(attempts=0)
Stamp = Callable[[CallRecord], None]  # last touches on a record before it is settled and sunk (replay ids)
# An endpoint's own way to send an attempt (/v1/responses to a native upstream): given the provider,
# the target and whether it streams, an awaitable of the ChatResult / ChatStream, or None to send the body.
Forward = Callable[[Any, TargetPlan, bool], "Awaitable[ChatResult | ChatStream] | None"]


class Answer(Protocol):
    """A recorded answer standing in for routing (playback): `execute` has routing.execute's shape."""

    async def execute(self, plan: Plan, send: Callable[[TargetPlan], Awaitable[Any]],
                      attempts: list[Attempt]) -> tuple[Any, Any]: ...


class Source(Protocol):
    """Asked after the `before` hooks, before routing (a cassette, the dev cache): an Answer, None to
    route the call, or a ModeluxError (cassette_miss) that is recorded and answered. It may leave
    `ctx.state["playback"]` (for the decision trace) and `ctx.state["price_book"]` (what the call costs)."""

    def lookup(self, ctx: CallContext, raw: bytes, cache: str | None) -> Answer | None: ...


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None, **extra) -> bytes:
    """OpenAI's error shape: {"error": {"message", "type", "code", "param"}}."""
    return _encode({"error": {"message": message, "type": type_, "code": code, "param": param, **extra}})


@dataclass(slots=True)
class ChatOutcome:
    """How a routed call went, for an endpoint to render in its own wire format.

    Exactly one of `error` (already recorded), `result` (non-stream, already recorded) or
    `stream` (call it with a StreamFormat; the record is queued when the stream ends) is set.
    """

    call_id: str
    headers: dict[str, str]                   # x-mlx-call-id, and x-mlx-served-by on success
    error: ModeluxError | None = None
    attempts: list[dict] | None = None        # for the 502 body of AllTargetsFailed
    target: Any = None                        # the TargetPlan that answered
    result: ChatResult | None = None
    stream: Callable[[StreamFormat], AsyncIterator[bytes]] | None = None
    wants_usage: bool = False                 # the client asked for the final usage chunk itself
    record: CallRecord | None = None          # what was recorded (set unless streaming)


class StreamFormat:
    """Turns the relayed OpenAI chunk payloads into an endpoint's SSE bytes.

    `frame` renders the payloads of one upstream read as one piece of bytes (one write to the
    client); a format may override it with something cheaper than joining its `payload`s."""

    def payload(self, payload: bytes) -> bytes | None:
        raise NotImplementedError

    def frame(self, payloads: list[bytes]) -> bytes:
        render = self.payload
        if len(payloads) == 1:
            return render(payloads[0]) or b""
        return b"".join([out for p in payloads if (out := render(p))])

    def fail(self, status: int, message: str, type_: str, code: str | None) -> bytes:
        raise NotImplementedError

    def end(self, ok: bool) -> bytes:
        return b""


@dataclass(slots=True)
class _Call:
    """One call in flight: what its record is made of, and whether it was recorded yet."""

    ctx: CallContext
    raw: bytes
    started: float
    t0: float
    stamp: Stamp | None
    attempts: list[Attempt]
    cache: str | None = None        # the client's x-mlx-cache, for the Source
    admitted: bool = False
    done: bool = False


@dataclass(slots=True)
class Buffered:
    """A stream read to its end inside the attempt (replay): a failure mid-stream may still fall back."""

    up: ChatStream
    events: list[bytes]


class Dispatcher:
    """Makes calls for one surface: `hooks` run around each call, `sink` receives each record."""

    def __init__(self, hooks: Hooks, sink: Sink, source: Source | None = None):
        self.hooks, self.sink = hooks, sink
        self.source = source  # playback: may answer a call in place of routing

    # -- records -------------------------------------------------------------------------

    def _finish(self, call: _Call, *, status: str, http_status: int, target: TargetPlan | None = None,
                result: ChatResult | None = None, events: list[bytes] | None = None, raw_usage: Any = None,
                ttft: float | None = None, error: str | None = None, response: bytes | None = None) -> CallRecord:
        ctx, attempts = call.ctx, call.attempts
        plan = ctx.plan
        # the plan's own trace is expanded by the writer thread, off the hot path
        decision: dict[str, Any] = {"attempts_made": len(attempts), "served_by": target.label if target else None}
        if ctx.state.get("guard_trace"):
            decision["guards"] = ctx.state["guard_trace"]
        if "playback" in ctx.state:  # answered by a Source: which recording, and what it saved
            decision["playback"] = ctx.state["playback"]
        last = attempts[-1] if attempts else None
        rec = CallRecord(
            call_id=ctx.call_id, run_id=ctx.run_id, tags=ctx.tags, endpoint=ctx.endpoint, started_at=call.started,
            alias=plan.alias, config=plan.config, config_version=plan.config_version,
            provider=target.provider if target else (last.provider if last else None),
            model=target.model if target else (last.model if last else None),
            status=status, http_status=http_status, usage=result.usage if result else None,
            latency_ms=(time.perf_counter() - call.t0) * 1000, ttft_ms=ttft, stream=ctx.stream,
            attempts=[a.as_dict() for a in attempts], decision=decision, error=error, request=call.raw,
            response=result.body if result else response, stream_events=events,
            raw_usage=raw_usage if raw_usage is not None else (result.raw_usage if result else None),
            price_book=ctx.state.get("price_book") or ctx.snapshot.prices, plan=plan,
        )
        if call.stamp is not None:
            call.stamp(rec)
        call.done = True
        if call.admitted:  # a call that never passed `before` has nothing to settle
            self.hooks.settle(ctx, rec)
        return rec

    async def _fail(self, call: _Call, e: ModeluxError, http_status: int | None = None, response: bytes | None = None,
                    status: str = "error") -> ChatOutcome:
        rec = self._finish(call, status=status, http_status=http_status or e.status, error=e.message, response=response)
        await self.sink.put(rec)
        attempts = [a.as_dict() for a in call.attempts] if call.attempts else None
        return ChatOutcome(call.ctx.call_id, {"x-mlx-call-id": call.ctx.call_id}, error=e, attempts=attempts, record=rec)

    # -- resolve -------------------------------------------------------------------------

    async def resolve(self, snap: Snapshot, body: dict, tags: dict[str, str], raw: bytes, endpoint: str,
                      started: float, t0: float, stamp: Stamp | None = None) -> Plan:
        """The plan for `body["model"]`. An unknown model inside a run is recorded as a step of that
        run (its trace then shows why the agent failed) before ModelNotFound is raised."""
        try:
            return snap.router.resolve(body["model"], tags)
        except ModelNotFound as e:
            if tags.get("run_id"):
                name = snap.router.config_for(tags)
                model = str(body["model"])
                plan = Plan(model if model.startswith("@") else None, name, snap.router.configs[name][1],
                            "unresolved", (), _NO_RETRIES)
                ctx = CallContext(new_call_id(), tags, plan, body, bool(body.get("stream")), endpoint, snap)
                await self.sink.put(self._finish(_Call(ctx, raw, started, t0, stamp, []), status="error",
                                                 http_status=e.status, error=e.message,
                                                 response=error_body(e.message, e.type, e.code)))
            raise

    # -- one call ------------------------------------------------------------------------

    async def start_chat(self, snap: Snapshot, body: dict, raw: bytes | None, tags: dict[str, str],
                         endpoint: str = "chat", *, clock: tuple[float, float] | None = None, plan: Plan | None = None,
                         stamp: Stamp | None = None, buffer: bool = False,
                         forward: Forward | None = None, cache: str | None = None) -> ChatOutcome:
        """Routes an OpenAI chat body (tags already removed) and reports how it went, format-free.

        `raw` is what gets stored as the request (None: the body as sent). Raises ModeluxError only
        before a call exists (unknown model); everything after is recorded and comes back in the
        outcome. `buffer` reads a stream to its end inside the attempt (replay) instead of relaying it.
        """
        started, t0 = clock or (time.time(), time.perf_counter())
        if plan is None:
            plan = await self.resolve(snap, body, tags, raw or _encode(body), endpoint, started, t0, stamp)
        stream = bool(body.get("stream"))
        wants_usage = False
        if stream:
            so = body.get("stream_options")
            wants_usage = isinstance(so, dict) and bool(so.get("include_usage"))
            body["stream_options"] = {**(so if isinstance(so, dict) else {}), "include_usage": True}
        call = _Call(CallContext(new_call_id(), tags, plan, body, stream, endpoint, snap), raw or _encode(body),
                     started, t0, stamp, [], cache)

        async def send(target: TargetPlan) -> Any:
            p = snap.providers[target.provider]
            if forward is not None and (taken := forward(p, target, stream)) is not None:
                up = await taken
            else:
                body["model"] = target.model
                req = ChatRequest(body, target.model, stream, target.timeout_s, raw=_encode(body),
                                  stream_timeout_s=target.stream_timeout_s)
                if not stream:
                    return await p.chat(req)
                up = await p.chat_stream(req)
            if not stream or not buffer:
                return up
            try:
                return Buffered(up, [e async for e in up.events])
            except BaseException:
                _close(up)
                raise

        out = await self._attempt(call, send)
        if out.error is not None or out.target is None:
            return out
        up = out.result
        if isinstance(up, Buffered):
            rec = self._finish(call, status="ok", http_status=200, target=out.target, events=up.events,
                               raw_usage=up.up.raw_usage or None)
            await self.sink.put(rec)
            return ChatOutcome(out.call_id, out.headers, target=out.target, record=rec)
        if not stream:
            return await self._ok(call, out)
        target = out.target

        def unrelayed() -> None:  # the outcome was dropped without its stream being relayed to the end
            if not call.done:
                _close(up)
                self.sink.put_nowait(self._finish(call, status="client_closed", http_status=499, target=target,
                                                  error="the stream was never relayed to the client"))

        watch = _WhenDropped(unrelayed)  # held by `relay`, then by the generator's frame until it ends

        def relay(fmt: StreamFormat) -> AsyncIterator[bytes]:
            return self._relay(call, target, up, fmt, watch)

        return ChatOutcome(out.call_id, out.headers, target=target, stream=relay, wants_usage=wants_usage)

    async def embeddings(self, snap: Snapshot, body: dict, raw: bytes | None, tags: dict[str, str], *,
                         clock: tuple[float, float] | None = None, plan: Plan | None = None,
                         stamp: Stamp | None = None, cache: str | None = None) -> ChatOutcome:
        started, t0 = clock or (time.time(), time.perf_counter())
        raw = raw or _encode(body)
        if plan is None:
            plan = await self.resolve(snap, body, tags, raw, "embeddings", started, t0, stamp)
        call = _Call(CallContext(new_call_id(), tags, plan, body, False, "embeddings", snap), raw, started, t0, stamp, [],
                     cache)

        async def send(target: TargetPlan) -> ChatResult:
            return await snap.providers[target.provider].embeddings({**body, "model": target.model}, target.model,
                                                                    target.timeout_s)

        out = await self._attempt(call, send)
        return out if out.error is not None else await self._ok(call, out)

    async def _ok(self, call: _Call, out: ChatOutcome) -> ChatOutcome:
        out.record = self._finish(call, status="ok", http_status=200, target=out.target, result=out.result)
        await self.sink.put(out.record)
        return out

    async def _attempt(self, call: _Call, send: Callable[[TargetPlan], Awaitable[Any]]) -> ChatOutcome:
        """hooks.before, then routing's attempt loop. Whatever happens after admission is settled
        and recorded: a refusal, an upstream error, an exception of ours (a clean 500), or the
        client going away (CancelledError: recorded as client_closed, then re-raised)."""
        ctx = call.ctx
        call.admitted = True  # from here every hook's `after` runs once, whatever happens
        try:
            try:
                for before in self.hooks.before:
                    before(ctx)
            except ModeluxError as e:
                return await self._fail(call, e, response=error_body(e.message, e.type, e.code),
                                        status="aborted" if e.status == 402 else "error")
            answer = self.source.lookup(ctx, call.raw, call.cache) if self.source is not None else None
            if answer is None:
                result, target = await execute(ctx.plan, send, call.attempts)
            else:  # a recording answers in place of routing
                result, target = await answer.execute(ctx.plan, send, call.attempts)
        except UpstreamError as e:  # a client error from the upstream: passes through
            return await self._fail(call, e, response=e.body)
        except AllTargetsFailed as e:
            return await self._fail(call, e, http_status=502)
        except ModeluxError as e:
            return await self._fail(call, e, response=error_body(e.message, e.type, e.code))
        except asyncio.CancelledError:
            if not call.done:
                self.sink.put_nowait(self._finish(call, status="client_closed", http_status=499,
                                                  error="the client closed the connection before the answer"))
            raise
        except Exception as e:
            log.exception("call %s failed", ctx.call_id)
            err = InternalError(f"internal error: {type(e).__name__}")
            return await self._fail(call, err, response=error_body(err.message, err.type, err.code))
        return ChatOutcome(ctx.call_id, {"x-mlx-call-id": ctx.call_id, "x-mlx-served-by": target.label},
                           target=target, result=result)

    async def _relay(self, call: _Call, target: TargetPlan, up: ChatStream, fmt: StreamFormat,
                     _watch: _WhenDropped) -> AsyncIterator[bytes]:
        """Passes chunks on as they arrive, in `fmt`; the record is queued whatever way the stream ends."""
        ctx = call.ctx
        on_chunk = self.hooks.on_chunk
        events: list[bytes] = []
        status, http_status, error, ttft = "client_closed", 200, None, None
        held = b""  # bytes not sent yet: the last batch (sent with the end) or those before a hook's exception
        batches, batch = up.batches, up.head
        up.head = None
        try:
            while True:
                if not batch:  # one list per upstream read (the head: read before the answer started)
                    try:
                        batch = await batches.__anext__()
                    except StopAsyncIteration:
                        status = "ok"
                        break
                    if not batch:
                        continue
                if ttft is None:
                    ttft = (time.perf_counter() - call.t0) * 1000
                events += batch
                cut = None
                if on_chunk:
                    for i, payload in enumerate(batch):  # each hook sees each chunk, in order
                        try:
                            for hook in on_chunk:
                                cut = cut or hook(ctx, payload)
                        except Exception:  # as if chunk by chunk: the ones before it reach the client
                            del events[len(events) - len(batch) + i + 1:]
                            held = fmt.frame(batch[:i]) if i else b""
                            raise
                        if cut:
                            del events[len(events) - len(batch) + i + 1:]  # recorded up to the chunk that cut
                            batch = batch[:i]
                            break
                out = fmt.frame(batch) if batch else b""
                if cut:
                    status, http_status, error = "aborted", 402, cut
                    yield out + fmt.fail(402, cut, "insufficient_quota", "run_budget_exceeded")
                    _close(up)
                    break
                batch = None
                if up.ending:  # the provider's last batch: held, to go out with the end in one write
                    held += out
                elif out:
                    yield out
            if status == "ok" and not call.done:
                # queued before the end goes out, with `put`: a writer that falls behind holds the
                # stream's last bytes (backpressure) instead of its queue growing without bound
                await self.sink.put(self._finish(call, status=status, http_status=http_status, target=target,
                                                 events=events, raw_usage=up.raw_usage or None, ttft=ttft))
            yield held + fmt.end(status == "ok")
        except UpstreamError as e:  # failed after the stream started: no fallback possible any more
            status, http_status, error = "error", e.upstream_status or 502, e.message
            yield held + fmt.fail(http_status, e.message, "upstream_error", e.category)
            yield fmt.end(False)
        except Exception as e:  # a bug of ours (or a hook's) mid-stream: end the stream with an error event
            log.exception("stream of call %s failed", ctx.call_id)
            status, http_status, error = "error", 500, f"internal error: {type(e).__name__}"
            _close(up)
            yield held + fmt.fail(500, error, "server_error", "internal_error")
            yield fmt.end(False)
        finally:
            if status == "client_closed":
                _close(up)
            if not call.done:
                self.sink.put_nowait(self._finish(call, status=status, http_status=http_status, target=target,
                                                  events=events, raw_usage=up.raw_usage or None, ttft=ttft,
                                                  error=error))  # no await: this may run inside a cancelled task


class _WhenDropped:
    """Runs `fn` when garbage: a streamed call whose outcome was never rendered (or whose generator
    was never started) is still recorded and settled, instead of leaking its reservation."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], None]):
        self.fn = fn

    def __del__(self) -> None:
        try:
            self.fn()
        except Exception:
            log.exception("recording an unrelayed stream failed")


def _close(up: ChatStream) -> None:
    if up.close is None:
        return
    try:
        r = up.close()
        if hasattr(r, "__await__"):
            asyncio.ensure_future(r)
    except Exception:
        log.debug("closing an upstream stream failed", exc_info=True)
