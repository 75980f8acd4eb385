"""Shipping recorded calls to other tools: OTLP/HTTP traces (OpenTelemetry GenAI conventions) and JSONL.

Reads the database only; never imports the proxy. `live` is the background job that exports
while serving (behind a cursor in the database); `export --otlp` uses the same encoder. One trace per run (calls without a run get
a trace of their own): a root span for the run, a client span per call, and the routing
attempts as span events.
"""
from ..storage.exports import count_calls, iter_calls, runs_by_id
from .jsonl import jsonl_line
from .otlp import encode, spans_for

__all__ = ["count_calls", "iter_calls", "runs_by_id", "spans_for", "encode", "jsonl_line"]
