"""What the proxy hands to the storage writer for each call."""
from __future__ import annotations

from typing import Any

import msgspec

from .usage import Usage


class CallRecord(msgspec.Struct, kw_only=True):
    call_id: str
    run_id: str | None
    tags: dict[str, str]
    endpoint: str                    # chat | embeddings | messages
    started_at: float                # epoch seconds
    alias: str | None
    config: str
    config_version: str
    provider: str | None
    model: str | None
    status: str                      # ok | error | aborted | client_closed
    http_status: int
    usage: Usage | None
    latency_ms: float
    ttft_ms: float | None
    stream: bool
    attempts: list[dict]
    decision: dict[str, Any]
    error: str | None
    request: bytes
    response: bytes | None = None            # full body (non-stream) or error body
    stream_events: list[bytes] | None = None  # streamed chunk payloads, assembled by the writer
    raw_usage: Any = None
    replay_id: str | None = None
    original_call_id: str | None = None
    price_book: Any = None                   # PriceBook of the config that routed it (not stored)
    cost_nanos: int | None = None            # set by the writer once priced
    plan: Any = None                         # routing Plan; its trace joins `decision` in the writer
