"""Crash safety (issue 14, scope 7): SIGKILL under load never corrupts the database, the server
restarts on it, and what is lost is only what was answered but not yet committed — the writer
commits as soon as records arrive, so that is at most one writer batch (BATCH_MAX) in practice."""
from __future__ import annotations

import signal
import threading
import time

import apsw
import httpx

from modelux_local.storage.writer import BATCH_MAX

from .server import ServerProcess


def load(srv: ServerProcess, answered: list[str], stop: threading.Event, i: int) -> None:
    with httpx.Client(timeout=10) as h:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                r = h.post(srv.base_url + "/chat/completions", json={
                    "model": "@executor", "stream": n % 2 == 0,
                    "messages": [{"role": "user", "content": f"crash {i} {n}"}], "mlx:tags": {"run_id": f"crash-{i}"}})
            except httpx.HTTPError:
                return
            if r.status_code == 200 and (n % 2 == 1 or "[DONE]" in r.text):
                answered.append(r.headers["x-mlx-call-id"])


def test_sigkill_under_load_loses_at_most_a_batch_never_corrupts_and_restarts(tmp_path):
    srv = ServerProcess(tmp_path / "data").start()
    answered: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=load, args=(srv, answered, stop, i)) for i in range(8)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    srv.stop(signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join()
    assert len(answered) > 50
    db = apsw.Connection(str(srv.db_path))
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = {r[0] for r in db.execute("SELECT call_id FROM calls")}
    lost = set(answered) - stored
    print(f"\nSIGKILL: {len(lost)} of {len(answered)} answered calls lost")
    assert len(lost) <= BATCH_MAX, f"{len(lost)} of {len(answered)} answered calls lost"
    # the runs rollup matches the calls that made it: a batch is one transaction
    rollup = dict(db.execute("SELECT run_id, calls FROM runs"))
    counted = dict(db.execute("SELECT run_id, count(*) FROM calls WHERE run_id IS NOT NULL GROUP BY run_id"))
    assert rollup == counted
    crash0 = db.execute("SELECT count(*) FROM calls WHERE run_id = 'crash-0'").fetchone()[0]
    db.close()

    again = ServerProcess(tmp_path / "data").start()  # same files, WAL and SHM left by the kill
    r = httpx.post(again.base_url + "/chat/completions", timeout=10, json={
        "model": "@executor", "messages": [{"role": "user", "content": "after"}], "mlx:tags": {"run_id": "crash-0"}})
    assert r.status_code == 200
    assert again.get("/mlx/v1/runs/crash-0").json()["calls"] == crash0 + 1
    again.stop()
    db = apsw.Connection(str(again.db_path))
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
