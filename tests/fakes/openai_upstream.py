"""A fake OpenAI-compatible upstream: a real aiohttp server on 127.0.0.1.

It runs in a background thread with its own event loop, so sync tests, async tests
(whatever loop they run on) and the proxy under test can all talk to it over real HTTP.

    with FakeOpenAI() as up:                  # free port, started; stopped on exit
        client = OpenAI(base_url=up.base_url, api_key="k")
        up.enqueue(status=429, headers={"retry-after": "0"})
        up.enqueue(text="hello", prompt_tokens=12, completion_tokens=5)
        ...
        up.requests[-1].json["model"]

Behaviour queue: each `enqueue(...)` call appends one scripted reply; `n_times=3` appends
three identical ones. Every POST (chat completions, embeddings) takes the next reply in
FIFO order; GET /v1/models never consumes one. With an empty queue the answer is
deterministic and derived from the request ("echo: <last user message>").

enqueue() fields (all optional; they apply to streamed requests as well):
    status, headers   non-2xx answers carry an OpenAI-shaped error body (or `error=`)
    delay_s           sleep before answering (before the headers, for streams)
    text, tool_calls  the answer; tool_calls = [{"name", "arguments"(str)}]
    reasoning         `reasoning_content` before the answer, as vLLM / DeepSeek servers send it
    prompt_tokens, completion_tokens, finish_reason
    disconnect        close the connection without any answer
    stream_fail_after drop the connection after that many SSE chunks
    chunk_delay_s     per-reply override of `chunk_delay_s`
    body              a raw JSON object to answer with (non-stream), as is
    raw, content_type bytes to answer with as is, streamed requests too (HTML, garbage, empty)
    omit_done         end the stream cleanly without `data: [DONE]`
    truncate_after    after that many SSE chunks send half of the next one and end cleanly
    error_event_after after that many SSE chunks send an in-band `data: {"error": ...}` event

Attributes: `requests` (RecordedRequest list; streamed ones get `chunk_times`, the
monotonic time each SSE event was written, and `client_gone_at` when the client hung up
mid-stream), `chunk_delay_s`, `default_latency_s`,
`models`, `api_key` (when set, other bearer tokens get 401).

Standalone (scripts/bench, manual poking), in the foreground until Ctrl-C:
    python -m tests.fakes.openai_upstream --port 8001 --chunk-delay-ms 20 --latency-ms 100
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import re
import signal
import struct
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ._threaded import RecordedRequest, ThreadedFake

_ERROR_TYPES = {  # what OpenAI puts in error.type / error.code for each status
    400: ("invalid_request_error", None), 401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"), 429: ("requests", "rate_limit_exceeded"),
}


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float | None = None
    text: str | None = None
    tool_calls: list[dict[str, str]] | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    disconnect: bool = False
    stream_fail_after: int | None = None
    chunk_delay_s: float | None = None
    error: dict[str, Any] | None = None
    body: Any = None
    reasoning: str | None = None
    raw: bytes | None = None
    content_type: str = "application/json"
    omit_done: bool = False
    truncate_after: int | None = None
    error_event_after: int | None = None


def _text_of(content: Any) -> str:
    # content is a string, or a list of parts of which only text parts carry tokens we can count
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _tokens(text: str) -> int:
    return len(text) // 4 + 1  # the usual ~4 characters per token rule


def _error_body(status: int, message: str | None = None) -> dict[str, Any]:
    kind, code = _ERROR_TYPES.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    return {"error": {"message": message or f"fake upstream: scripted {status}", "type": kind,
                      "param": None, "code": code}}


def _embedding(text: str, dims: int) -> list[float]:
    # seeded from the text so equal inputs embed equally, normalised like real embeddings
    raw = b"".join(hashlib.sha256(f"{text}/{i}".encode()).digest() for i in range(dims // 8 + 1))
    vec = [(b - 127.5) / 127.5 for b in raw[:dims]]
    norm = sum(v * v for v in vec) ** 0.5 or 1.0
    return [round(v / norm, 6) for v in vec]


class FakeOpenAI(ThreadedFake):
    name = "fake-openai"
    reply_type = Reply

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, chunk_delay_s: float = 0.0,
                 default_latency_s: float = 0.0, api_key: str | None = None, record: bool = True,
                 loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop):
        super().__init__(host, port, default_latency_s=default_latency_s, record=record, loop_factory=loop_factory)
        self.chunk_delay_s = chunk_delay_s
        self.api_key = api_key
        self.models = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/models", self._models)

    def _refusal(self, request: web.Request, reply: Reply, parsed: Any) -> web.StreamResponse | None:
        """The answer when this request does not get a normal 200, else None."""
        if reply.disconnect:
            request.transport.close()
            return web.Response()  # written into a closed transport: the client sees the connection drop
        if reply.status >= 400:
            return web.json_response(reply.error or _error_body(reply.status), status=reply.status,
                                     headers=reply.headers)
        if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return web.json_response(_error_body(401, "Incorrect API key provided."), status=401)
        if not isinstance(parsed, dict):
            return web.json_response(_error_body(400, "We could not parse the JSON body of your request."),
                                     status=400)
        return None

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": m, "object": "model", "created": 1700000000, "owned_by": "fake"} for m in self.models]})

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        _, reply, req = await self.take(request)
        if (refused := self._refusal(request, reply, req)) is not None:
            return refused
        if reply.body is not None:
            return web.json_response(reply.body, status=reply.status, headers=reply.headers)
        inputs = req.get("input", "")
        inputs = [inputs] if isinstance(inputs, str) or (inputs and isinstance(inputs[0], int)) else inputs
        dims = int(req.get("dimensions") or 64)
        data = []
        for i, item in enumerate(inputs):
            text = item if isinstance(item, str) else " ".join(map(str, item))
            vec: Any = _embedding(text, dims)
            if req.get("encoding_format") == "base64":  # little-endian float32, as the SDK decodes it
                vec = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
            data.append({"object": "embedding", "index": i, "embedding": vec})
        used = reply.prompt_tokens or sum(_tokens(t if isinstance(t, str) else " " * 4 * len(t)) for t in inputs)
        return web.json_response({"object": "list", "data": data, "model": req.get("model", ""),
                                  "usage": {"prompt_tokens": used, "total_tokens": used}}, headers=reply.headers)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        rec, reply, req = await self.take(request)
        if (refused := self._refusal(request, reply, req)) is not None:
            return refused
        if reply.body is not None:
            return web.json_response(reply.body, status=reply.status, headers=reply.headers)
        if reply.raw is not None:
            return web.Response(body=reply.raw, status=reply.status, headers={
                "content-type": reply.content_type, **reply.headers})
        answer = self._answer(req, reply)
        if req.get("stream"):
            return await self._stream(request, rec, reply, req, answer)
        message: dict[str, Any] = {"role": "assistant", "content": answer["text"], "refusal": None,
                                   "annotations": []}
        if answer["tool_calls"]:
            message["tool_calls"] = answer["tool_calls"]
        if reply.reasoning:
            message["reasoning_content"] = reply.reasoning
        choices = [{"index": i, "message": message, "logprobs": None, "finish_reason": answer["finish_reason"]}
                   for i in range(answer["n"])]
        return web.json_response({**answer["head"], "object": "chat.completion", "choices": choices,
                                  "usage": answer["usage"]}, headers=reply.headers)

    def _answer(self, req: dict[str, Any], reply: Reply) -> dict[str, Any]:
        """What the model 'says' for this request, shared by the streamed and plain paths."""
        messages = req.get("messages") or []
        prompt = " ".join(_text_of(m.get("content")) for m in messages if isinstance(m, dict))
        tool_calls = None
        calls = reply.tool_calls
        forced = req.get("tool_choice")
        if calls is None and req.get("tools") and (forced == "required" or isinstance(forced, dict)):
            # a forced tool choice is the one case a real model reliably calls a tool: mirror it
            name = forced["function"]["name"] if isinstance(forced, dict) else req["tools"][0]["function"]["name"]
            calls = [{"name": name, "arguments": "{}"}]
        if calls:
            tool_calls = [{"id": f"call_{hashlib.sha1(f'{prompt}/{i}'.encode()).hexdigest()[:24]}",
                           "type": "function", "function": {"name": c["name"], "arguments": c.get("arguments", "{}")}}
                          for i, c in enumerate(calls)]
            text = reply.text
        elif reply.text is not None:
            text = reply.text
        else:
            last = next((_text_of(m.get("content")) for m in reversed(messages)
                         if isinstance(m, dict) and m.get("role") == "user"), "")
            text = f"echo: {last[:200]}"
            fmt = (req.get("response_format") or {}).get("type")
            if fmt in ("json_object", "json_schema"):
                text = json.dumps({"echo": last[:200]})
        produced = (text or "") + "".join(c["function"]["arguments"] for c in tool_calls or [])
        n = int(req.get("n") or 1)
        p_tok = reply.prompt_tokens if reply.prompt_tokens is not None else _tokens(prompt)
        c_tok = (reply.completion_tokens if reply.completion_tokens is not None else _tokens(produced)) * n
        return {
            "head": {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()),
                     "model": req.get("model", ""), "system_fingerprint": "fp_fake", "service_tier": "default"},
            "text": text, "tool_calls": tool_calls, "n": n,
            "finish_reason": reply.finish_reason or ("tool_calls" if tool_calls else "stop"),
            "usage": {"prompt_tokens": p_tok, "completion_tokens": c_tok, "total_tokens": p_tok + c_tok,
                      "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                                    "accepted_prediction_tokens": 0,
                                                    "rejected_prediction_tokens": 0}},
        }

    async def _stream(self, request: web.Request, rec: RecordedRequest, reply: Reply, req: dict[str, Any],
                      answer: dict[str, Any]) -> web.StreamResponse:
        include_usage = bool((req.get("stream_options") or {}).get("include_usage"))
        head = {**answer["head"], "object": "chat.completion.chunk"}
        if include_usage:  # with include_usage every chunk carries "usage", null until the last one
            head["usage"] = None

        def chunk(deltas: list[dict[str, Any]], finish: str | None = None) -> dict[str, Any]:
            return {**head, "choices": [{"index": i, "delta": d, "logprobs": None, "finish_reason": finish}
                                        for i, d in enumerate(deltas)]}

        n = answer["n"]
        events = [chunk([{"role": "assistant", "content": None if answer["tool_calls"] else "",
                          "refusal": None}] * n)]
        events += [chunk([{"reasoning_content": w}] * n) for w in re.findall(r"\s*\S+", reply.reasoning or "")]
        # one word per chunk, spaces kept, so clients that join the deltas get the exact text back
        events += [chunk([{"content": w}] * n) for w in re.findall(r"\s*\S+", answer["text"] or "")]
        for i, call in enumerate(answer["tool_calls"] or []):
            # OpenAI's tool-call deltas: id/type/name first with empty arguments, then argument fragments
            fn = call["function"]
            events.append(chunk([{"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                                  "function": {"name": fn["name"], "arguments": ""}}]}] * n))
            args = fn["arguments"]
            events += [chunk([{"tool_calls": [{"index": i, "function": {"arguments": args[j:j + 8]}}]}] * n)
                       for j in range(0, len(args), 8)]
        events.append(chunk([{}] * n, answer["finish_reason"]))
        if include_usage:
            events.append({**head, "choices": [], "usage": answer["usage"]})

        resp = web.StreamResponse(headers={"content-type": "text/event-stream; charset=utf-8",
                                           "cache-control": "no-cache", **reply.headers})
        await resp.prepare(request)
        pause = self.chunk_delay_s if reply.chunk_delay_s is None else reply.chunk_delay_s
        for k, event in enumerate(events):
            if reply.stream_fail_after is not None and k >= reply.stream_fail_after:
                request.transport.close()  # mid-stream drop: the chunked body never terminates
                return resp
            if k and pause:
                await asyncio.sleep(pause)
            line = b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"
            if k == reply.truncate_after:  # half an event, then a clean end of the body
                await resp.write(line[:len(line) // 2])
                await resp.write_eof()
                return resp
            if k == reply.error_event_after:  # as OpenAI does: the error event, then the end
                await resp.write(b"data: " + json.dumps(_error_body(500, "fake upstream: in-band error")).encode()
                                 + b"\n\ndata: [DONE]\n\n")
                await resp.write_eof()
                return resp
            try:
                await resp.write(line)
            except ConnectionError:  # the client (the proxy) went away: tests check it stops reading
                rec.client_gone_at = time.monotonic()
                return resp
            rec.chunk_times.append(time.monotonic())
        if not reply.omit_done:
            await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m tests.fakes.openai_upstream", description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 = a free port (printed on start)")
    ap.add_argument("--chunk-delay-ms", type=float, default=0.0)
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--api-key", default=None, help="refuse other bearer tokens with 401")
    ap.add_argument("--record", action="store_true", help="keep requests in memory (off: flat memory for benches)")
    args = ap.parse_args(argv)
    try:  # standalone it mostly serves benchmarks: the faster loop keeps its share of the CPU small
        import uvloop
        factory = uvloop.new_event_loop
    except ImportError:
        factory = asyncio.new_event_loop
    fake = FakeOpenAI(args.host, args.port, chunk_delay_s=args.chunk_delay_ms / 1000,
                      default_latency_s=args.latency_ms / 1000, api_key=args.api_key, record=args.record,
                      loop_factory=factory)
    fake.start()
    print(f"fake OpenAI upstream listening on {fake.base_url}", flush=True)  # scripts parse this line
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):  # a timed wait keeps the main thread responsive to signals
        pass
    fake.stop()


if __name__ == "__main__":
    main()
