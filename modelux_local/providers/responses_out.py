"""The OpenAI Responses API as an *input* format: answer side (chat completion -> Response).

A non-streamed chat.completion becomes a `response` object; streamed chat chunks become the
documented semantic events (response.created ... response.completed), each with its
`sequence_number`. Shapes follow openai-python's types/responses. Pure; no I/O.
"""
from __future__ import annotations

import itertools
import secrets
import time
from typing import Any

import msgspec

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


_ID_PREFIX = secrets.token_hex(4)  # per process: ids stay unique across restarts
_ID_SEQ = itertools.count()


def new_id(prefix: str) -> str:
    """Unique without a syscall per id (a stream makes several)."""
    return f"{prefix}_{time.time_ns():x}{_ID_PREFIX}{next(_ID_SEQ) % 65536:04x}"


def usage_from_chat(u: dict[str, Any] | None) -> dict[str, Any]:
    u = u or {}
    pd = u.get("prompt_tokens_details") or {}
    cd = u.get("completion_tokens_details") or {}
    tin, tout = u.get("prompt_tokens") or 0, u.get("completion_tokens") or 0
    return {"input_tokens": tin,
            "input_tokens_details": {"cached_tokens": pd.get("cached_tokens") or 0,
                                     "cache_write_tokens": pd.get("cache_write_tokens") or 0},
            "output_tokens": tout,
            "output_tokens_details": {"reasoning_tokens": cd.get("reasoning_tokens") or 0},
            "total_tokens": u.get("total_tokens") or tin + tout}


def usage_to_chat(u: dict[str, Any] | None) -> dict[str, Any] | None:
    """A Responses usage object in the chat shape the records and prices read (native mode)."""
    if not isinstance(u, dict):
        return None
    tin, tout = u.get("input_tokens") or 0, u.get("output_tokens") or 0
    idet, odet = u.get("input_tokens_details") or {}, u.get("output_tokens_details") or {}
    out: dict[str, Any] = {"prompt_tokens": tin, "completion_tokens": tout,
                           "total_tokens": u.get("total_tokens") or tin + tout}
    if idet.get("cached_tokens") or idet.get("cache_write_tokens"):
        out["prompt_tokens_details"] = {"cached_tokens": idet.get("cached_tokens") or 0,
                                        "cache_write_tokens": idet.get("cache_write_tokens") or 0}
    if odet.get("reasoning_tokens"):
        out["completion_tokens_details"] = {"reasoning_tokens": odet["reasoning_tokens"]}
    return out


