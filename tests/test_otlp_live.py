"""Live OTLP export while serving ([export.otlp], OTEL_EXPORTER_OTLP_*), against a fake collector
that decodes protobuf and can be switched down and up; the server is restarted in between."""
from __future__ import annotations

import time

from modelux_local.storage import connect

from .conftest import client_for
from .fakes.otlp_collector import OtlpCollector
from .server import ServerProcess, write_config

ROUTING = '[aliases.executor]\ntargets = [{ provider = "mock", model = "mock-small" }]\n'


def attrs(span: dict) -> dict:
    return {a["key"]: next(iter(a["value"].values())) for a in span["attributes"]}


def config(tmp_path, export: str):
    return write_config(tmp_path / "config", {"modelux.toml": f'[providers.mock]\nkind = "mock"\n\n{export}\n',
                                              "default.toml": ROUTING})


def ask(srv, run_id: str, n: int) -> None:
    c = client_for(srv)
    for i in range(n):
        c.chat.completions.create(model="@executor", messages=[{"role": "user", "content": f"secret question {i}"}],
                                  extra_body={"mlx:tags": {"run_id": run_id, "agent": "live"}})


def wait(fn, timeout: float = 30.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while not (got := fn()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return got


def call_ids_in_db(srv) -> set[str]:
    conn = connect(srv.db_path, readonly=True)
    try:
        return {r[0] for r in conn.execute("SELECT call_id FROM calls WHERE replay_id IS NULL")}
    finally:
        conn.close()


def exported_call_ids(col: OtlpCollector) -> set[str]:
    return {attrs(s)["modelux.call_id"] for s in col.spans() if "modelux.call_id" in attrs(s)}


def all_exported(srv, col: OtlpCollector, at_least: int) -> bool:
    """At least that many calls are recorded and every recorded call reached the collector."""
    ids = call_ids_in_db(srv)
    return len(ids) >= at_least and ids <= exported_call_ids(col)


def test_an_outage_and_a_restart_lose_nothing_and_resend_the_same_span_ids(tmp_path):
    col = OtlpCollector()
    cdir = config(tmp_path, f'[export.otlp]\nendpoint = "{col.url}"\nheaders = {{ "x-team" = "ml" }}\n')
    srv = ServerProcess(tmp_path / "data", cdir).start()
    try:
        ask(srv, "live-1", 3)
        wait(lambda: all_exported(srv, col, 3), what="the first calls")
        first = col.posts[0]
        assert first["path"] == "/v1/traces" and first["content_type"] == "application/x-protobuf"
        assert first["headers"]["x-team"] == "ml"
        spans = col.spans()
        chat = [s for s in spans if attrs(s).get("gen_ai.operation.name") == "chat"]
        assert len(chat) == 3 and all(attrs(s)["gen_ai.request.model"] == "@executor" for s in chat)
        assert not any("gen_ai.input.messages" in attrs(s) for s in spans)  # content is off by default
        root = next(s for s in spans if attrs(s).get("gen_ai.operation.name") == "invoke_agent")
        assert all(s["parentSpanId"] == root["spanId"] and s["traceId"] == root["traceId"] for s in chat)
        health = wait(lambda: (h := srv.get("/healthz").json()["otlp"])["lag_calls"] == 0 and h, what="no lag")
        assert health["endpoint"] == col.url + "/v1/traces" and health["sent_calls"] >= 3
        ids_before = {s["spanId"] for s in chat}

        col.down()  # the collector goes away: calls keep being served and recorded
        ask(srv, "live-2", 2)
        health = wait(lambda: (h := srv.get("/healthz").json()["otlp"])["last_error"] and h["lag_calls"] and h,
                      what="the error in /healthz")
        assert "Connect" in health["last_error"] and health["lag_calls"] >= 2
        srv.stop()  # ... and the server restarts while the collector is still down
        srv = ServerProcess(tmp_path / "data", cdir).start()
        ask(srv, "live-3", 1)
        col.up()
        wait(lambda: all_exported(srv, col, 6), what="every call after the outage")
        chat_spans = [s for s in col.spans() if attrs(s).get("gen_ai.operation.name") == "chat"]
        by_call = {}
        for s in chat_spans:  # a resent call carries the same span id
            by_call.setdefault(attrs(s)["modelux.call_id"], set()).add(s["spanId"])
        assert all(len(ids) == 1 for ids in by_call.values())
        assert ids_before <= {s["spanId"] for s in chat_spans}
        assert wait(lambda: srv.get("/healthz").json()["otlp"]["lag_calls"] == 0, what="lag back to 0")
    finally:
        srv.stop()
        col.down()


def test_otel_environment_variables_json_protocol_and_content(tmp_path):
    col = OtlpCollector()
    cdir = config(tmp_path, "[export.otlp]\ncontent = true\n")
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": col.url, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
           "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Basic%20cGs6c2s=,x-scope=a"}
    srv = ServerProcess(tmp_path / "data", cdir, env=env).start()
    try:
        ask(srv, "live-env", 1)
        wait(lambda: all_exported(srv, col, 1), what="the call")
        post = col.posts[0]
        assert post["content_type"] == "application/json"
        assert post["headers"]["authorization"] == "Basic cGs6c2s=" and post["headers"]["x-scope"] == "a"
        chat = next(s for s in col.spans() if attrs(s).get("gen_ai.operation.name") == "chat")
        assert len(chat["traceId"]) == 32 and len(chat["spanId"]) == 16  # OTLP/JSON: hex ids
        assert "secret question 0" in attrs(chat)["gen_ai.input.messages"]
        assert attrs(chat)["gen_ai.output.messages"].startswith('[{"role":"assistant"')
    finally:
        srv.stop()
        col.down()


def test_no_endpoint_no_exporter_and_a_grpc_protocol_is_refused_clearly(tmp_path, default_server):
    assert "otlp" not in default_server.get("/healthz").json()
    cdir = config(tmp_path, "")
    srv = ServerProcess(tmp_path / "data", cdir, env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
                                                      "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}).start()
    try:
        assert "otlp" not in srv.get("/healthz").json()
        assert "OTEL_EXPORTER_OTLP_PROTOCOL = 'grpc'" in srv.log() and "over HTTP only" in srv.log()
    finally:
        srv.stop()


def test_the_tui_header_shows_the_exporters_lag_and_error(tmp_path):
    from types import SimpleNamespace

    from modelux_local.config.loader import load_dir
    from modelux_local.export.live import LiveExporter
    from modelux_local.export.otlp_http import OtlpTarget
    from modelux_local.storage import Writer, open_db
    from modelux_local.tui.data import DataSource

    open_db(tmp_path / "modelux.db").close()
    exporter = LiveExporter(SimpleNamespace(), OtlpTarget("http://127.0.0.1:9/v1/traces"))
    rt = SimpleNamespace(otlp_exporter=exporter, configs=load_dir(None),  # what serve's TUI reads of its runtime
                         writer=Writer(tmp_path / "modelux.db"))
    ds = DataSource(tmp_path / "modelux.db", None, runtime=rt)
    assert ds.pulse().otlp == "ok"
    exporter.lag_calls = 7
    exporter._failed("ConnectError: All connection attempts failed")
    assert ds.pulse().otlp == "lag 7 calls · ConnectError: All connection attempts failed"
    assert DataSource(tmp_path / "modelux.db", None).pulse().otlp is None


def test_the_readme_config_loads_and_exports(tmp_path):
    from .test_readme_examples import example

    col = OtlpCollector()
    text = example("otlp-live").text.replace("http://127.0.0.1:6006", col.url)
    srv = ServerProcess(tmp_path / "data", config(tmp_path, text)).start()
    try:
        ask(srv, "readme-otlp", 1)
        wait(lambda: all_exported(srv, col, 1), what="the call")
        assert col.posts[0]["headers"]["x-team"] == "ml"
    finally:
        srv.stop()
        col.down()
