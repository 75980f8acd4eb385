"""The pytest plugin (entry point `pytest11`): a real modelux-local server per test, playing a cassette.

    @pytest.mark.modelux(cassette="tests/cassettes/coder.cassette", config_dir="modelux-config")
    def test_coder_agent(modelux_gateway):
        run_my_agent(base_url=modelux_gateway.base_url)   # http://127.0.0.1:PORT/v1

Marker arguments (all optional): `cassette` (relative paths are from pytest's rootdir), `on_miss`
("error", the default: a request the cassette lacks gets a 400 `cassette_miss`; "live"; "record"),
`config_dir`, `env` (extra environment for the server). The server is a subprocess on a free
loopback port with its own data directory under the test's tmp_path, stopped after the test.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

MARKER = "modelux"
START_TIMEOUT_S = 30.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARKER}(cassette=None, config_dir=None, on_miss='error', env=None): "
                                       "run the modelux_gateway fixture's server with this cassette and config")


class Gateway:
    """A running modelux-local server: `base_url` for OpenAI clients, `url` for everything else."""

    def __init__(self, data_dir: Path, cassette: Path | None, config_dir: Path | None, on_miss: str,
                 env: dict[str, str] | None = None):
        self.data_dir, self.cassette, self.config_dir, self.on_miss = data_dir, cassette, config_dir, on_miss
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.base_url = self.url + "/v1"
        self.log_path = data_dir / "server.log"
        self._env = {**os.environ, **(env or {})}
        self._proc: subprocess.Popen | None = None

    def start(self) -> Gateway:
        import httpx

        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "modelux_local", "serve", "--headless", "--port", str(self.port),
                "--data-dir", str(self.data_dir)]
        if self.config_dir is not None:
            args += ["--config-dir", str(self.config_dir)]
        if self.cassette is not None:
            args += ["--cassette", str(self.cassette), "--on-miss", self.on_miss]
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(args, env=self._env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"modelux-local exited with {self._proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"modelux-local did not become healthy in {START_TIMEOUT_S:g}s:\n{self.log()}")

    def stop(self) -> None:
        p = self._proc
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def run(self, run_id: str) -> dict[str, Any]:
        """The run with its steps, as the management API reports it (after pending writes land)."""
        import httpx

        return httpx.get(f"{self.url}/mlx/v1/runs/{run_id}", timeout=30).json()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _path(root: Path, value: Any) -> Path | None:
    if value is None:
        return None
    p = Path(value)
    return p if p.is_absolute() else root / p


@pytest.fixture
def modelux_gateway(request: pytest.FixtureRequest, tmp_path: Path):
    marker = request.node.get_closest_marker(MARKER)
    kw = dict(marker.kwargs) if marker else {}
    unknown = set(kw) - {"cassette", "config_dir", "on_miss", "env"}
    if unknown:
        pytest.fail(f"@pytest.mark.{MARKER}: unknown argument(s) {', '.join(sorted(unknown))} "
                    "(known: cassette, config_dir, on_miss, env)", pytrace=False)
    root = Path(request.config.rootpath)
    cassette, on_miss = _path(root, kw.get("cassette")), kw.get("on_miss", "error")
    if cassette is not None and on_miss != "record" and not cassette.exists():
        pytest.fail(f"cassette {cassette} does not exist: save one with `modelux-local cassette save --run ID "
                    f"--out {cassette}`, or record it with on_miss='record'", pytrace=False)
    gw = Gateway(tmp_path / "modelux-data", cassette, _path(root, kw.get("config_dir")), on_miss, kw.get("env"))
    problem = None
    try:
        gw.start()
    except RuntimeError as e:
        problem = str(e)
    if problem:
        pytest.fail(problem, pytrace=False)
    yield gw
    gw.stop()
