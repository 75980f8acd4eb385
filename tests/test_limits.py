"""[limits] against the real server: every bound on client input is a clear 4xx naming its key,
checked before the work it protects (no stalled loop, no memory blow-up), and the server keeps
serving other clients meanwhile."""
from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anthropic
import httpx
import pytest

from modelux_local.core.display import printable

from .conftest import client_for
from .server import ServerProcess, write_config


class _Recorder(BaseHTTPRequestHandler):
    """A stand-in provider that records every path it is asked for and answers 500."""

    paths: list[str] = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        self.paths.append(self.path)
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(500)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def recorder():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()


CONFIG = """
[routing]
default = "default"

[limits]
max_body_mb = 1
max_json_depth = 32
max_n = 100
mock_max_n = 4
mock_max_tokens = 10000
max_header_kb = 16
header_timeout_s = 1.5

[providers.mock]
kind = "mock"

[providers.mock.models.slow]
latency_ms = 3000
ttft_ms = 100

[providers.gem]
kind = "gemini"
base_url = "http://127.0.0.1:{port}"
api_key_env = "LIMITS_TEST_GEMINI_KEY"
"""

ROUTING = """
[aliases.fast]
targets = [{ provider = "mock", model = "mock-small" }]

[aliases.slow]
targets = [{ provider = "mock", model = "slow" }]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory, recorder):
    d = tmp_path_factory.mktemp("limits")
    cdir = write_config(d / "config", {"modelux.toml": CONFIG.replace("{port}", str(recorder.server_port)),
                                       "default.toml": ROUTING})
    s = ServerProcess(d / "data", cdir, env={"LIMITS_TEST_GEMINI_KEY": "AIza-secret"})
    s.start()
    yield s
    s.stop()


def chat(server, body: dict, **kw) -> httpx.Response:
    return server.post("/v1/chat/completions", json={"model": "@fast", "messages": [{"role": "user", "content": "hi"}],
                                                     **body}, **kw)


def assert_openai_error(r: httpx.Response, status: int, *words: str, param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    for w in words:
        assert w in err["message"], err
    if param is not None:
        assert err["param"] == param, err
    return err


# -- D2: n and max_tokens --------------------------------------------------------------------

def test_huge_n_is_refused_at_once_naming_the_limit(server):
    t0 = time.monotonic()
    assert_openai_error(chat(server, {"n": 1_000_000_000_000}), 400, "[limits] max_n", "100", param="n")
    assert_openai_error(chat(server, {"n": 200_000}), 400, "[limits] max_n", param="n")
    # the sanity cap holds for every provider, before anything is sent upstream
    _Recorder.paths.clear()
    assert_openai_error(chat(server, {"model": "gem/gemini-2.0-flash", "n": 101}), 400, "[limits] max_n", param="n")
    assert _Recorder.paths == []
    assert time.monotonic() - t0 < 5  # was: the loop blocked 2.3 s for 200k, for ever for 10^12
    assert_openai_error(chat(server, {"n": "abc"}), 400, "'n'", param="n")
    assert_openai_error(chat(server, {"n": True}), 400, "'n'", param="n")


def test_mock_has_its_own_smaller_caps(server):
    assert_openai_error(chat(server, {"n": 5}), 400, "mock_max_n", "4", param="n")
    r = chat(server, {"n": 4})
    assert r.status_code == 200 and len(r.json()["choices"]) == 4
    assert_openai_error(chat(server, {"max_tokens": 10**9}), 400, "mock_max_tokens", param="max_tokens")
    assert_openai_error(chat(server, {"max_completion_tokens": 0}), 400, "mock_max_tokens",
                        param="max_completion_tokens")
    assert chat(server, {"max_tokens": 5}).json()["choices"][0]["finish_reason"] == "length"
    r = chat(server, {"n": 5, "stream": True})  # refused before the stream starts
    assert_openai_error(r, 400, "mock_max_n", param="n")


# -- D3: body size while reading ---------------------------------------------------------------

def _raw_request(port: int, head: bytes, body_chunks, timeout: float = 10.0) -> tuple[bytes, int]:
    """Sends `head` then chunks until the server answers; (what it answered, body bytes sent)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(head)
    sent, answer = 0, b""
    s.setblocking(False)
    try:
        for chunk in body_chunks:
            try:
                answer += s.recv(65536)
                if answer:
                    break
            except BlockingIOError:
                pass
            try:
                s.sendall(chunk)
            except BlockingIOError:  # the server stopped reading: wait for its answer
                break
            except OSError:
                break
            sent += len(chunk)
        s.setblocking(True)
        s.settimeout(timeout)
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) == 0:
            more = s.recv(65536)
            if not more:
                break
            answer += more
    finally:
        s.close()
    return answer, sent