def response_shell(request: dict[str, Any], response_id: str, model: str, created_at: int | None = None) -> dict:
    """The Response object before any output: the request's settings echoed, status in_progress."""
    reasoning = request.get("reasoning") if isinstance(request.get("reasoning"), dict) else {}
    metadata = request.get("metadata") if isinstance(request.get("metadata"), dict) else {}
    return {
        "id": response_id, "object": "response", "created_at": created_at or int(time.time()),
        "status": "in_progress", "background": False, "error": None, "incomplete_details": None,
        "instructions": request.get("instructions"), "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": None, "model": model, "output": [],
        "parallel_tool_calls": request.get("parallel_tool_calls", True) is not False,
        "previous_response_id": request.get("previous_response_id"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "service_tier": "default", "store": request.get("store", True) is not False,
        "temperature": request.get("temperature", 1.0), "text": request.get("text") or {"format": {"type": "text"}},
        "tool_choice": request.get("tool_choice") or "auto", "tools": request.get("tools") or [],
        "top_p": request.get("top_p", 1.0), "truncation": request.get("truncation") or "disabled",
        "usage": None, "user": request.get("user"), "safety_identifier": request.get("safety_identifier"),
        "metadata": {k: v for k, v in metadata.items() if isinstance(v, str)},
    }


def _message_item(text: str, refusal: str | None = None, status: str = "completed") -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if text:
        content.append({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
    if refusal:
        content.append({"type": "refusal", "refusal": refusal})
    return {"id": new_id("msg"), "type": "message", "status": status, "role": "assistant", "content": content}


def _call_item(call: dict[str, Any], status: str = "completed") -> dict[str, Any]:
    fn = call.get("function") or {}
    return {"id": new_id("fc"), "type": "function_call", "status": status, "call_id": call.get("id") or new_id("call"),
            "name": fn.get("name") or "", "arguments": fn.get("arguments") or ""}


def _finish(shell: dict[str, Any], finish_reason: str | None, usage: dict[str, Any] | None) -> dict[str, Any]:
    reason = INCOMPLETE.get(finish_reason or "")
    shell["status"] = "incomplete" if reason else "completed"
    shell["incomplete_details"] = {"reason": reason} if reason else None
    shell["usage"] = usage_from_chat(usage)
    return shell


def chat_to_response(completion: dict[str, Any], shell: dict[str, Any]) -> dict[str, Any]:
    """A chat.completion (first choice) as the finished Response, built on `shell`."""
    choice = (completion.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    output: list[dict[str, Any]] = []
    thought = msg.get("reasoning_content") or msg.get("reasoning")
    if isinstance(thought, str) and thought:  # servers like vLLM/DeepSeek give the model's reasoning
        output.append({"id": new_id("rs"), "type": "reasoning", "summary": [{"type": "summary_text", "text": thought}]})
    if msg.get("content") or msg.get("refusal"):
        output.append(_message_item(msg.get("content") or "", msg.get("refusal")))
    output += [_call_item(c) for c in msg.get("tool_calls") or []]
    shell["output"] = output
    return _finish(shell, choice.get("finish_reason"), completion.get("usage"))


def output_to_chat_message(output: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The assistant turn a Response's output stands for, as one chat message (for the next turn)."""
    texts, calls = [], []
    for item in output:
        if item.get("type") == "message":
            texts += [p.get("text") or p.get("refusal") or "" for p in item.get("content") or []]
        elif item.get("type") == "function_call":
            calls.append({"id": item.get("call_id"), "type": "function",
                          "function": {"name": item.get("name"), "arguments": item.get("arguments") or "{}"}})
    if not texts and not calls:
        return None
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        msg["tool_calls"] = calls
    return msg


def response_to_chat(response: dict[str, Any]) -> dict[str, Any]:
    """A Response as the chat.completion records hold for every endpoint (native mode)."""
    msg = output_to_chat_message(response.get("output") or []) or {"role": "assistant", "content": ""}
    reason = (response.get("incomplete_details") or {}).get("reason")
    finish = "length" if reason == "max_output_tokens" else "content_filter" if reason else (
        "tool_calls" if msg.get("tool_calls") else "stop")
    return {"id": response.get("id"), "object": "chat.completion", "created": response.get("created_at"),
            "model": response.get("model"), "choices": [{"index": 0, "message": msg, "finish_reason": finish}],
            "usage": usage_to_chat(response.get("usage"))}


def input_items(items: Any) -> list[dict[str, Any]]:
    """A request's input as the items /input_items lists: each with an id, strings as messages."""
    if isinstance(items, str):
        items = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": items}]}]
    out = []
    for item in items if isinstance(items, list) else []:
        item = dict(item)
        kind = item.setdefault("type", "message")
        if kind == "message" and isinstance(item.get("content"), str):
            part = "output_text" if item.get("role") == "assistant" else "input_text"
            item["content"] = [{"type": part, "text": item["content"]}]
        if not item.get("id"):
            item["id"] = new_id({"message": "msg", "function_call": "fc", "function_call_output": "fco",
                                 "reasoning": "rs"}.get(kind, "item"))
        out.append(item)
    return out


# ---------------------------------------------------------------- streaming

def sse(event: dict[str, Any]) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + _encode(event) + b"\n\n"


class ChatChunksToResponseEvents:
    """Feeds OpenAI chat chunk dicts in order; returns Responses SSE event bytes.

    A reasoning run (`reasoning_content` deltas) is one `reasoning` item with a summary, a text
    run one `message` item, each tool call one `function_call` item; an item is
    closed (its .done events) when the next one opens or the stream ends. Usage arrives in the
    final chunk and is reported on response.completed.
    """

    def __init__(self, shell: dict[str, Any]):
        self.response = shell
        self.seq = 0
        self.started = False
        self.open: dict[str, Any] | None = None   # the output item being streamed
        self.pieces: list[str] = []  # the open item's text or arguments so far (joined once, when it closes)
        self.calls: dict[int, dict[str, Any]] = {}  # chat tool_calls index -> function_call item
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None

    def _ev(self, type_: str, **fields: Any) -> bytes:
        event = {"type": type_, "sequence_number": self.seq, **fields}
        self.seq += 1
        return sse(event)

    def start(self) -> list[bytes]:
        if self.started:
            return []
        self.started = True
        snapshot = dict(self.response)
        return [self._ev("response.created", response=snapshot), self._ev("response.in_progress", response=snapshot)]

    def _index(self) -> int:
        return len(self.response["output"]) - 1

    def _close(self) -> list[bytes]:
        item, self.open = self.open, None
        if item is None:
            return []
        i = self._index()
        out = []
        text = "".join(self.pieces)
        if item["type"] == "reasoning":
            part = {"type": "summary_text", "text": text}
            ids = {"item_id": item["id"], "output_index": i, "summary_index": 0}
            out.append(self._ev("response.reasoning_summary_text.done", **ids, text=text))
            out.append(self._ev("response.reasoning_summary_part.done", **ids, part=part))
            item["summary"] = [part]
        elif item["type"] == "message":
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            out.append(self._ev("response.output_text.done", item_id=item["id"], output_index=i, content_index=0,
                                text=text, logprobs=[]))
            out.append(self._ev("response.content_part.done", item_id=item["id"], output_index=i, content_index=0,
                                part=part))
            item["content"] = [part]
        else:
            item["arguments"] = text
            out.append(self._ev("response.function_call_arguments.done", item_id=item["id"], output_index=i,
                                name=item["name"], arguments=text))
        item["status"] = "completed"
        out.append(self._ev("response.output_item.done", output_index=i, item=item))
        return out

    def _open(self, item: dict[str, Any]) -> list[bytes]:
        out = self._close()
        self.response["output"].append(item)
        self.open = item
        out.append(self._ev("response.output_item.added", output_index=self._index(), item=dict(item)))
        return out

    def feed_payload(self, payload: bytes) -> bytes | None:
        """One relayed chunk payload (JSON bytes); None for one that is not a chunk object."""
        try:
            chunk = _decode(payload)
        except msgspec.DecodeError:
            return None
        return b"".join(self.feed(chunk)) if isinstance(chunk, dict) else None

    def feed(self, chunk: dict[str, Any]) -> list[bytes]:
        out = self.start()
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue  # a Response has one answer
            delta = choice.get("delta") or {}
            thought = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(thought, str) and thought:
                out += self._reasoning(thought)
            if delta.get("content"):
                out += self._text(delta["content"])
            for call in delta.get("tool_calls") or []:
                out += self._call(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return out

    def _text(self, piece: str) -> list[bytes]:
        out: list[bytes] = []
        if self.open is None or self.open["type"] != "message":
            out += self._open({"id": new_id("msg"), "type": "message", "status": "in_progress",
                               "role": "assistant", "content": []})
            self.pieces = []
            out.append(self._ev("response.content_part.added", item_id=self.open["id"], output_index=self._index(),
                                content_index=0, part={"type": "output_text", "text": "", "annotations": [],
                                                       "logprobs": []}))
        self.pieces.append(piece)
        out.append(self._ev("response.output_text.delta", item_id=self.open["id"], output_index=self._index(),
                            content_index=0, delta=piece, logprobs=[]))
        return out

    def _reasoning(self, piece: str) -> list[bytes]:
        """An OpenAI-compatible server's reasoning_content deltas, as a reasoning item's summary."""
        out: list[bytes] = []
        if self.open is None or self.open["type"] != "reasoning":
            out += self._open({"id": new_id("rs"), "type": "reasoning", "summary": []})
            self.pieces = []
            out.append(self._ev("response.reasoning_summary_part.added", item_id=self.open["id"],
                                output_index=self._index(), summary_index=0, part={"type": "summary_text", "text": ""}))
        self.pieces.append(piece)
        out.append(self._ev("response.reasoning_summary_text.delta", item_id=self.open["id"],
                            output_index=self._index(), summary_index=0, delta=piece))
        return out

    def _call(self, call: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        k = call.get("index", 0)
        fn = call.get("function") or {}
        item = self.calls.get(k)
        if item is None:
            item = _call_item({"id": call.get("id"), "function": {"name": fn.get("name")}}, status="in_progress")
            self.calls[k] = item
            out += self._open(item)
            self.pieces = []
        elif item is not self.open:
            return out  # a late fragment of an already closed call: chat servers do not send these
        if fn.get("arguments"):
            self.pieces.append(fn["arguments"])
            out.append(self._ev("response.function_call_arguments.delta", item_id=item["id"],
                                output_index=self._index(), delta=fn["arguments"]))
        return out

    def finish(self) -> list[bytes]:
        out = self.start() + self._close()
        _finish(self.response, self.finish_reason, self.usage)
        kind = "response.completed" if self.response["status"] == "completed" else "response.incomplete"
        out.append(self._ev(kind, response=self.response))
        return out

    def fail(self, status: int, message: str, code: str | None) -> bytes:
        """After an error mid-stream: an `error` event with our code, then response.failed with what
        was produced (its error.code is one the SDK's ResponseError knows: a budget cut reads as a limit)."""
        out = self.start()
        out.append(self._ev("error", code=code, message=message, param=None))
        self.response["status"] = "failed"
        limited = status in (402, 429)
        self.response["error"] = {"code": "rate_limit_exceeded" if limited else "server_error", "message": message}
        if self.usage:
            self.response["usage"] = usage_from_chat(self.usage)
        out.append(self._ev("response.failed", response=self.response))
        return b"".join(out)
