"""A fake OpenTelemetry collector: a real OTLP/HTTP receiver in a thread on 127.0.0.1.

It decodes what it receives the way a collector does (`ExportTraceServiceRequest` from protobuf
for application/x-protobuf, the OTLP/JSON mapping for application/json) and keeps every span in
the OTLP/JSON shape (hex ids, `{"key", "value": {"stringValue": ...}}` attributes) for asserts.

Switches: `fail_first=N` answers the first N POSTs 503; `down()` closes the port (connection refused, as a stopped collector), `up()` listens
on the same port again; `fail_with = 503` answers every POST with that status while set.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


def _hex_ids(x):
    """protobuf's JSON gives bytes as base64; OTLP/JSON (and these asserts) use hex ids."""
    import base64

    if isinstance(x, dict):
        return {k: (base64.b64decode(v).hex() if k in ("traceId", "spanId", "parentSpanId") else _hex_ids(v))
                for k, v in x.items()}
    if isinstance(x, list):
        return [_hex_ids(v) for v in x]
    return x


class OtlpCollector:
    def __init__(self, port: int = 0, fail_first: int = 0):
        self.posts: list[dict] = []          # {"path", "headers", "content_type", "doc"}
        self.fail_with: int | None = None
        self.fail_first = fail_first          # the first N POSTs answered 503 (a collector that is up but failing)
        self.refused = 0                      # POSTs answered with fail_with
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.port = port
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> OtlpCollector:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if outer.fail_with or outer.fail_first:
                    outer.refused += 1
                    status = outer.fail_with or 503
                    outer.fail_first = max(0, outer.fail_first - 1)
                    self.send_response(status)
                    self.end_headers()
                    return
                ctype = self.headers.get("content-type", "")
                try:
                    if ctype == "application/x-protobuf":
                        msg = ExportTraceServiceRequest.FromString(body)
                        doc = _hex_ids(MessageToDict(msg, use_integers_for_enums=True))
                    elif ctype == "application/json":
                        doc = json.loads(body)
                    else:
                        raise ValueError(f"unsupported content-type {ctype!r}")
                except Exception as e:  # a collector answers 400 to what it cannot decode
                    self.send_response(400)
                    self.end_headers()
                    self.wfile.write(str(e).encode())
                    return
                with outer._lock:
                    outer.posts.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                        "content_type": ctype, "doc": doc})
                self.send_response(200)
                self.send_header("content-type", ctype or "application/json")
                self.end_headers()
                self.wfile.write(b"" if ctype == "application/x-protobuf" else b"{}")

            def log_message(self, *a):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def spans(self) -> list[dict]:
        with self._lock:
            docs = [p["doc"] for p in self.posts]
        return [s for d in docs for rs in d.get("resourceSpans", []) for ss in rs.get("scopeSpans", [])
                for s in ss.get("spans", [])]
