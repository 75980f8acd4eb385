"""Runs the real server as a subprocess on a free localhost port, with its own data dir."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    module = "modelux_local"  # what `python -m` runs (tests/fault_server.py: the same server with faults injected)

    def __init__(self, data_dir: Path, config_dir: Path | None = None, env: dict | None = None,
                 extra_args: list[str] | None = None):
        self.data_dir = Path(data_dir)
        self.config_dir = Path(config_dir) if config_dir else None
        self.port = free_port()
        self.env = {**os.environ, **(env or {})}
        self.env.pop("MODELUX_CONFIG_DIR", None)
        if "MODELUX_TOKEN" not in (env or {}):  # a token in the developer's shell must not lock tests out
            self.env.pop("MODELUX_TOKEN", None)
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen | None = None
        self.log_path = self.data_dir / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "modelux.db"

    def start(self, timeout: float = 20.0) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", self.module, "serve", "--headless", "--port", str(self.port),
                "--data-dir", str(self.data_dir), *self.extra_args]
        if self.config_dir:
            args += ["--config-dir", str(self.config_dir)]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not become healthy:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def get(self, path: str, **kw) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30, **kw)

    def post(self, path: str, **kw) -> httpx.Response:
        return httpx.post(self.url + path, timeout=30, **kw)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Runs `modelux-local ARGS --data-dir D [--config-dir C]` against this server's files."""
        cmd = [sys.executable, "-m", "modelux_local", *args, "--data-dir", str(self.data_dir)]
        if self.config_dir:
            cmd += ["--config-dir", str(self.config_dir)]
        r = subprocess.run(cmd, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=120)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}")
        return r

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def write_config(d: Path, files: dict[str, str]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / name).write_text(text)
    return d
