"""Every way a call can end after admission settles the guards and is recorded (issue 14 D4, D9).

A failure is injected at each stage of the pipeline (tests/fault_server.py); after it, the same
run's next call must be admitted (a leaked budget reservation would refuse it with 402) and the
failed call must be in the database. A client that hangs up before the upstream's headers must
cancel the upstream request and be recorded as client_closed.
"""
from __future__ import annotations

import time

import apsw
import httpx
import pytest

from modelux_local.routing.executor import _backoff_s

from .fakes.openai_upstream import FakeOpenAI
from .server import ServerProcess, write_config

MODELUX = """
[routing]
default = "default"

[providers.mock]
kind = "mock"

[[budgets]]
match = { agent = "faulty" }
max_tokens = 1000            # one call reserves more than that: a leaked reservation refuses the next
"""
ROUTING = '[aliases.planner]\ntargets = [{ provider = "mock", model = "mock-small" }]\n'


class FaultServer(ServerProcess):
    module = "tests.fault_server"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("faults")
    with FaultServer(d / "data", write_config(d / "config", {"modelux.toml": MODELUX, "default.toml": ROUTING})) as s:
        yield s


def _chat(server, run_id: str, content: str, **extra) -> httpx.Response:
    body = {"model": "@planner", "max_tokens": 2000, "messages": [{"role": "user", "content": content}],
            "mlx:tags": {"run_id": run_id, "agent": "faulty"}, **extra}
    return httpx.post(server.base_url + "/chat/completions", json=body, timeout=30)


def _calls(server, run_id: str) -> list[tuple]:
    server.get(f"/mlx/v1/runs/{run_id}")  # waits for the writer (read-your-writes)
    conn = apsw.Connection(str(server.db_path), flags=apsw.SQLITE_OPEN_READONLY)
    return conn.execute("SELECT status, http_status, error FROM calls WHERE run_id = ? ORDER BY started_at",
                        (run_id,)).fetchall()


@pytest.mark.parametrize("stage,stream,status", [
    ("before", False, 500), ("send", False, 500), ("send", True, 500), ("after", False, 200),
    ("stream", True, 200), ("on_chunk", True, 200),
])
def test_a_failure_at_any_stage_is_recorded_and_leaks_no_reservation(server, stage, stream, status):
    run_id = f"fault-{stage}-{stream}"
    r = _chat(server, run_id, f"FAULT:{stage}", stream=stream)
    assert r.status_code == status, r.text
    if status == 500:
        assert r.json()["error"]["code"] == "internal_error" and "RuntimeError" in r.json()["error"]["message"]
    if stream and status == 200:  # failed mid-stream: the stream ends with an error event, then [DONE]
        assert '"code":"internal_error"' in r.text and r.text.rstrip().endswith("data: [DONE]")
    after = _chat(server, run_id, "and now a normal call")
    assert after.status_code == 200, f"the run's next call was refused: {after.text}"
    calls = _calls(server, run_id)
    assert len(calls) == 2, calls
    first = calls[0]
    if stage == "after":  # a hook failing to settle is logged; the call itself went fine
        assert first[0] == "ok"
    else:
        assert first[0] == "error" and first[1] == 500 and "RuntimeError" in first[2], first
    assert calls[1][0] == "ok"


def test_a_non_integer_n_is_a_400_and_the_run_goes_on(server):
    r = _chat(server, "fault-n", "hello", n="abc")
    assert r.status_code == 400 and r.json()["error"]["param"] == "n", r.text
    assert _chat(server, "fault-n", "hello again").status_code == 200
    # refused while the body is checked, before a call exists (as malformed JSON is): nothing to record
    assert [c[:2] for c in _calls(server, "fault-n")] == [("ok", 200)]


