"""scripts/verify-otlp's driver: a real Arize Phoenix as the OTLP backend of a real server.

Starts Phoenix (from its own venv, given as argv[1]) on free localhost ports, a modelux-local
server whose only export setting is OTEL_EXPORTER_OTLP_ENDPOINT, runs `modelux-local demo`
against it, stops Phoenix, records more calls while it is down, restarts the server and then
Phoenix on the same working dir, and reads every span back through Phoenix's REST API:
each recorded call must be there once, under its run's trace, with its GenAI attributes.
"""
from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, what: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"FAIL: {what} exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    sys.exit(f"FAIL: {what} did not answer {url} within {timeout:.0f}s:\n{log.read_text()[-3000:]}")


class Phoenix:
    def __init__(self, venv: Path, work: Path):
        self.venv, self.work = venv, work
        self.port, self.grpc = free_port(), free_port()
        self.proc: subprocess.Popen | None = None
        self.log = work / "phoenix.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, "PHOENIX_WORKING_DIR": str(self.work), "PHOENIX_HOST": "127.0.0.1",
               "PHOENIX_PORT": str(self.port), "PHOENIX_GRPC_PORT": str(self.grpc),
               "PHOENIX_TELEMETRY_ENABLED": "false"}
        self.proc = subprocess.Popen([str(self.venv / "bin" / "phoenix"), "serve"], env=env,
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        wait_http(self.url + "/healthz", 300, "Phoenix", self.proc, self.log)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def spans(self) -> list[dict]:
        out, cursor = [], None
        while True:
            params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
            r = httpx.get(f"{self.url}/v1/projects/default/spans", params=params, timeout=60)
            r.raise_for_status()
            doc = r.json()
            out += doc["data"]
            cursor = doc.get("next_cursor")
            if not cursor:
                return out


class Server:
    def __init__(self, data: Path, endpoint: str):
        self.data, self.endpoint = data, endpoint
        self.proc: subprocess.Popen | None = None
        self.log = data.parent / "server.log"

    def start(self) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MODELUX_"))}
        env.update({"OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint, "MODELUX_RUNTIME_DIR": str(self.data.parent / "rt")})
        self.proc = subprocess.Popen([sys.executable, "-m", "modelux_local", "serve", "--headless", "--quiet",
                                      "--port", str(self.port), "--data-dir", str(self.data)], cwd=ROOT, env=env,
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        wait_http(self.url + "/healthz", 60, "modelux-local serve", self.proc, self.log)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def otlp(self) -> dict:
        return httpx.get(self.url + "/healthz", timeout=10).json()["otlp"]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)


def demo(server: Server) -> str:
    r = subprocess.run([sys.executable, "-m", "modelux_local", "demo", "--base-url", server.url], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        sys.exit(f"FAIL: demo exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return next(line for line in r.stdout.splitlines() if " runs, " in line and " calls, " in line)


def wait_lag_zero(server: Server, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = server.otlp()
        if st["lag_calls"] == 0 and st["sent_calls"]:
            return st
        time.sleep(0.5)
    sys.exit(f"FAIL: the exporter did not catch up: {server.otlp()}")


def recorded(data: Path) -> tuple[list[str], list[str]]:
    from modelux_local.storage import connect

    conn = connect(data / "modelux.db", readonly=True)
    try:
        calls = [r[0] for r in conn.execute("SELECT call_id FROM calls WHERE replay_id IS NULL")]
        runs = [r[0] for r in conn.execute("SELECT DISTINCT run_id FROM calls WHERE run_id IS NOT NULL "
                                           "AND replay_id IS NULL")]
        return calls, runs
    finally:
        conn.close()


def span_id(text: str) -> str:
    return hashlib.sha256(text.encode()).digest()[:8].hex()  # as modelux_local/export/otlp.py derives them


def main() -> int:
    venv = Path(sys.argv[1])
    work = Path(tempfile.mkdtemp(prefix="verify-otlp-"))
    phoenix = Phoenix(venv, work / "phoenix")
    phoenix.work.mkdir()
    server = Server(work / "data", "")
    try:
        say(f"starting Phoenix ({venv.name}) on {phoenix.url} ...")
        phoenix.start()
        say(f"Phoenix is up; starting modelux-local serve with OTEL_EXPORTER_OTLP_ENDPOINT={phoenix.url}")
        server.endpoint = phoenix.url
        server.start()
        say("demo 1: " + demo(server))
        st = wait_lag_zero(server)
        say(f"exporter caught up: {st['sent_calls']} calls sent, lag {st['lag_calls']}, protocol {st['protocol']}")

        say("stopping Phoenix (a collector outage) and recording a second demo while it is down")
        phoenix.stop()
        say("demo 2: " + demo(server))
        time.sleep(2)
        st = server.otlp()
        say(f"/healthz during the outage: lag_calls={st['lag_calls']} last_error={st['last_error']!r}")
        if not st["last_error"] or not st["lag_calls"]:
            sys.exit("FAIL: the outage is not visible in /healthz")
        say("restarting modelux-local too (the cursor is in the database), then Phoenix")
        server.stop()
        server.start()
        phoenix.start()
        st = wait_lag_zero(server)
        say(f"exporter caught up after the outage: {st['sent_calls']} calls sent since the restart, lag 0")

        calls, runs = recorded(server.data)
        expected = {span_id("call:" + c) for c in calls} | {span_id("runspan:" + r) for r in runs}
        deadline = time.monotonic() + 90
        while True:  # Phoenix accepts a batch (200) before its bulk inserter has written it
            spans = phoenix.spans()
            got = {s["context"]["span_id"] for s in spans}
            if expected <= got or time.monotonic() > deadline:
                break
            time.sleep(1)
        missing_calls = [c for c in calls if span_id("call:" + c) not in got]
        missing_runs = [r for r in runs if span_id("runspan:" + r) not in got]
        ids = [s["context"]["span_id"] for s in spans]
        dupes = len(ids) - len(set(ids))
        chat = [s for s in spans if s["name"].startswith("chat ")]
        sample = chat[0] if chat else {}
        say(f"read back through Phoenix's REST API: {len(spans)} spans ({len(chat)} chat spans) in project 'default'")
        say(f"recorded in modelux.db: {len(calls)} calls in {len(runs)} runs; missing in Phoenix: "
            f"{len(missing_calls)} calls, {len(missing_runs)} run root spans; duplicate span ids: {dupes}")
        attrs = sample.get("attributes") or {}
        flat = {k: v for k, v in attrs.items()} if isinstance(attrs, dict) else {}
        keys = ("gen_ai.operation.name", "gen_ai.request.model", "gen_ai.response.model", "gen_ai.usage.input_tokens",
                "modelux.cost_usd", "modelux.run_id")
        say("one chat span: " + ", ".join(f"{k}={_dig(flat, k)!r}" for k in keys))
        if missing_calls or missing_runs or dupes:
            print("FAIL")
            return 1
        print("OK: every recorded call reached Phoenix once, including those made while it was down")
        return 0
    finally:
        server.stop()
        phoenix.stop()


def _dig(d: dict, dotted: str):
    """Phoenix returns attributes flat or nested by dots, depending on the version."""
    if dotted in d:
        return d[dotted]
    cur = d
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


if __name__ == "__main__":
    sys.exit(main())