def test_declared_oversize_body_is_refused_before_it_is_read(server):
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: 1073741824\r\n\r\n")
    answer, _ = _raw_request(server.port, head, [b"{" + b" " * 1000])
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    err = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
    assert err["code"] == "request_too_large" and "max_body_mb" in err["message"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses", "/v1/messages", "/v1/embeddings"])
def test_chunked_oversize_body_is_cut_while_reading(server, path):
    """Every route a call comes through reads its body within the limit (/v1/responses once read
    it whole, whatever its size)."""
    head = (f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            "transfer-encoding: chunked\r\n\r\n").encode()
    piece = b" " * 65536
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    answer, sent = _raw_request(server.port, head, (chunk for _ in range(50 * 16)))  # 50 MB offered
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"max_body_mb" in answer
    assert sent < 10 * 1024 * 1024, sent  # the 1 MB limit stopped the read; not 50 MB taken in first
    assert chat(server, {}).status_code == 200


# -- D8: nesting and wrong types are 400s, not 500s -------------------------------------------

def test_deep_nesting_is_a_400_naming_the_limit(server):
    deep = b'{"model": "@fast", "messages": [{"role": "user", "content": "hi"}], "x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    r = server.post("/v1/chat/completions", content=deep, headers={"content-type": "application/json"})
    assert_openai_error(r, 400, "max_json_depth", "32")
    ok = {"x": json.loads("[" * 25 + "]" * 25)}
    assert chat(server, ok).status_code == 200
    too_deep = {"x": json.loads("[" * 40 + "]" * 40)}
    assert_openai_error(chat(server, too_deep), 400, "max_json_depth")
    # brackets inside strings do not count
    assert chat(server, {"messages": [{"role": "user", "content": "[" * 500}]}).status_code == 200


def test_wrongly_typed_fields_are_400s(server):
    r = server.post("/v1/embeddings", json={"model": "mock/mock-embed", "input": 5})
    assert_openai_error(r, 400, "input")
    a = anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0)
    for bad in ({"messages": [{"role": "user", "content": 5}]},
                {"system": 5, "messages": [{"role": "user", "content": "hi"}]},
                {"messages": [5]},
                {"messages": [{"role": "user", "content": [5]}]}):
        r = server.post("/v1/messages", json={"model": "@fast", "max_tokens": 10, **bad})
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["type"] == "error" and r.json()["error"]["type"] == "invalid_request_error"
    assert a.messages.create(model="@fast", max_tokens=10, messages=[{"role": "user", "content": "hi"}]).content


def test_mock_refuses_odd_shapes_with_400(server):
    for body in ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
                 {"stop": [5]}, {"response_format": {"type": "json_schema", "json_schema": "x"}}):
        r = chat(server, body)
        assert r.status_code == 400, (body, r.text)
    assert chat(server, {"tools": [5]}).status_code == 200  # lenient where it can be, never a 500


# -- D7: model names cannot steer the upstream URL --------------------------------------------

def test_model_name_cannot_traverse_the_gemini_url(server, recorder):
    _Recorder.paths.clear()
    r = chat(server, {"model": "gem/../../../steal?x=1"})
    assert_openai_error(r, 400, "model name", param="model")
    for evil in ("gem/a/b", "gem/x%2F..%2Fsteal", "gem/x#frag", "gem/m\r\nHost: evil"):
        assert chat(server, {"model": evil}).status_code == 400, evil
    assert _Recorder.paths == []
    chat(server, {"model": "gem/gemini-2.0-flash"})  # a real name reaches the (failing) upstream
    assert _Recorder.paths == ["/v1beta/models/gemini-2.0-flash:generateContent"]


# -- D10: run ids with a slash ------------------------------------------------------------------

@pytest.mark.parametrize("quote", [False, True])
def test_run_ids_with_slashes_are_reachable(server, quote):
    run_id = f"team/agent-{int(quote)}/abort"  # ends like an action on purpose
    client = client_for(server)
    client.chat.completions.create(model="@fast", messages=[{"role": "user", "content": "x"}],
                                   extra_body={"mlx:tags": {"run_id": run_id}})
    path = run_id.replace("/", "%2F") if quote else run_id
    r = server.get(f"/mlx/v1/runs/{path}")
    assert r.status_code == 200 and r.json()["run_id"] == run_id, r.text
    assert server.post(f"/mlx/v1/runs/{path}/outcome", json={"success": True}).status_code == 204
    assert server.post(f"/mlx/v1/runs/{path}/abort", json={"reason": "stop"}).status_code == 204
    assert server.get(f"/mlx/v1/runs/{path}").json()["status"] == "aborted"
    assert server.post(f"/mlx/v1/runs/{path}/nonsense", json={}).status_code == 404


# -- D11: control characters from clients are shown escaped ------------------------------------

def test_cli_escapes_control_characters_in_run_ids_and_tags(server):
    run_id = "evil\x1b]0;pwned\x07\x1b[2J"
    client_for(server).chat.completions.create(
        model="@fast", messages=[{"role": "user", "content": "x"}],
        extra_body={"mlx:tags": {"run_id": run_id, "agent": "a\x1b[31mred", "note": "\x9b2J"}})
    server.get("/healthz")
    for args in (("runs",), ("trace", run_id)):
        out = server.cli(*args).stdout
        assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out, out
        assert "\\x1b" in out
    assert "\\x1b]0;pwned\\x07" in server.cli("trace", run_id).stdout


