"""Storage: nothing answered is lost on SIGTERM; provider keys never reach the database."""
from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import apsw
import httpx

from .fakes.openai_upstream import FakeOpenAI
from .server import ServerProcess, write_config

SECRET = "sk-live-THIS-KEY-MUST-NEVER-BE-STORED-31337"


def test_sigterm_during_a_burst_keeps_every_answered_call(tmp_path):
    srv = ServerProcess(tmp_path / "data").start()
    answered: list[str] = []
    stop = threading.Event()

    def worker(i: int):
        with httpx.Client(timeout=10) as h:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    r = h.post(srv.base_url + "/chat/completions", json={
                        "model": "@executor", "stream": n % 2 == 0,
                        "messages": [{"role": "user", "content": f"burst {i} {n}"}],
                        "mlx:tags": {"run_id": f"burst-{i}"}})
                except httpx.HTTPError:
                    return
                if r.status_code == 200 and (n % 2 == 1 or "[DONE]" in r.text):
                    answered.append(r.headers["x-mlx-call-id"])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    assert srv.stop(signal.SIGTERM) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after a graceful exit
    stop.set()
    for t in threads:
        t.join()
    assert len(answered) > 20
    db = apsw.Connection(str(srv.db_path))
    stored = {r[0] for r in db.execute("SELECT call_id FROM calls")}
    missing = set(answered) - stored
    assert not missing, f"{len(missing)} answered calls missing after SIGTERM"


def test_provider_key_never_reaches_the_database_or_log(tmp_path):
    with FakeOpenAI(api_key=SECRET) as up:
        cfg = write_config(tmp_path / "cfg", {
            "modelux.toml": f'[providers.up]\nkind = "openai"\nbase_url = "{up.base_url}"\napi_key_env = "UP_KEY"\n',
            "main.toml": '[aliases.x]\ntargets = [{ provider = "up", model = "gpt-4o-mini" }]\n'})
        srv = ServerProcess(tmp_path / "data", cfg, env={"UP_KEY": SECRET}).start()
        for stream in (False, True):
            r = httpx.post(srv.base_url + "/chat/completions", headers={"authorization": f"Bearer {SECRET}"}, json={
                "model": "@x", "stream": stream, "messages": [{"role": "user", "content": "hi"}],
                "mlx:tags": {"run_id": "r-key"}})
            assert r.status_code == 200
        up.enqueue(status=401)
        r = httpx.post(srv.base_url + "/chat/completions", json={"model": "@x", "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 401
        assert up.requests[0].headers["authorization"] == f"Bearer {SECRET}"
        srv.stop()
    blobs = b"".join(p.read_bytes() for p in Path(srv.data_dir).iterdir() if p.is_file())
    assert SECRET.encode() not in blobs
    assert srv.db_path.exists()
    assert apsw.Connection(str(srv.db_path)).execute("SELECT count(*) FROM calls").fetchone()[0] == 3
