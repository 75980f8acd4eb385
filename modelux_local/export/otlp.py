"""OTLP trace spans following the OpenTelemetry GenAI semantic conventions, as the protobuf
messages of `opentelemetry-proto` (http/protobuf), or their OTLP/JSON form (http/json).

Ids are deterministic (hashes of run and call ids), so exporting the same calls twice yields
the same spans and a backend deduplicates them instead of counting them twice. Message
content is left out unless asked for (`content = true`), as the GenAI conventions require.
"""
from __future__ import annotations

import base64
import hashlib
from typing import Any

import msgspec
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from .. import __version__

PROTOBUF, JSON = "http/protobuf", "http/json"
PROTOCOLS = (PROTOBUF, JSON)
CONTENT_TYPES = {PROTOBUF: "application/x-protobuf", JSON: "application/json"}
# our provider kinds / model families -> gen_ai.provider.name well-known values
_PROVIDER_NAMES = {"anthropic": "anthropic", "gemini": "gcp.gemini", "openai": "openai"}
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def _id(text: str, n: int) -> bytes:
    return hashlib.sha256(text.encode()).digest()[:n]


def trace_id(step: dict) -> bytes:
    return _id("run:" + (step["run_id"] or step["call_id"]), 16)


def _value(v: Any) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, (list, tuple)):
        return AnyValue(array_value=ArrayValue(values=[AnyValue(string_value=str(x)) for x in v]))
    return AnyValue(string_value=str(v))


def _attrs(pairs: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=_value(v)) for k, v in pairs.items() if v is not None]


def _nanos(ts: float) -> int:
    return int(ts * 1_000_000_000)


def _content(req: dict, resp: dict) -> dict[str, str | None]:
    """gen_ai.input.messages / gen_ai.output.messages as JSON text (only with `content = true`)."""
    messages = req.get("messages") if isinstance(req.get("messages"), list) else req.get("input")
    outputs = [c.get("message") for c in resp.get("choices") or [] if isinstance(c, dict) and c.get("message")]
    enc = msgspec.json.encode
    return {"gen_ai.input.messages": enc(messages).decode() if messages is not None else None,
            "gen_ai.output.messages": enc(outputs).decode() if outputs else None}


def call_span(step: dict, provider_kinds: dict[str, str], content: bool = False) -> Span:
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
        **(_content(req, resp) if content else {}),
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
        events.append(Span.Event(time_unix_nano=_nanos(t), name="modelux.attempt", attributes=_attrs({
            "modelux.attempt.index": i, "modelux.attempt.provider": a.get("provider"),
            "modelux.attempt.model": a.get("model"), "modelux.attempt.status": a.get("status"),
            "modelux.attempt.http_status": a.get("http_status"), "modelux.attempt.latency_ms": a.get("latency_ms"),
            "modelux.attempt.error": a.get("error"), "modelux.attempt.next": a.get("next")})))
    status = Status(code=Status.STATUS_CODE_OK) if step["status"] == "ok" else \
        Status(code=Status.STATUS_CODE_ERROR, message=(step.get("error") or step["status"])[:500])
    return Span(trace_id=trace_id(step), span_id=_id("call:" + step["call_id"], 8),
                parent_span_id=_id("runspan:" + step["run_id"], 8) if step["run_id"] else b"",
                name=f"{operation} {step['model'] or step['alias'] or ''}".strip(), kind=Span.SPAN_KIND_CLIENT,
                start_time_unix_nano=_nanos(step["started_ts"]), end_time_unix_nano=_nanos(step["ended_ts"]),
                attributes=attributes, events=events, status=status)


def run_span(run: dict) -> Span:
    """The root span of a run, from the run's rollup (so it is the same whichever calls are exported)."""
    return Span(
        trace_id=_id("run:" + run["run_id"], 16), span_id=_id("runspan:" + run["run_id"], 8),
        name=f"invoke_agent {run['tags'].get('agent') or run['run_id']}", kind=Span.SPAN_KIND_INTERNAL,
        start_time_unix_nano=_nanos(run["started_ts"]), end_time_unix_nano=_nanos(run["ended_ts"]),
        attributes=_attrs({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": run["tags"].get("agent"),
                           "gen_ai.conversation.id": run["run_id"], "modelux.run_id": run["run_id"],
                           "modelux.calls": run["calls"], "modelux.errors": run["errors"],
                           "modelux.cost_usd": run["cost_usd"], "modelux.status": run["status"],
                           **{f"modelux.tag.{k}": v for k, v in run["tags"].items()}}),
        status=Status(code=Status.STATUS_CODE_ERROR if run["errors"] else Status.STATUS_CODE_OK))


def spans_for(steps: list[dict], runs: dict[str, dict], provider_kinds: dict[str, str],
              content: bool = False) -> list[Span]:
    """Call spans, plus the root span of each run in `runs` (the caller passes each run once)."""
    return [call_span(s, provider_kinds, content) for s in steps] + [run_span(r) for r in runs.values()]


def export_request(spans: list[Span]) -> ExportTraceServiceRequest:
    resource = Resource(attributes=_attrs({"service.name": "modelux-local", "service.version": __version__}))
    scope = InstrumentationScope(name="modelux-local", version=__version__)
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=resource, scope_spans=[ScopeSpans(scope=scope, spans=spans)])])


def to_otlp_json(message) -> dict:
    """The OTLP/JSON mapping of a message: protobuf's JSON, with integer enums and trace/span ids
    in hex (OTLP's one deviation from the standard mapping, which would give base64)."""
    doc = MessageToDict(message, use_integers_for_enums=True)

    def fix(x):
        if isinstance(x, dict):
            for k, v in x.items():
                if k in _ID_FIELDS and isinstance(v, str):
                    x[k] = base64.b64decode(v).hex()
                else:
                    fix(v)
        elif isinstance(x, list):
            for v in x:
                fix(v)
    fix(doc)
    return doc


def encode(spans: list[Span], protocol: str = PROTOBUF) -> tuple[bytes, str]:
    """The request body and its content type."""
    req = export_request(spans)
    if protocol == JSON:
        return msgspec.json.encode(to_otlp_json(req)), CONTENT_TYPES[JSON]
    return req.SerializeToString(), CONTENT_TYPES[PROTOBUF]