def test_printable_and_tui_labels():
    assert printable("a\x1b[2Jb\nc\u202ed") == "a\\x1b[2Jb\\x0ac\\u202ed"
    assert printable("a\nb", keep_newlines=True) == "a\nb"
    from modelux_local.tui.screens.run import run_label
    from modelux_local.tui.widgets.detail import render_run

    run = {"run_id": "r\x1b[2J", "status": "ok", "cost_usd": None, "calls": 1, "duration_ms": 1, "tags": {"k": "\x07"},
           "started_at": "x", "errors": 0, "retries": 0, "input_tokens": 0, "output_tokens": 0, "p50_ms": 1,
           "p95_ms": 1, "abort_reason": "\x1b]0;t\x07"}
    assert "\x1b" not in run_label(run).plain
    from rich.console import Console
    console = Console(file=open("/dev/null", "w"), width=120)
    with console.capture() as cap:
        console.print(render_run(run))
    assert "\x07" not in cap.get() and "\\x1b" in cap.get()


# -- headers: size and read time ---------------------------------------------------------------

def test_slow_headers_are_cut_and_others_are_served(server):
    conns = []
    t0 = time.monotonic()
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
        conns.append(s)
    idle = socket.create_connection(("127.0.0.1", server.port), timeout=10)  # never sends a byte
    # while they trickle, a normal call is answered at once
    assert chat(server, {}).status_code == 200
    closed_at = []
    for i in range(40):  # one header line every 0.25 s: never finishing
        for s in conns[:]:
            try:
                s.sendall(f"x-slow-{i}: y\r\n".encode())
            except OSError:
                closed_at.append(time.monotonic() - t0)
                conns.remove(s)
        if not conns:
            break
        time.sleep(0.25)
    assert not conns, "slow-header connections were still open after 10 s"
    assert max(closed_at) < 8, closed_at  # header_timeout_s = 1.5 (+ slack for a busy machine)
    idle.settimeout(8)
    assert idle.recv(1) == b""  # the silent connection was closed too
    idle.close()


def test_huge_headers_get_431_and_the_server_keeps_serving(server):
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    s.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
    answer = b""
    try:
        for _ in range(64 * 16):  # up to 64 MB of header, 64 KiB at a time
            s.sendall(b"x-big: " + b"a" * 65536 + b"\r\n")
    except OSError:
        pass
    s.settimeout(5)
    try:
        while True:
            more = s.recv(65536)
            if not more:
                break
            answer += more
    except OSError:
        pass
    s.close()
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "headers_too_large"
    assert b"max_header_kb" in answer
    assert chat(server, {}).status_code == 200
    # ordinary requests with a few KiB of headers pass
    assert server.get("/healthz", headers={f"x-h{i}": "v" * 100 for i in range(50)}).status_code == 200


def test_readme_limits_example_is_the_defaults(tmp_path):
    from modelux_local.config.loader import load_dir
    from modelux_local.config.schema import LimitsSection

    from .test_readme_examples import example

    write_config(tmp_path, {"modelux.toml": '[routing]\ndefault = "d"\n[providers.mock]\nkind = "mock"\n'
                                            + example("limits-toml").text,
                            "d.toml": '[aliases.a]\ntargets = [{ provider = "mock", model = "m" }]\n'})
    assert load_dir(tmp_path).server.limits == LimitsSection()


def test_body_and_n_limits_follow_a_config_reload(make_server):
    server_toml = '[routing]\ndefault = "d"\n[providers.mock]\nkind = "mock"\n[limits]\nmax_body_mb = {mb}\nmock_max_n = {n}\n'
    srv = make_server({"modelux.toml": server_toml.format(mb=1, n=4),
                       "d.toml": '[aliases.fast]\ntargets = [{ provider = "mock", model = "m" }]\n'})
    big = {"messages": [{"role": "user", "content": "x" * 2_000_000}]}
    assert_openai_error(chat(srv, big), 413, "max_body_mb")
    assert chat(srv, {"n": 3}).status_code == 200
    (srv.config_dir / "modelux.toml").write_text(server_toml.format(mb=3, n=2))
    deadline = time.monotonic() + 15
    while chat(srv, {"n": 3}).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert_openai_error(chat(srv, {"n": 3}), 400, "mock_max_n", "2")
    assert chat(srv, big).status_code == 200  # the new body limit, without a restart


def test_header_deadline_does_not_cut_long_answers_or_kept_alive_connections(server):
    """header_timeout_s (1.5 s here) bounds only the wait for headers: a 3 s stream completes,
    and the same kept-alive connection then serves a second request after a pause."""
    with httpx.Client(base_url=server.url, timeout=20) as c:
        t0 = time.monotonic()
        with c.stream("POST", "/v1/chat/completions", json={
                "model": "@slow", "stream": True, "messages": [{"role": "user", "content": "take your time"}]}) as r:
            text = r.read().decode()
        assert time.monotonic() - t0 > 2.5 and text.rstrip().endswith("data: [DONE]")
        time.sleep(1)
        assert c.post("/v1/chat/completions", json={"model": "@fast", "messages": [
            {"role": "user", "content": "again"}]}).status_code == 200
