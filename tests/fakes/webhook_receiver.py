"""A webhook receiver for tests: a real HTTP server in a thread that records every POST.

Switches: `fail_first=N` answers the first N requests 503 (a receiver that is up but failing);
not calling `start()` yet on a chosen `port` gives a receiver that is down (connection refused).
`secret` checks `X-Modelux-Signature` the way a user's receiver should.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int
    at: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    def __init__(self, port: int = 0, *, fail_first: int = 0, secret: str | None = None):
        self.port = port
        self.fail_first = fail_first
        self.secret = secret
        self.hits: list[Hit] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver._lock:
                    failing = receiver.fail_first > 0
                    if failing:
                        receiver.fail_first -= 1
                    status = 503 if failing else 200
                    receiver.hits.append(Hit(self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                                             status, time.time()))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- what arrived ----------------------------------------------------------------------

    def delivered(self) -> list[Hit]:
        """Requests answered 2xx."""
        with self._lock:
            return [h for h in self.hits if h.answered == 200]

    def events(self, name: str | None = None) -> list[dict]:
        return [h.json for h in self.delivered() if name is None or h.json["event"] == name]

    def signature_ok(self, hit: Hit) -> bool:
        assert self.secret is not None
        want = "sha256=" + hmac.new(self.secret.encode(), hit.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(hit.headers.get("x-modelux-signature", ""), want)

    def wait_for(self, pred: Callable[[WebhookReceiver], Any], timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = pred(self)
            if v:
                return v
            time.sleep(0.05)
        raise AssertionError(f"webhook receiver: condition not met in {timeout}s; got {[h.json for h in self.hits]}")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
