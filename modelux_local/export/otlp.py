"""OTLP/HTTP JSON trace payloads following the OpenTelemetry GenAI semantic conventions.

Ids are deterministic (hashes of run and call ids), so exporting the same calls twice yields
the same spans and a backend deduplicates them instead of counting them twice.
"""
from __future__ import annotations

import hashlib
from typing import Any

from .. import __version__

SPAN_KIND_INTERNAL, SPAN_KIND_CLIENT = 1, 3
STATUS_OK, STATUS_ERROR = 1, 2
# our provider kinds / model families -> gen_ai.provider.name well-known values
_PROVIDER_NAMES = {"anthropic": "anthropic", "gemini": "gcp.gemini", "openai": "openai"}


def _hex(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[: n * 2]


def trace_id(step: dict) -> str:
    return _hex("run:" + (step["run_id"] or step["call_id"]), 16)


def _attr(key: str, value: Any) -> dict | None:
    if value is None:
        return None
    if isinstance(value, bool):
        v = {"boolValue": value}
    elif isinstance(value, int):
        v = {"intValue": str(value)}
    elif isinstance(value, float):
        v = {"doubleValue": value}
    elif isinstance(value, (list, tuple)):
        v = {"arrayValue": {"values": [{"stringValue": str(x)} for x in value]}}
    else:
        v = {"stringValue": str(value)}
    return {"key": key, "value": v}


def _attrs(pairs: dict[str, Any]) -> list[dict]:
    return [a for k, v in pairs.items() if (a := _attr(k, v)) is not None]


def _nanos(ts: float) -> str:
    return str(int(ts * 1_000_000_000))


def call_span(step: dict, provider_kinds: dict[str, str]) -> dict:
    req = step.get("request") if isinstance(step.get("request"), dict) else {}
    resp = step.get("response") if isinstance(step.get("response"), dict) else {}
    finish = [c.get("finish_reason") for c in resp.get("choices") or [] if isinstance(c, dict) and c.get("finish_reason")]
    operation = "embeddings" if step["endpoint"] == "embeddings" else "chat"
    kind = provider_kinds.get(step["provider"] or "", "")
    attributes = _attrs({
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": _PROVIDER_NAMES.get(kind, step["provider"]),
        "gen_ai.request.model": req.get("model") or step["alias"] or step["model"],
        "gen_ai.response.model": resp.get("model") or step["model"],
        "gen_ai.response.id": resp.get("id"),
        "gen_ai.response.finish_reasons": finish or None,
        "gen_ai.request.max_tokens": req.get("max_tokens") or req.get("max_completion_tokens"),
        "gen_ai.request.temperature": req.get("temperature"),
        "gen_ai.usage.input_tokens": step["input_tokens"],
        "gen_ai.usage.output_tokens": step["output_tokens"],
        "gen_ai.conversation.id": step["run_id"],
        "error.type": None if step["status"] == "ok" else (str(step["http_status"]) if step["http_status"] else step["status"]),
        "modelux.call_id": step["call_id"],
        "modelux.run_id": step["run_id"],
        "modelux.alias": step["alias"],
        "modelux.config": step["config"],
        "modelux.config_version": step["config_version"],
        "modelux.provider": step["provider"],
        "modelux.status": step["status"],
        "modelux.stream": step["stream"],
        "modelux.cost_usd": step["cost_usd"],
        "modelux.priced": step["priced"],
        "modelux.cached_tokens": step["cached_tokens"],
        "modelux.reasoning_tokens": step["reasoning_tokens"],
        "modelux.ttft_ms": step["ttft_ms"],
        **{f"modelux.tag.{k}": v for k, v in (step.get("tags") or {}).items()},
    })
    events = []
    t = step["started_ts"]
    for i, a in enumerate(step.get("attempts") or []):
        t += (a.get("latency_ms") or 0) / 1000
        events.append({"timeUnixNano": _nanos(t), "name": "modelux.attempt", "attributes": _attrs({
            "modelux.attempt.index": i, "modelux.attempt.provider": a.get("provider"),
            "modelux.attempt.model": a.get("model"), "modelux.attempt.status": a.get("status"),
            "modelux.attempt.http_status": a.get("http_status"), "modelux.attempt.latency_ms": a.get("latency_ms"),
            "modelux.attempt.error": a.get("error"), "modelux.attempt.next": a.get("next")})})
    span = {
        "traceId": trace_id(step), "spanId": _hex("call:" + step["call_id"], 8),
        "name": f"{operation} {step['model'] or step['alias'] or ''}".strip(),
        "kind": SPAN_KIND_CLIENT, "startTimeUnixNano": _nanos(step["started_ts"]),
        "endTimeUnixNano": _nanos(step["ended_ts"]), "attributes": attributes, "events": events,
        "status": {"code": STATUS_OK} if step["status"] == "ok" else
                  {"code": STATUS_ERROR, "message": (step.get("error") or step["status"])[:500]},
    }
    if step["run_id"]:
        span["parentSpanId"] = _hex("runspan:" + step["run_id"], 8)
    return span


def run_span(run: dict) -> dict:
    """The root span of a run, from the run's rollup (so it is the same whichever calls are exported)."""
    return {
        "traceId": _hex("run:" + run["run_id"], 16), "spanId": _hex("runspan:" + run["run_id"], 8),
        "name": f"invoke_agent {run['tags'].get('agent') or run['run_id']}", "kind": SPAN_KIND_INTERNAL,
        "startTimeUnixNano": _nanos(run["started_ts"]), "endTimeUnixNano": _nanos(run["ended_ts"]),
        "attributes": _attrs({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": run["tags"].get("agent"),
                              "gen_ai.conversation.id": run["run_id"], "modelux.run_id": run["run_id"],
                              "modelux.calls": run["calls"], "modelux.errors": run["errors"],
                              "modelux.cost_usd": run["cost_usd"], "modelux.status": run["status"],
                              **{f"modelux.tag.{k}": v for k, v in run["tags"].items()}}),
        "status": {"code": STATUS_ERROR if run["errors"] else STATUS_OK},
    }


def spans_for(steps: list[dict], runs: dict[str, dict], provider_kinds: dict[str, str]) -> list[dict]:
    """Call spans, plus the root span of each run in `runs` (the caller passes each run once)."""
    return [call_span(s, provider_kinds) for s in steps] + [run_span(r) for r in runs.values()]


def otlp_payload(spans: list[dict]) -> dict:
    return {"resourceSpans": [{
        "resource": {"attributes": _attrs({"service.name": "modelux-local", "service.version": __version__})},
        "scopeSpans": [{"scope": {"name": "modelux-local", "version": __version__}, "spans": spans}],
    }]}
