"""POST /v1/responses: the OpenAI Responses format in, routed through the same aliases.

Built like /v1/messages: the body is translated to an OpenAI chat body
(providers/responses_in.py), the earlier turns named by `previous_response_id` put in front,
and handed to `Gateway.start_chat`, so guards, retries, fallback and records are the chat
pipeline's own. The answer is rendered as a Response object or as Responses SSE events
(providers/responses_out.py).

What the record of a /v1/responses call holds: `endpoint` "responses", `request` the body as
received (tags included), `response` the OpenAI chat.completion the answer was translated from
(assembled from the chunks for streams; for a native upstream, the chat.completion its Response
stands for), as for every other endpoint. The conversation state
(table `responses`) keeps the Response object, the input items, the chat history and the chat
body sent, keyed by response id; the call id links the two.

Tags, merged (later wins): the `x-mlx-tags` / `x-mlx-run-id` headers, then the string values
of `metadata` (and `metadata["mlx:tags"]`), then the body's `mlx:tags`. None are forwarded.
Errors use OpenAI's shape `{"error": {"message", "type", "code", "param"}}`.
"""
from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

import msgspec
from litestar import Request, Response, delete, get, post

from ..errors import AllTargetsFailed, BadRequest, ModeluxError, NotFound, UpstreamError
from ..providers import responses_native as native
from ..providers.responses_in import responses_request_to_chat, tags_of
from ..providers.responses_out import (
    ChatChunksToResponseEvents,
    chat_to_response,
    input_items,
    new_id,
    output_to_chat_message,
    response_shell,
    sse,
)
from ..storage.responses_store import StoredResponse, delete_response, load_response, save_job
from .errors import JSON, error_body
from .gateway import ChatOutcome, ClientGone, Gateway, StreamFormat, until_disconnect
from .limits import read_body
from .messages import _tags as merge_tags
from .reply import Reply, error_reply

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
_CACHE_SIZE = 256


class ResponseState:
    """Conversation state: recent responses in memory (a chained call never waits on SQLite),
    all of them in the `responses` table through the writer, read back off the loop."""

    def __init__(self, rt):
        self.rt = rt
        self.recent: collections.OrderedDict[str, StoredResponse] = collections.OrderedDict()

    def save(self, r: StoredResponse) -> None:
        if r.stored:
            self.recent[r.response_id] = r
            while len(self.recent) > _CACHE_SIZE:
                self.recent.popitem(last=False)
        self.rt.writer.submit_nowait(save_job(r))  # may run in a stream's cleanup: never awaits, never blocks

    async def get(self, response_id: str, param: str | None = None) -> StoredResponse:
        found = self.recent.get(response_id)
        if found is None:
            found = await asyncio.to_thread(lambda: load_response(self.rt.reader.conn(), response_id))
        if found is None:
            what = "Previous response" if param else "Response"
            raise NotFound(f"{what} with id '{response_id}' not found.", param=param,
                           code="previous_response_not_found" if param else "not_found")
        return found

    async def delete(self, response_id: str) -> None:
        self.recent.pop(response_id, None)
        if not await self.rt.writer.run(lambda conn: delete_response(conn, response_id)):
            raise NotFound(f"Response with id '{response_id}' not found.")


