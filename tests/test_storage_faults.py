"""A real full disk and a real read-only disk under the real server: a small tmpfs mounted for
the test (needs root; skipped otherwise — tests/test_writer.py covers the same paths with
SQLite's max_page_count on any machine). Calls keep working through the openai SDK, /healthz
says why it is degraded, management reads answer 503, and freeing space recovers by itself."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import client_for
from .server import ROOT, ServerProcess


def readme_healthz() -> dict:
    from .test_readme_examples import example

    return json.loads(example("storage-healthz").text)


def test_readme_healthz_example_has_the_servers_fields(default_server):
    doc, real = readme_healthz(), default_server.get("/healthz").json()
    assert real["status"] == "ok" and "reason" not in real
    assert set(doc) - {"reason"} == set(real) and set(doc["storage"]) == set(real["storage"])
    assert doc["version"] == real["version"]


def _mount(d: Path, size: str = "4m") -> None:
    d.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(d)], check=True,
                   capture_output=True)


@pytest.fixture
def tmpfs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    d = tmp_path / "disk"
    try:
        _mount(d)
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        pytest.skip(f"cannot mount a tmpfs here: {e}")
    yield d
    subprocess.run(["umount", "-l", str(d)], check=False)


def fill(d: Path) -> Path:
    filler = d / "filler"
    with open(filler, "wb", buffering=0) as f:  # unbuffered: nothing left to flush (and fail) at close
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    return filler


def wait_health(srv: ServerProcess, status: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        h = srv.get("/healthz").json()
        if h["status"] == status:
            return h
        assert time.monotonic() < deadline, f"healthz stayed {h}"
        time.sleep(0.1)


def chat(client, i: int, stream: bool) -> str:
    kw = dict(model="@executor", messages=[{"role": "user", "content": f"step {i}"}],
              extra_body={"mlx:tags": {"run_id": "disk-run"}})
    if stream:
        with client.chat.completions.with_streaming_response.create(stream=True, **kw) as r:
            assert "[DONE]" in r.read().decode()
            return r.headers["x-mlx-call-id"]
    raw = client.chat.completions.with_raw_response.create(**kw)
    assert raw.parse().choices[0].message.content
    return raw.headers["x-mlx-call-id"]


def test_full_disk_degrades_keeps_serving_and_recovers(tmpfs, tmp_path):
    srv = ServerProcess(tmpfs / "data")
    srv.log_path = tmp_path / "server.log"  # the log must not need the full disk
    srv.start()
    client = client_for(srv, timeout=10)
    ids = [chat(client, i, stream=i % 2 == 1) for i in range(4)]
    assert srv.get("/mlx/v1/runs/disk-run").json()["calls"] == 4
    filler = fill(tmpfs)

    t0 = time.monotonic()
    ids += [chat(client, i, stream=i % 2 == 1) for i in range(4, 60)]
    for _ in range(2):  # the same request twice: retried batches must not count it again toward a loop
        client.chat.completions.create(model="@executor", messages=[{"role": "user", "content": "same"}],
                                       extra_body={"mlx:tags": {"run_id": "same-run"}})
    assert time.monotonic() - t0 < 30, "calls must not wait on the full disk"
    h = wait_health(srv, "degraded")
    assert "full" in h["reason"] or "I/O" in h["reason"], h
    assert set(h) == set(readme_healthz()) and set(h["storage"]) == set(readme_healthz()["storage"])
    assert h["storage"]["queued"] > 0 and h["storage"]["write_failures"] > 0
    t0 = time.monotonic()
    r = srv.get("/mlx/v1/runs/disk-run")
    assert r.status_code == 503 and r.json()["error"]["code"] == "storage_unavailable"
    for path, body in (("/mlx/v1/runs/disk-run/outcome", {"success": True}), ("/mlx/v1/runs/disk-run/abort", {})):
        r = srv.post(path, json=body)  # writes through the writer: refused, not queued behind a full disk
        assert r.status_code == 503 and "storage is failing" in r.json()["error"]["message"], r.text
    assert srv.get(f"/mlx/v1/calls/{ids[0]}").status_code == 503
    assert time.monotonic() - t0 < 10

    filler.unlink()  # space comes back: no call, no restart needed
    h = wait_health(srv, "ok")
    assert h["storage"]["records_dropped"] == 0 and h["storage"]["bodies_dropped"] == 0
    same = srv.get("/mlx/v1/runs/same-run").json()
    assert same["calls"] == 2 and same["anomalies"] == [], same  # loop_repeats = 5
    run = srv.get("/mlx/v1/runs/disk-run").json()
    assert run["calls"] == 60 and run["status"] == "running" and run["outcome"] is None
    assert {s["call_id"] for s in run["steps"]} == set(ids)
    t0 = time.monotonic()
    assert srv.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    assert time.monotonic() - t0 < 15


def test_sigterm_ends_the_process_while_the_disk_stays_full(tmpfs, tmp_path):
    srv = ServerProcess(tmpfs / "data")
    srv.log_path = tmp_path / "server.log"
    srv.start()
    client = client_for(srv, timeout=10)
    fill(tmpfs)
    for i in range(20):
        chat(client, i, stream=i % 2 == 0)
    wait_health(srv, "degraded")
    t0 = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    srv.proc.wait(20)  # the drain gives a failing disk a few seconds, then the process ends
    assert time.monotonic() - t0 < 15
    assert "records not stored" in srv.log()
    srv.stop()


def test_read_only_data_dir_refuses_to_start_with_a_clear_message(tmpfs, tmp_path):
    """Refused rather than degraded: at start the user is there to fix it, and a server that starts
    degraded would answer calls it cannot record (a disk that fails later degrades instead: above)."""
    data = tmpfs / "data"
    srv = ServerProcess(data)
    srv.log_path = tmp_path / "server.log"
    srv.start()
    chat(client_for(srv, timeout=10), 0, stream=False)
    srv.stop()
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)  # no file open any more
    try:
        r = subprocess.run([sys.executable, "-m", "modelux_local", "serve", "--headless", "--port", "0",
                            "--data-dir", str(data)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
    assert r.returncode == 1, r.stderr
    assert f"cannot write the database {data / 'modelux.db'}" in r.stderr and "--data-dir" in r.stderr
