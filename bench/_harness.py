"""Processes under test: the fake upstream and the proxy as subprocesses, and their CPU time."""
from __future__ import annotations

import argparse
import json
import os
import select
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Context:
    args: argparse.Namespace
    workdir: Path
    json_mode: bool

    @property
    def quick(self) -> bool:
        return self.args.quick

    def log(self, msg: str) -> None:
        # progress goes to stderr so that `--json` leaves stdout to the one JSON document
        print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # the name in parentheses may contain spaces
    return (int(fields[11]) + int(fields[12])) / _TICK


class Proc:
    """A child process whose output goes to a log file (a pipe nobody drains would stall it)."""

    def __init__(self, name: str, cmd: list[str], workdir: Path, env: dict[str, str] | None = None,
                 stdout_pipe: bool = False):
        self.name, self.cmd = name, cmd
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})},
                                      stdout=subprocess.PIPE if stdout_pipe else self._log, stderr=self._log)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def tail(self, lines: int = 30) -> str:
        if not self._log.closed:
            self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self.popen.stdout:
            self.popen.stdout.close()
        self._log.close()


def start_upstream(ctx: Context, latency_ms: float = 0, chunk_delay_ms: float = 0,
                   prefix: list[str] | None = None) -> tuple[Proc, str]:
    """The fake OpenAI upstream, standalone; returns it and its base URL (…/v1). `prefix`: e.g. taskset."""
    proc = Proc("upstream", [*(prefix or []), sys.executable, "-m", "tests.fakes.openai_upstream", "--port", "0",
                             "--latency-ms", str(latency_ms), "--chunk-delay-ms", str(chunk_delay_ms)],
                ctx.workdir, stdout_pipe=True)
    ready, _, _ = select.select([proc.popen.stdout], [], [], 20)
    line = proc.popen.stdout.readline().decode() if ready else ""
    if "listening on" not in line:
        proc.stop()
        raise RuntimeError(f"fake upstream did not start: {line!r}\n{proc.tail()}")
    return proc, line.rsplit(" ", 1)[-1].strip()


def write_proxy_config(config_dir: Path, upstream_base_url: str, routing: dict[str, str]) -> None:
    """A config dir with one openai-kind provider `up` and routing configs {name: toml text}."""
    config_dir.mkdir(parents=True, exist_ok=True)
    default = next(iter(routing))
    (config_dir / "modelux.toml").write_text(
        f'[routing]\ndefault = "{default}"\n\n'
        f'[providers.up]\nkind = "openai"\nbase_url = "{upstream_base_url}"\napi_key_env = "BENCH_UPSTREAM_KEY"\n')
    for name, text in routing.items():
        (config_dir / f"{name}.toml").write_text(text)


def modelux_cmd(ctx: Context) -> list[str]:
    """The proxy command: --proxy-cmd (e.g. another checkout's install, to compare), else this venv's."""
    if getattr(ctx.args, "proxy_cmd", None):
        return shlex.split(ctx.args.proxy_cmd)
    here = Path(sys.executable).parent / "modelux-local"
    return [str(here) if here.exists() else (shutil.which("modelux-local") or "modelux-local")]


def start_proxy(ctx: Context, config_dir: Path, data_dir: Path, port: int | None = None,
                ready_timeout_s: float = 60, prefix: list[str] | None = None) -> tuple[Proc, str]:
    """`modelux-local serve --headless`, waited on until /healthz answers 200; returns it and its origin."""
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    proc = Proc("proxy", [*(prefix or []), *modelux_cmd(ctx), "serve", "--headless", "--port", str(port),
                          "--config-dir", str(config_dir), "--data-dir", str(data_dir),
                          *shlex.split(getattr(ctx.args, "proxy_args", "") or "")],
                ctx.workdir, env={"BENCH_UPSTREAM_KEY": "sk-bench"})
    origin = f"http://127.0.0.1:{port}"
    wait_ready(proc, origin + "/healthz", ready_timeout_s)
    return proc, origin


def wait_ready(proc: Proc, url: str, timeout_s: float) -> float:
    """Polls `url` until it answers 200; returns the seconds it took. Stops `proc` and raises otherwise."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if proc.popen.poll() is not None:
            proc.stop()
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode} before {url} answered:\n{proc.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    proc.stop()
    raise RuntimeError(f"{proc.name}: {url} not 200 after {timeout_s:.0f}s:\n{proc.tail()}")


def get_json(url: str, timeout: float = 10) -> object:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())