class Turn:
    """One /v1/responses call being answered: what is needed to route, render and remember it."""

    def __init__(self, state: ResponseState, request: dict[str, Any], chat: dict[str, Any],
                 history_in: list[dict[str, Any]], deferred: ModeluxError | None = None):
        self.state = state
        self.request = request
        self.chat_body = dict(chat)  # before routing sets the target's model: what replay re-runs
        self.history_in = history_in
        self.response_id = new_id("resp")
        self.deferred = deferred     # why the body cannot be translated (only native targets can serve it)
        self.native = False          # set per attempt: the last one is the one that answered
        self.native_answer = b""     # a native upstream's Response, as it came

    def shell(self, model: str) -> dict[str, Any]:
        return response_shell(self.request, self.response_id, model)

    def remember(self, call_id: str, response: dict[str, Any]) -> None:
        answer = output_to_chat_message(response.get("output") or [])
        self.state.save(StoredResponse(
            response.get("id") or self.response_id, call_id, self.request.get("store", True) is not False, response,
            input_items(self.request.get("input")), self.history_in + ([answer] if answer else []),
            None if self.deferred else self.chat_body))

    # -- native mode: the one place that knows about it ([providers.X] responses = "native") --

    def forward(self, provider: Any, target: Any, stream: bool) -> Any:
        """Gateway.start_chat's `forward` hook: native targets get the Responses body itself."""
        self.native = native.is_native(provider)
        if self.native:
            body = {**self.request, "model": target.model}
            meta = body.get("metadata")
            if isinstance(meta, dict) and "mlx:tags" in meta:  # tags never reach an upstream
                body["metadata"] = {k: v for k, v in meta.items() if k != "mlx:tags"}
            return native.stream(provider, body, target.timeout_s) if stream else self._create(provider, body, target)
        if self.deferred is not None:
            return _refuse(self.deferred)
        return None

    async def _create(self, provider: Any, body: dict[str, Any], target: Any) -> Any:
        result, self.native_answer = await native.create(provider, body, target.timeout_s)
        return result


async def _refuse(e: ModeluxError) -> None:
    """A translated target for a body only a native one could serve: a client error, not retried."""
    raise UpstreamError(e.message, status=e.status, category=None, body=error_body(e.message, e.type, e.code, e.param))


class NativeSSE(StreamFormat):
    """A native upstream's Responses events, passed on as they came; our synthetic chat chunks dropped."""

    def __init__(self, turn: Turn, call_id: str):
        self.turn, self.call_id = turn, call_id
        self.seq = -1

    def payload(self, payload: bytes) -> bytes | None:
        if payload.startswith(native.SYNTHETIC):
            return None
        try:
            event = _decode(payload)
        except msgspec.DecodeError:
            return None
        if not isinstance(event, dict):
            return None
        self.seq = max(self.seq, event.get("sequence_number") or 0)
        if event.get("type") in ("response.completed", "response.incomplete") and isinstance(event.get("response"), dict):
            self.turn.remember(self.call_id, event["response"])
        return f"event: {event.get('type')}\n".encode() + b"data: " + payload + b"\n\n"

    def fail(self, status: int, message: str, type_: str, code: str | None) -> bytes:
        self.seq += 1
        return sse({"type": "error", "sequence_number": self.seq, "code": code, "message": message, "param": None})


class ResponsesSSE(StreamFormat):
    """OpenAI chunk payloads -> Responses SSE events; the finished response is remembered."""

    def __init__(self, turn: Turn, call_id: str, model: str):
        self.turn, self.call_id = turn, call_id
        self.events = ChatChunksToResponseEvents(turn.shell(model))

    def payload(self, payload: bytes) -> bytes | None:
        return self.events.feed_payload(payload)

    def fail(self, status: int, message: str, type_: str, code: str | None) -> bytes:
        return self.events.fail(status, message, code)

    def end(self, ok: bool) -> bytes:
        if not ok:
            return b""  # response.failed was the last event
        out = b"".join(self.events.finish())
        self.turn.remember(self.call_id, self.events.response)
        return out


def render(out: ChatOutcome, turn: Turn) -> Reply:
    if out.error is not None:
        e = out.error
        if isinstance(e, AllTargetsFailed):
            return Reply(502, out.headers, error_body(e.message, e.type, e.code, None, attempts=out.attempts))
        return error_reply(e, out.headers)
    model = out.target.model
    if out.result is not None:
        if turn.native:
            turn.remember(out.call_id, _decode(turn.native_answer))
            return Reply(200, out.headers, turn.native_answer)
        answer = chat_to_response(_decode(out.result.body), turn.shell(model))
        turn.remember(out.call_id, answer)
        return Reply(200, out.headers, _encode(answer))
    fmt = NativeSSE(turn, out.call_id) if turn.native else ResponsesSSE(turn, out.call_id, model)
    return Reply(200, {**_SSE_HEADERS, **out.headers}, stream=out.stream(fmt))