def test_backoff_does_not_overflow_for_many_attempts():
    assert 0 <= _backoff_s(100, 5000) <= 0.1 * 2 ** 16 * 1.2
    assert _backoff_s(0, 100_000) == 0


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_gone_before_the_headers_cancels_the_upstream(tmp_path, stream):
    with FakeOpenAI() as up:
        up.enqueue(delay_s=5)
        cfg = write_config(tmp_path / "config", {
            "modelux.toml": f'[routing]\ndefault = "default"\n\n[providers.up]\nkind = "openai"\n'
                            f'base_url = "{up.base_url}"\napi_key_env = "UP_KEY"\n',
            "default.toml": '[aliases.slow]\ntargets = [{ provider = "up", model = "gpt-4o-mini" }]\n'})
        with ServerProcess(tmp_path / "data", cfg, env={"UP_KEY": "sk-up"}) as s:
            body = {"model": "@slow", "stream": stream, "messages": [{"role": "user", "content": "hi"}],
                    "mlx:tags": {"run_id": f"gone-{stream}"}}
            t0 = time.monotonic()
            with pytest.raises(httpx.TimeoutException):
                httpx.post(s.base_url + "/chat/completions", json=body, timeout=0.5)
            deadline = time.monotonic() + 4
            while up.requests[-1].client_gone_at is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert up.requests[-1].client_gone_at is not None, "the upstream request was not cancelled"
            assert up.requests[-1].client_gone_at - t0 < 4  # cancelled, not answered after its 5 s delay
            calls = _calls(s, f"gone-{stream}")
            assert [c[0] for c in calls] == ["client_closed"], calls


def _dispatcher_on_default_config():
    from modelux_local.calls import Addon, Dispatcher, Hooks, Sink, Snapshot
    from modelux_local.config.loader import load_dir
    from modelux_local.pricing import PriceBook
    from modelux_local.providers import build_provider
    from modelux_local.routing import Router

    cs = load_dir(None)
    providers = {n: build_provider(n, pc) for n, pc in cs.server.providers.items()}
    snap = Snapshot(cs, Router(cs), PriceBook(cs.server.prices, cs.server.providers), providers)
    records, settled = [], []

    class Settled(Addon):
        def after(self, ctx, rec):
            settled.append(rec.call_id)

    async def put(rec):
        records.append(rec)

    alias = "@" + next(iter(cs.routing[cs.default_name].aliases))
    return Dispatcher(Hooks([Settled()]), Sink(put, records.append)), snap, alias, records, settled


@pytest.mark.parametrize("started", [False, True])
def test_a_stream_that_is_never_relayed_is_recorded_and_settled_once(started):
    """An endpoint that drops the outcome (or its generator) without relaying it to the end leaks nothing."""
    import asyncio
    import gc

    from modelux_local.proxy.gateway import OpenAISSE

    dispatcher, snap, alias, records, settled = _dispatcher_on_default_config()

    async def go():
        body = {"model": alias, "stream": True, "messages": [{"role": "user", "content": "hello there"}]}
        out = await dispatcher.start_chat(snap, body, b"{}", {"run_id": "dropped"})
        gen = out.stream(OpenAISSE(False))
        if started:
            await gen.__anext__()
            await gen.aclose()
        del out, gen
        gc.collect()
        await asyncio.sleep(0)
        for p in snap.providers.values():
            await p.aclose()

    asyncio.run(go())
    assert [r.status for r in records] == ["client_closed"], records
    assert settled == [records[0].call_id]


def test_a_stream_relayed_to_its_end_is_recorded_once():
    import asyncio
    import gc

    from modelux_local.proxy.gateway import OpenAISSE

    dispatcher, snap, alias, records, settled = _dispatcher_on_default_config()

    async def go():
        body = {"model": alias, "stream": True, "messages": [{"role": "user", "content": "hello there"}]}
        out = await dispatcher.start_chat(snap, body, b"{}", {"run_id": "relayed"})
        chunks = [c async for c in out.stream(OpenAISSE(False))]
        assert chunks[-1] == b"data: [DONE]\n\n"
        del out
        gc.collect()
        for p in snap.providers.values():
            await p.aclose()

    asyncio.run(go())
    assert [r.status for r in records] == ["ok"] and settled == [records[0].call_id]
