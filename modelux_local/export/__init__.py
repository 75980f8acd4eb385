"""Shipping recorded calls to other tools: OTLP/HTTP traces (OpenTelemetry GenAI conventions) and JSONL.

Reads the database only; never imports the proxy. One trace per run (calls without a run get
a trace of their own): a root span for the run, a client span per call, and the routing
attempts as span events.
"""
from ..storage.exports import count_calls, iter_calls, runs_by_id
from .otlp import spans_for, otlp_payload
from .jsonl import jsonl_line

__all__ = ["count_calls", "iter_calls", "runs_by_id", "spans_for", "otlp_payload", "jsonl_line"]
