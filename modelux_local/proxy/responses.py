"""POST /v1/responses: the OpenAI Responses format in, routed through the same aliases.

Built like /v1/messages: the body is translated to an OpenAI chat body
(providers/responses_in.py), the earlier turns named by `previous_response_id` put in front,
and handed to `Gateway.start_chat`, so guards, retries, fallback and records are the chat
pipeline's own. The answer is rendered as a Response object or as Responses SSE events
(providers/responses_out.py).

What the record of a /v1/responses call holds: `endpoint` "responses", `request` the body as
received (tags included), `response` the OpenAI chat.completion the answer was translated from
(assembled from the chunks for streams), as for every other endpoint. The conversation state
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
from litestar.response import Stream

from ..errors import AllTargetsFailed, BadRequest, ModeluxError, NotFound
from ..providers.responses_in import responses_request_to_chat, tags_of
from ..providers.responses_out import (ChatChunksToResponseEvents, chat_to_response, input_items, new_id,
                                       output_to_chat_message, response_shell)
from ..storage.responses_store import StoredResponse, delete_response, load_response, save_response
from .errors import JSON, error_body, error_response
from .gateway import ChatOutcome, Gateway, StreamFormat
from .messages import _tags as merge_tags

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
        self.rt.writer.execute(lambda conn: save_response(conn, r))

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
    """One /v1/responses call being answered: what is needed to render and remember it."""

    def __init__(self, state: ResponseState, request: dict[str, Any], chat: dict[str, Any],
                 history_in: list[dict[str, Any]]):
        self.state = state
        self.request = request
        self.chat_body = dict(chat)  # before routing sets the target's model: what replay re-runs
        self.history_in = history_in
        self.response_id = new_id("resp")

    def shell(self, model: str) -> dict[str, Any]:
        return response_shell(self.request, self.response_id, model)

    def remember(self, call_id: str, response: dict[str, Any]) -> None:
        answer = output_to_chat_message(response["output"])
        self.state.save(StoredResponse(
            self.response_id, call_id, self.request.get("store", True) is not False, response,
            input_items(self.request.get("input")), self.history_in + ([answer] if answer else []), self.chat_body))


class ResponsesSSE(StreamFormat):
    """OpenAI chunk payloads -> Responses SSE events; the finished response is remembered."""

    def __init__(self, turn: Turn, call_id: str, model: str):
        self.turn, self.call_id = turn, call_id
        self.events = ChatChunksToResponseEvents(turn.shell(model))

    def payload(self, payload: bytes) -> bytes | None:
        return self.events.feed_payload(payload)

    def fail(self, status: int, message: str, type_: str, code: str | None) -> bytes:
        return self.events.fail(message, code)

    def end(self, ok: bool) -> bytes:
        if not ok:
            return b""  # response.failed was the last event
        out = b"".join(self.events.finish())
        self.turn.remember(self.call_id, self.events.response)
        return out


def render_error(out: ChatOutcome) -> Response:
    e = out.error
    if isinstance(e, AllTargetsFailed):
        return Response(error_body(e.message, e.type, e.code, None, attempts=out.attempts), status_code=502,
                        media_type=JSON, headers=out.headers)
    return error_response(e, out.headers)


def render(out: ChatOutcome, turn: Turn) -> Response:
    if out.error is not None:
        return render_error(out)
    model = out.target.model
    if out.result is not None:
        answer = chat_to_response(_decode(out.result.body), turn.shell(model))
        turn.remember(out.call_id, answer)
        return Response(_encode(answer), status_code=200, media_type=JSON, headers=out.headers)
    return Stream(out.stream(ResponsesSSE(turn, out.call_id, model)), status_code=200,
                  media_type="text/event-stream", headers={**_SSE_HEADERS, **out.headers})


async def prepare(gw: Gateway, state: ResponseState, raw: bytes, headers: Any) -> tuple[Turn, dict[str, str]]:
    """The call's Turn (its chat body, earlier turns included) and tags; BadRequest / NotFound naming the parameter."""
    body = gw.decode(raw)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required: an @alias, provider/model, or a model name", param="model")
    tags = merge_tags(body.pop("mlx:tags", None), tags_of(body.get("metadata")), headers)
    history: list[dict[str, Any]] = []
    previous = body.get("previous_response_id")
    if previous is not None:
        if not isinstance(previous, str) or not previous:
            raise BadRequest("previous_response_id must be a response id", param="previous_response_id")
        history = list((await state.get(previous, param="previous_response_id")).history)
    chat = responses_request_to_chat(body, history)
    history_in = chat["messages"][1:] if body.get("instructions") else list(chat["messages"])
    return Turn(state, body, chat, history_in), tags


def routes(rt, gw: Gateway) -> list:
    state = ResponseState(rt)

    @post("/v1/responses", status_code=200)
    async def create(request: Request) -> Response:
        clock = (time.time(), time.perf_counter())
        raw = await request.body()
        try:
            turn, tags = await prepare(gw, state, raw, request.headers)
            out = await gw.start_chat(turn.chat_body | {}, raw, tags, "responses", clock=clock)
        except ModeluxError as e:
            return error_response(e)
        return render(out, turn)

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
