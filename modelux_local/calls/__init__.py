"""One call, from a resolved request to its record: the pipeline every surface shares.

No web framework here (neither litestar nor textual): the proxy, replay, the evaluators and
the semantic indexer all make their calls through `Dispatcher`, each with its own snapshot
(the serving config, or a candidate) and its own `Sink` (the writer queue, or replay rows).

Following a chat completion (`POST /v1/chat/completions`) from the route to the writer and back:

1. proxy/fast.py (the call routes as bare ASGI, ahead of Litestar) reads the body within the
   limits and calls `proxy.gateway.Gateway.chat`, which
   decodes it, takes the tags out (`mlx:tags`, `x-mlx-*` headers), and calls
   `Dispatcher.start_chat(snapshot, body, raw, tags, "chat")` (this package, dispatch.py).
2. `start_chat` resolves the model through the snapshot's router (`Dispatcher.resolve`; an
   unknown model inside a run is recorded as a step of it), builds the `CallContext`
   (context.py, with its `new_call_id`), and asks for `include_usage` on streams.
3. `_attempt` runs the `before` hooks (hooks.py: budgets and aborts; a refusal is recorded and
   answered 402), then `routing.execute` (retries, fallback), which calls `send` -> the
   provider (`chat` / `chat_stream`). This is the one place outside routing/ that calls it.
4. Non-stream: `_finish` builds the `CallRecord`, settles the `after` hooks, and the sink puts
   it on the writer queue; the outcome (`ChatOutcome`) goes back to the gateway, which renders
   JSON as a `Reply` (proxy/reply.py). Stream: the outcome carries `stream(fmt)`; the reply carries it,
   and `_relay` passes each upstream read on as one frame (the `on_chunk` hooks still see every
   chunk), and records when the stream ends.
5. Whatever way a call ends after admission — answer, refusal, upstream error, an exception
   of ours (a recorded 500), the client gone (`client_closed`) — `_finish` records it once and
   settles every hook once. The writer thread (storage/writer.py) stores the record and runs
   the `after_batch` hooks (rollups, anomalies, search index) in the same transaction (the
   search index defers its rows to write 64 at a time: storage/search.PendingIndex).

Wire formats plug in at `ChatOutcome` + `StreamFormat` (see proxy/messages.py for Anthropic's).
"""
from .context import CallContext, Sink, Snapshot, new_call_id
from .dispatch import ChatOutcome, Dispatcher, Forward, StreamFormat, error_body
from .hooks import Addon, Hooks

__all__ = ["Addon", "CallContext", "ChatOutcome", "Dispatcher", "Forward", "Hooks", "Sink", "Snapshot", "StreamFormat", "error_body",
           "new_call_id"]
