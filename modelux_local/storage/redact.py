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


_encoded: dict[tuple[str, ...], tuple[bytes, ...]] = {}
_enc = msgspec.json.Encoder()


def _has(blob: bytes, secrets: tuple[bytes, ...]) -> bool:
    for s in secrets:
        if s in blob:
            return True
    return False


def mask_record(rec: CallRecord, secrets: tuple[str, ...]) -> None:
    """Masks every secret out of the record, in place. A record holding none (nearly all) costs
    one substring search per secret per part: the JSON parts are checked in one encoding, and
    masked one by one (re-encoded, replaced, decoded) only when a secret is in them."""
    if not secrets:
        return
    raw = _encoded.get(secrets)
    if raw is None:
        if len(_encoded) > 16:  # config reloads change the secrets: keep only recent sets
            _encoded.clear()
        raw = _encoded[secrets] = tuple(s.encode() for s in secrets)
    if rec.error:
        rec.error = _mask_str(rec.error, secrets)
    if isinstance(rec.request, bytes) and _has(rec.request, raw):
        rec.request = _mask_bytes(rec.request, secrets)
    if isinstance(rec.response, bytes) and _has(rec.response, raw):
        rec.response = _mask_bytes(rec.response, secrets)
    if rec.stream_events and _has(b"\n".join(rec.stream_events), raw):
        rec.stream_events = [_mask_bytes(e, secrets) for e in rec.stream_events]
    # a secret in one part's encoding is in the encoding of the four (the converse may not hold: checked below)
    if _has(_enc.encode((rec.attempts, rec.tags, rec.decision, rec.raw_usage)), raw):
        rec.attempts = _mask_json(rec.attempts, secrets)
        rec.tags = _mask_json(rec.tags, secrets)
        rec.decision = _mask_json(rec.decision, secrets)
        if rec.raw_usage is not None:
            rec.raw_usage = _mask_json(rec.raw_usage, secrets)
