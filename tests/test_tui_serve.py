"""`modelux-local serve` in a terminal: the proxy and the TUI in one process; `q` stops both,
with every recorded call written (the writer drained)."""
from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from modelux_local.storage.db import connect

from .conftest import client_for
from .server import ROOT, ServerProcess, free_port


class PtyServe:
    """`serve` with a pseudo-terminal as stdin/stdout/stderr, its screen output collected."""

    def __init__(self, data_dir, port: int, argv: list[str] | None = None):
        self.port = port
        master, slave = pty.openpty()
        os.set_blocking(master, True)
        env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "30"}
        env.pop("MODELUX_CONFIG_DIR", None)
        argv = argv or ["serve", "--port", str(port), "--data-dir", str(data_dir)]
        self.proc = subprocess.Popen([sys.executable, "-m", "modelux_local", *argv], cwd=ROOT, env=env,
                                     stdin=slave, stdout=slave, stderr=slave, close_fds=True, start_new_session=True)
        os.close(slave)
        self.master = master
        self.screen = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:  # a terminal nobody reads would block the app's writes
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.screen += chunk

    def text(self) -> bytes:
        """What was drawn, without escape sequences (a redraw may style each character on its own)."""
        return re.sub(rb"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]", b"", bytes(self.screen))

    def wait_for(self, text: bytes, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.text():
            assert self.proc.poll() is None, f"serve exited {self.proc.returncode}: {bytes(self.screen[-2000:])!r}"
            assert time.monotonic() < deadline, f"{text!r} never drawn: {bytes(self.screen[-2000:])!r}"
            time.sleep(0.05)

    def press(self, key: bytes) -> None:
        os.write(self.master, key)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


def test_serve_in_a_terminal_runs_the_tui_and_q_stops_the_proxy_gracefully(tmp_path):
    data = tmp_path / "data"
    s = PtyServe(data, free_port())
    try:
        s.wait_for(b"spend today")  # the TUI drew its runs screen
        probe = ServerProcess(data)  # only for its URL helpers and the SDK client
        probe.port = s.port
        assert httpx.get(probe.url + "/healthz", timeout=5).status_code == 200
        client = client_for(probe)
        for i in range(5):
            client.chat.completions.create(model="@executor", messages=[{"role": "user", "content": f"hi {i}"}],
                                           extra_body={"mlx:tags": {"run_id": "run_pty1", "agent": "pty"}})
        s.wait_for(b"run_pty1")  # the live table picked the run up
        for i in range(5):  # calls still in the writer's queue when q is pressed must be written
            client.chat.completions.create(model="@executor", messages=[{"role": "user", "content": f"late {i}"}],
                                           extra_body={"mlx:tags": {"run_id": "run_pty2"}})
        s.press(b"q")
        assert s.proc.wait(30) == 0
    finally:
        s.close()
    conn = connect(data / "modelux.db", readonly=True)
    calls = dict(conn.execute("SELECT run_id, calls FROM runs").fetchall())
    assert calls == {"run_pty1": 5, "run_pty2": 5}
    # log lines went to the file, one per call, and none across the screen
    log = (data / "serve.log").read_text()
    assert log.count("run_pty1 chat @executor -> mock/mock-small 200 ok") == 5, log
    assert log.count("run_pty2 chat @executor -> mock/mock-small 200 ok") == 5, log
    assert b"chat @executor -> mock/mock-small" not in s.text()


def _db_open_modes(pid: int, db: Path) -> list[int]:
    """The access mode (os.O_RDONLY / O_RDWR) of every descriptor process `pid` holds on file `db`."""
    modes = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != str(db):
                continue
            flags = next(line for line in open(f"/proc/{pid}/fdinfo/{fd}") if line.startswith("flags:"))
        except OSError:
            continue  # closed meanwhile
        modes.append(int(flags.split()[1], 8) & os.O_ACCMODE)
    return modes


def test_tui_command_opens_on_a_stopped_servers_database_read_only(tmp_path):
    """A database a real server wrote (SDK calls), the server stopped, then `tui` on it: the runs show,
    and every descriptor the TUI holds on modelux.db is read-only (checked in /proc)."""
    from .test_tui_support import write_configs

    cfg = write_configs(tmp_path / "cfg")
    data = tmp_path / "data"
    with ServerProcess(data, cfg) as srv:
        client = client_for(srv)
        for i in range(2):
            client.chat.completions.create(model="@executor", messages=[{"role": "user", "content": f"step {i}"}],
                                           extra_body={"mlx:tags": {"run_id": "run_stopped01", "agent": "offline"}})
    db = (data / "modelux.db").resolve()
    s = PtyServe(data, 0, ["tui", "--data-dir", str(data), "--config-dir", str(cfg)])
    try:
        s.wait_for(b"run_stopped01")
        modes = _db_open_modes(s.proc.pid, db)
        assert modes and all(m == os.O_RDONLY for m in modes), modes
        s.press(b"c")
        s.wait_for(b"@support-v1")
        s.press(b"q")
        assert s.proc.wait(20) == 0
    finally:
        s.close()


def test_a_closed_terminal_stops_serve_gracefully(tmp_path):
    """Closing the terminal (no SIGHUP reaches a new session) used to leave serve spinning on EOF."""
    data = tmp_path / "data"
    s = PtyServe(data, free_port())
    s.wait_for(b"spend today")
    probe = ServerProcess(data)
    probe.port = s.port
    client = client_for(probe)
    for i in range(3):
        client.chat.completions.create(model="@executor", messages=[{"role": "user", "content": f"bye {i}"}],
                                       extra_body={"mlx:tags": {"run_id": "closed-term"}})
    os.close(s.master)  # the terminal goes away
    s.proc.wait(15)
    conn = connect(data / "modelux.db")
    assert conn.execute("SELECT count(*) FROM calls WHERE run_id = 'closed-term'").fetchone()[0] == 3
