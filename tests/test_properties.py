"""Property tests against the real server: whatever a client sends (bodies, tags, headers), the
answer is never a 5xx and never hangs, and an unrelated client calling meanwhile is unaffected.
Then the management API against its OpenAPI schema (schemathesis).

Example counts are kept small (EXAMPLES below) so the file runs in seconds; raise them with
MODELUX_PROPERTY_EXAMPLES=N for a longer hunt.
"""
from __future__ import annotations

import os
import tempfile
import threading
import time

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .server import ServerProcess, write_config

EXAMPLES = int(os.environ.get("MODELUX_PROPERTY_EXAMPLES", "0")) or None
SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck), database=None)

CONFIG = """
[routing]
default = "default"

[limits]
max_json_depth = 16

[providers.mock]
kind = "mock"

[[budgets]]
match = { agent = "prop" }
max_calls = 1000000
"""
ROUTING = """
[aliases.fast]
targets = [{ provider = "mock", model = "mock-small" }]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("props")
    s = ServerProcess(d / "data", write_config(d / "config", {"modelux.toml": CONFIG, "default.toml": ROUTING}))
    s.start()
    yield s
    s.stop()


class Bystander:
    """An unrelated client calling all along; every one of its calls must succeed, promptly."""

    def __init__(self, server: ServerProcess):
        self.server, self.stop, self.failures, self.calls, self.slowest = server, threading.Event(), [], 0, 0.0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with httpx.Client(base_url=self.server.url, timeout=10) as c:
            while not self.stop.is_set():
                t0 = time.monotonic()
                try:
                    r = c.post("/v1/chat/completions", json={"model": "@fast", "messages": [
                        {"role": "user", "content": "unrelated"}], "mlx:tags": {"run_id": "bystander"}})
                    if r.status_code != 200:
                        self.failures.append(r.text)
                except httpx.HTTPError as e:
                    self.failures.append(repr(e))
                self.slowest = max(self.slowest, time.monotonic() - t0)
                self.calls += 1
                time.sleep(0.05)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(15)
        assert not self.failures, self.failures[:3]
        assert self.calls > 0 and self.slowest < 5, (self.calls, self.slowest)


# ---------------------------------------------------------------- strategies

text = st.text(max_size=30)
json_scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False) | text
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(text, inner, max_size=4), max_leaves=12)
# each field is mostly well-formed (so the examples reach the provider) and sometimes anything
models = st.one_of(st.just("@fast"), st.just("@fast"), st.just("mock/mock-small"),
                   st.sampled_from(["@nope", "mock/", "/x", "mock/../../x", ""]), text, json_values)
tags = st.one_of(st.dictionaries(st.sampled_from(["run_id", "agent", "step"]) | text, text, max_size=5),
                 st.dictionaries(text, json_values, max_size=3), json_values)
part = st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "x"]), "text": text | json_values})
content = st.one_of(text, text, st.lists(part, max_size=3), json_values)
message = st.fixed_dictionaries({"role": st.sampled_from(["user", "user", "system", "assistant", "tool", "x"]),
                                 "content": content}, optional={"tool_calls": json_values, "name": json_values})
messages = st.one_of(st.lists(message, min_size=1, max_size=4), st.lists(message, min_size=1, max_size=4),
                     st.lists(message | json_values, max_size=4), json_values)
small_or_any = st.one_of(st.integers(1, 4), st.integers(-5, 10**13), json_values)
chat_bodies = st.fixed_dictionaries(
    {"model": models, "messages": messages},
    optional={"n": small_or_any, "max_tokens": small_or_any, "max_completion_tokens": small_or_any,
              "stream": st.booleans(), "mlx:tags": tags, "stop": json_values, "stream_options": json_values,
              "tools": json_values, "tool_choice": json_values, "response_format": json_values,
              "temperature": json_values, "extra": json_values})
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=40).map(str.strip)  # h11: no edge spaces
headers = st.fixed_dictionaries({}, optional={"x-mlx-tags": header_text, "x-mlx-run-id": header_text})


def _check(r: httpx.Response) -> None:
    assert r.status_code < 500, r.text[:500]
    if r.status_code >= 400:
        assert "error" in r.json(), r.text[:500]  # a clear, shaped error


_CLIENT = httpx.Client(timeout=10)  # keep-alive: the examples cost the server's time, not new connections


def _post(server: ServerProcess, path: str, body, hdrs: dict) -> httpx.Response:
    with _CLIENT.stream("POST", server.url + path, json=body, headers=hdrs) as r:
        r.read()  # a stream is read to its end: no hang either
        return r


@settings(max_examples=EXAMPLES or 100, **SETTINGS)
@given(body=chat_bodies, hdrs=headers)
def _chat_property(server, body, hdrs):
    _check(_post(server, "/v1/chat/completions", body, hdrs))


@settings(max_examples=EXAMPLES or 40, **SETTINGS)
@given(body=st.fixed_dictionaries({"model": models, "input": json_values}, optional={"mlx:tags": tags}) | json_values)
def _embeddings_property(server, body):
    _check(_post(server, "/v1/embeddings", body, {}))


anthropic_bodies = st.fixed_dictionaries(
    {"model": models, "messages": messages, "max_tokens": small_or_any},
    optional={"system": content, "stream": st.booleans(), "metadata": json_values | tags, "tools": json_values,
              "tool_choice": json_values, "thinking": json_values, "mlx:tags": tags})


@settings(max_examples=EXAMPLES or 60, **SETTINGS)
@given(body=anthropic_bodies | json_values)
def _messages_property(server, body):
    r = _post(server, "/v1/messages", body, {})
    assert r.status_code < 500, r.text[:500]


def test_request_bodies_and_tags_never_5xx_nor_hang(server):
    with Bystander(server) as b:
        _chat_property(server)
        _embeddings_property(server)
        _messages_property(server)
    assert b.calls >= 3
    assert server.get("/healthz").json()["status"] == "ok"


# ---------------------------------------------------------------- the management API's schema

def _management_schema() -> dict:
    """The OpenAPI schema Litestar builds from the app's routes, limited to the management API.
    Its handlers read query parameters and bodies themselves, so those (from SPEC.md) are added."""
    from modelux_local.proxy.app import create_app
    from modelux_local.runtime import Runtime
    from modelux_local.settings import resolve_paths

    rt = Runtime(resolve_paths(tempfile.mkdtemp(prefix="mlx-schema-"), None))
    schema = create_app(rt, manage_lifecycle=False, openapi=True).openapi_schema.to_schema()
    paths = {p: ops for p, ops in schema["paths"].items() if p.startswith("/mlx/v1") or p == "/healthz"}
    q = lambda *names: [{"name": n, "in": "query", "required": False, "schema": {"type": "string"}} for n in names]  # noqa: E731
    paths["/mlx/v1/runs"]["get"]["parameters"] = q("since", "tag", "status", "sort", "limit", "include_replays")
    paths["/mlx/v1/analytics"]["get"]["parameters"] = q("group_by", "since", "tag", "status")
    paths["/mlx/v1/search"]["get"]["parameters"] = q("q", "run_id", "tag", "since", "limit")
    action = paths.pop("/mlx/v1/runs/{rest}")["post"]
    bodies = {"outcome": {"type": "object", "properties": {"success": {"type": "boolean"}, "score": {"type": "number"},
                                                           "note": {"type": "string"}}},
              "abort": {"type": "object", "properties": {"reason": {"type": "string"}}}}
    for name, body in bodies.items():
        op = {**action, "operationId": f"run_{name}",
              "parameters": [{"name": "run_id", "in": "path", "required": True, "schema": {"type": "string"}}],
              "requestBody": {"content": {"application/json": {"schema": body}}}}
        paths[f"/mlx/v1/runs/{{run_id}}/{name}"] = {"post": op}
    schema["paths"] = paths
    return schema


SCHEMA = schemathesis.openapi.from_dict(_management_schema())
COUNTS: dict[str, int] = {}


@SCHEMA.parametrize()
@settings(max_examples=EXAMPLES or 20, **SETTINGS)
def test_management_api_against_its_schema(case, server):
    r = case.call(base_url=server.url, timeout=10)
    COUNTS[case.operation.label] = COUNTS.get(case.operation.label, 0) + 1
    assert r.status_code < 500, (case.operation.label, r.status_code, r.text[:300])
    if r.status_code >= 400:
        assert "error" in r.json()
