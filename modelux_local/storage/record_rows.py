"""Turning CallRecords into rows: pricing, stream assembly (assemble.py), and the per-run rollup."""
from __future__ import annotations

import weakref
from typing import Any

import apsw
import msgspec

from ..core.records import CallRecord
from ..core.usage import usage_from_openai, usage_of_body
from .assemble import assemble_stream
from .bodies import BodyEncoder

_enc = msgspec.json.Encoder()


def _finish(rec: CallRecord) -> tuple[bytes | None, Any]:
    """The response body to store and the usage seen in it (raw usage kept for the trace)."""
    usage = rec.usage
    body = rec.response
    if rec.stream_events is not None:
        assembled = assemble_stream(rec.stream_events)
        body = _enc.encode(assembled)
        if usage is None:
            usage = usage_from_openai(assembled.get("usage"))
            if rec.raw_usage is None:
                rec.raw_usage = assembled.get("usage")
    elif usage is None and body and rec.status == "ok":
        raw, usage = usage_of_body(body)  # only the usage field is decoded
        if rec.raw_usage is None:
            rec.raw_usage = raw
    return body, usage


_INSERT = """INSERT OR REPLACE INTO calls (call_id, run_id, started_at, endpoint, alias, config, config_version,
 provider, model, status, http_status, input_tokens, output_tokens, cached_tokens, cache_write_tokens,
 reasoning_tokens, cost_nusd, priced, latency_ms, ttft_ms, stream, retries, tags, attempts, decision, error,
 request, response, replay_id, original_call_id)
 VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) RETURNING call_id, rowid"""

_RUN_UPSERT = """INSERT INTO runs (run_id, tags, agent, started_at, last_at, calls, errors, retries,
 input_tokens, output_tokens, cost_nusd, unpriced_calls, replay_id)
 VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)
 ON CONFLICT(run_id) DO UPDATE SET
  tags = json_patch(runs.tags, excluded.tags),
  agent = coalesce(runs.agent, excluded.agent),
  started_at = min(runs.started_at, excluded.started_at),
  last_at = max(runs.last_at, excluded.last_at),
  calls = runs.calls + excluded.calls, errors = runs.errors + excluded.errors, retries = runs.retries + excluded.retries,
  input_tokens = runs.input_tokens + excluded.input_tokens,
  output_tokens = runs.output_tokens + excluded.output_tokens,
  cost_nusd = runs.cost_nusd + excluded.cost_nusd,
  unpriced_calls = runs.unpriced_calls + excluded.unpriced_calls,
  status = CASE WHEN runs.status = 'completed' THEN 'running' ELSE runs.status END,
  ended_at = CASE WHEN runs.status = 'completed' THEN NULL ELSE runs.ended_at END"""


_encoders: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def encoder_for(conn: apsw.Connection) -> BodyEncoder:
    """The body encoder of a writing connection (it caches which messages that database holds)."""
    enc = _encoders.get(conn)
    if enc is None:
        enc = _encoders[conn] = BodyEncoder(conn)
    return enc


def write_calls(conn: apsw.Connection, recs: list[CallRecord]) -> None:
    rows: list[tuple] = []
    runs: dict[str, list] = {}  # one upsert per run per batch: a batch is mostly a few runs' calls
    enc = encoder_for(conn)
    enc.fresh, enc.rowids = {}, {}
    for r in recs:
        if r.plan is not None:
            r.decision = {**r.plan.trace(), **r.decision}
            r.plan = None
        body, usage = _finish(r)
        r.usage = usage  # later hooks (rollups, log lines, the search index) see what the writer derived
        r.response = body
        cost = None
        if usage is not None and r.provider and r.model and r.price_book is not None:
            rates = r.price_book.rates(r.provider, r.model)
            if rates is not None:
                cost = rates.cost_nanos(usage)
                r.decision["prices"] = rates.as_trace()
            else:
                r.decision["prices"] = None
        r.cost_nanos = cost
        if r.raw_usage is not None:
            r.decision["raw_usage"] = r.raw_usage
        u = usage
        retries = max(0, len(r.attempts) - 1)
        rows.append((
            r.call_id, r.run_id, r.started_at, r.endpoint, r.alias, r.config, r.config_version,
            r.provider, r.model, r.status, r.http_status,
            u and u.input_tokens, u and u.output_tokens, u and u.cached_tokens, u and u.cache_write_tokens,
            u and u.reasoning_tokens, cost, int(cost is not None), r.latency_ms, r.ttft_ms, int(r.stream), retries,
            _enc.encode(r.tags).decode(), _enc.encode(r.attempts).decode(), _enc.encode(r.decision).decode(), r.error,
            enc.request(r.request, r.run_id, r.started_at, r.call_id), enc.response(body), r.replay_id, r.original_call_id,
        ))
        if r.run_id:
            _add_to_run(runs, r, u, cost, retries)
    enc.rowids = dict(conn.executemany(_INSERT, rows))
    if runs:
        conn.executemany(_RUN_UPSERT, [(rid, _enc.encode(a[0]).decode(), *a[1:]) for rid, a in runs.items()])


def _add_to_run(runs: dict[str, list], r: CallRecord, u: Any, cost: int | None, retries: int) -> None:
    """Folds a call into its run's pending upsert, as the upsert would fold it into the row:
    tags merged in order, the first agent, min start, max end, sums."""
    ended = r.started_at + (r.latency_ms or 0) / 1000
    a = runs.get(r.run_id)
    if a is None:
        runs[r.run_id] = [dict(r.tags), r.tags.get("agent"), r.started_at, ended, 1,
                          int(r.status in ("error", "aborted")), retries, (u.input_tokens if u else 0),
                          (u.output_tokens if u else 0), cost or 0, int(cost is None and r.status == "ok"), r.replay_id]
        return
    a[0].update(r.tags)
    a[1] = a[1] or r.tags.get("agent")
    a[2], a[3] = min(a[2], r.started_at), max(a[3], ended)
    a[4] += 1
    a[5] += int(r.status in ("error", "aborted"))
    a[6] += retries
    a[7] += u.input_tokens if u else 0
    a[8] += u.output_tokens if u else 0
    a[9] += cost or 0
    a[10] += int(cost is None and r.status == "ok")
