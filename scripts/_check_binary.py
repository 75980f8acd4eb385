"""scripts/build --check: the built file, moved where there is no checkout and no Python on the
PATH, answers --version and serves a chat completion on the embedded default (and records it)."""
from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def main() -> int:
    built = Path(sys.argv[1])
    tmp = Path(tempfile.mkdtemp(prefix="modelux-binary-"))
    exe = tmp / "modelux-local"
    shutil.copy2(built, exe)
    empty_bin = tmp / "bin"  # PATH holds nothing: no python, no checkout, no venv
    empty_bin.mkdir()
    env = {"PATH": str(empty_bin), "HOME": str(tmp / "home"), "MODELUX_HOME": str(tmp / "data"),
           "MODELUX_RUNTIME_DIR": str(tmp / "run"), "LANG": "C.UTF-8"}
    assert shutil.which("python3", path=env["PATH"]) is None and shutil.which("python", path=env["PATH"]) is None

    t0 = time.monotonic()
    r = subprocess.run([str(exe), "--version"], cwd=tmp, env=env, capture_output=True, text=True, timeout=120)
    version_s = time.monotonic() - t0
    if r.returncode != 0 or not r.stdout.startswith("modelux-local "):
        print(f"FAIL: --version exited {r.returncode}: {r.stdout}{r.stderr}")
        return 1
    print(f"ok  {r.stdout.strip()}  (cold start {version_s:.2f}s)")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp / "serve.log", "wb")
    t0 = time.monotonic()
    proc = subprocess.Popen([str(exe), "serve", "--headless", "--port", str(port)], cwd=tmp, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        while True:
            if proc.poll() is not None:
                print(f"FAIL: serve exited {proc.returncode}:\n{(tmp / 'serve.log').read_text()[-3000:]}")
                return 1
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - t0 > 120:
                print("FAIL: serve did not answer /healthz in 120 s")
                return 1
            time.sleep(0.05)
        serve_s = time.monotonic() - t0
        resp = httpx.post(url + "/v1/chat/completions", timeout=30, json={
            "model": "@planner", "messages": [{"role": "user", "content": "hello from the binary"}],
            "mlx:tags": {"run_id": "binary-check"}})
        body = resp.json()
        if resp.status_code != 200 or not body["choices"][0]["message"]["content"]:
            print(f"FAIL: chat completion answered {resp.status_code}: {resp.text[:500]}")
            return 1
        print(f"ok  serve answered /healthz after {serve_s:.2f}s; @planner -> {resp.headers.get('x-mlx-served-by')}: "
              f"{body['choices'][0]['message']['content'][:50]!r}")
        runs = subprocess.run([str(exe), "runs"], cwd=tmp, env=env, capture_output=True, text=True, timeout=60)
        if "binary-check" not in runs.stdout:
            print(f"FAIL: `runs` does not list the call:\n{runs.stdout}{runs.stderr}")
            return 1
        print("ok  `modelux-local runs` (the same file) lists the run")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    size = exe.stat().st_size / 1e6
    print(f"OK: {built} ({size:.0f} MB) runs with no Python on PATH from {tmp}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