async def prepare(gw: Gateway, state: ResponseState, raw: bytes, headers: Any) -> tuple[Turn, dict[str, str]]:
    """The call's Turn (its chat body, earlier turns included) and tags; BadRequest / NotFound naming the parameter."""
    body = gw.decode(raw)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required: an @alias, provider/model, or a model name", param="model")
    tags = merge_tags(body.pop("mlx:tags", None), tags_of(body.get("metadata")), headers)
    try:
        history: list[dict[str, Any]] = []
        previous = body.get("previous_response_id")
        if previous is not None:
            if not isinstance(previous, str) or not previous:
                raise BadRequest("previous_response_id must be a response id", param="previous_response_id")
            history = list((await state.get(previous, param="previous_response_id")).history)
        chat = responses_request_to_chat(body, history)
    except (BadRequest, NotFound) as e:
        # a native upstream may serve what we cannot translate (hosted tools, its own response ids):
        # decided per attempt in Turn.forward
        if not any(native.is_native(p) for p in state.rt.snapshot.providers.values()):
            raise
        return Turn(state, body, {"model": model, "messages": [], "stream": bool(body.get("stream"))}, [], e), tags
    history_in = chat["messages"][1:] if body.get("instructions") else list(chat["messages"])
    return Turn(state, body, chat, history_in), tags


def routes(rt, gw: Gateway) -> list:
    state = ResponseState(rt)

    async def create_response(raw: bytes, headers: Any, receive: Any = None) -> Reply:
        """POST /v1/responses, served by proxy/fast.py (and by the Litestar route below for the schema)."""
        clock = (time.time(), time.perf_counter())
        try:
            turn, tags = await prepare(gw, state, raw, headers)
            out = await until_disconnect(receive, gw.start_chat(
                turn.chat_body | {}, raw, tags, "responses", clock=clock, forward=turn.forward))
        except ModeluxError as e:
            return error_reply(e)
        except ClientGone:
            return Reply(499, {})  # nobody reads it; the call is recorded as client_closed
        return render(out, turn)

    gw.fast_routes["/v1/responses"] = (create_response, error_reply)

    @post("/v1/responses", status_code=200)
    async def create(request: Request) -> Response:
        raw = await read_body(request, gw.rt.configs.server.limits)
        return (await create_response(raw, request.headers, request.receive)).response()

    @get("/v1/responses/{response_id:str}")
    async def retrieve(response_id: str) -> Response:
        found = await state.get(response_id)
        return Response(_encode(found.response), status_code=200, media_type=JSON)

    @delete("/v1/responses/{response_id:str}", status_code=200)
    async def remove(response_id: str) -> Response:
        await state.delete(response_id)
        return Response(_encode({"id": response_id, "object": "response.deleted", "deleted": True}),
                        status_code=200, media_type=JSON)

    @get("/v1/responses/{response_id:str}/input_items")
    async def list_input_items(response_id: str, order: str = "desc", limit: int = 20,
                               after: str | None = None) -> Response:
        if order not in ("asc", "desc"):
            raise BadRequest("order must be 'asc' or 'desc'", param="order")
        if not 1 <= limit <= 100:
            raise BadRequest("limit must be between 1 and 100", param="limit")
        items = list((await state.get(response_id)).input_items)
        if order == "desc":
            items.reverse()
        if after is not None:
            ids = [i.get("id") for i in items]
            if after not in ids:
                raise BadRequest(f"no input item '{after}' in this response", param="after")
            items = items[ids.index(after) + 1:]
        page = items[:limit]
        return Response(_encode({"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                                 "last_id": page[-1]["id"] if page else None, "has_more": len(items) > limit}),
                        status_code=200, media_type=JSON)

    return [create, retrieve, remove, list_input_items]
