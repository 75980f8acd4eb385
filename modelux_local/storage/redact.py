"""Secrets (provider keys, webhook secrets, the server token) masked out of a record before it
is stored or logged: an upstream may echo the key it was sent in its error text. Runs on the
writer thread, so the hot path pays nothing."""
from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import msgspec

from ..core.records import CallRecord

MASK = "[redacted]"
MIN_SECRET_LEN = 8  # shorter values would mask ordinary words


def secrets_of(server: Any) -> tuple[str, ...]:
    """The values of every env var the server config names for a secret, plus MODELUX_TOKEN."""
    names: list[str | None] = [p.api_key_env for p in server.providers.values()]
    names += [w.secret_env for w in server.webhooks]
    names.append("MODELUX_TOKEN")
    values = {os.environ.get(n or "", "") for n in names}
    return tuple(sorted((v for v in values if len(v) >= MIN_SECRET_LEN), key=len, reverse=True))


def _mask_bytes(b: bytes, secrets: Iterable[str]) -> bytes:
    for s in secrets:
        if s.encode() in b:
            b = b.replace(s.encode(), MASK.encode())
    return b


def _mask_str(t: str, secrets: Iterable[str]) -> str:
    for s in secrets:
        if s in t:
            t = t.replace(s, MASK)
    return t


def _mask_json(obj: Any, secrets: Iterable[str]) -> Any:
    raw = msgspec.json.encode(obj)
    masked = _mask_bytes(raw, secrets)
    return obj if masked is raw else msgspec.json.decode(masked)


def mask_record(rec: CallRecord, secrets: tuple[str, ...]) -> None:
    if not secrets:
        return
    if rec.error:
        rec.error = _mask_str(rec.error, secrets)
    if isinstance(rec.request, bytes):
        rec.request = _mask_bytes(rec.request, secrets)
    if isinstance(rec.response, bytes):
        rec.response = _mask_bytes(rec.response, secrets)
    if rec.stream_events:
        rec.stream_events = [_mask_bytes(e, secrets) for e in rec.stream_events]
    rec.attempts = _mask_json(rec.attempts, secrets)
    rec.tags = _mask_json(rec.tags, secrets)
    rec.decision = _mask_json(rec.decision, secrets)
    if rec.raw_usage is not None:
        rec.raw_usage = _mask_json(rec.raw_usage, secrets)

