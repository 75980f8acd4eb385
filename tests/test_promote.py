"""Promotion through the gate, live in the running server without a restart; rollback from the database."""
from __future__ import annotations

import json

import pytest

from .server import ServerProcess
from .test_replay_support import make_config_dir, record_history


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    base = tmp_path_factory.mktemp("promote")
    s = ServerProcess(base / "data", make_config_dir(base / "config"), env={"USER": "alice"})
    s.start()
    s.history = record_history(s, runs=3)
    yield s
    s.stop()


def served_by(srv: ServerProcess, alias: str = "@executor") -> str:
    r = srv.post("/v1/chat/completions", json={"model": alias, "messages": [{"role": "user", "content": "next"}]})
    assert r.status_code == 200, r.text
    return r.headers["x-mlx-served-by"]


def test_gate_refuses_a_candidate_whose_success_drops(srv):
    rep = json.loads(srv.cli("simulate", "--config=@agent-broken", "--json").stdout)
    assert rep["delta"]["agent_success"] < -0.02
    r = srv.cli("config", "promote", "@agent-broken", "--replay", rep["replay_id"], check=False)
    assert r.returncode == 4
    assert "agent success drops" in r.stderr and "max_success_drop_pp" in r.stderr
    assert served_by(srv) == "mock/mock-pro"
    assert json.loads(srv.cli("config", "history", "--json").stdout)["history"] == []


def test_promote_is_live_without_restart_and_rollback_restores_the_stored_content(srv):
    pid = srv.proc.pid
    assert served_by(srv) == "mock/mock-pro"
    rep = json.loads(srv.cli("simulate", "--config=@agent-v3", "--json").stdout)
    out = srv.cli("config", "promote", "@agent-v3", "--replay", rep["replay_id"], "--reason", "cheaper executor").stdout
    assert "[rollback-plan]" in out and "modelux config rollback --to 1" in out and "live now" in out
    assert served_by(srv) == "mock/mock-lite"  # the very next call, same server process
    assert srv.proc.pid == pid and srv.proc.poll() is None

    # the file of the promoted-over config changes: the rollback must still restore what served before
    v2 = srv.config_dir / "agent-v2.toml"
    original = v2.read_text()
    v2.write_text(original.replace('model = "mock-pro" }]\n\n[aliases.summarizer]',
                                   'model = "mock-embed" }]\n\n[aliases.summarizer]'))
    try:
        out = srv.cli("config", "rollback").stdout
        assert "now serves version 1" in out
        assert served_by(srv) == "mock/mock-pro"
    finally:
        v2.write_text(original)

    hist = json.loads(srv.cli("config", "history", "--json").stdout)["history"]
    assert [h["action"] for h in hist] == ["promote", "rollback"]
    promote, rollback = hist
    assert promote["who"] == "alice" and promote["candidate"] == "@agent-v3" and promote["name"] == "agent-v2"
    assert (promote["from_number"], promote["to_number"]) == (1, 2)
    assert (rollback["from_number"], rollback["to_number"]) == (2, 1)
    assert promote["replay_id"] == rep["replay_id"] and promote["reason"] == "cheaper executor"
    assert promote["figures"]["delta"]["mean_cost_per_run"] == pytest.approx(rep["delta"]["mean_cost_per_run"])
    text = srv.cli("config", "history").stdout
    assert "promote @agent-v3" in text and "rollback @agent-v2" in text


def test_force_promotes_past_the_gate_and_is_audited_as_forced(srv):
    rep = json.loads(srv.cli("simulate", "--config=@agent-broken", "--json").stdout)
    srv.cli("config", "promote", "@agent-broken", "--replay", rep["replay_id"], "--force", "--reason", "drill")
    assert served_by(srv) == "mock/mock-lite"
    r = srv.post("/v1/chat/completions", json={"model": "@summarizer", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 404  # the broken candidate really serves: it has no summarizer
    last = json.loads(srv.cli("config", "history", "--json").stdout)["history"][-1]
    assert last["forced"] and last["candidate"] == "@agent-broken"
    srv.cli("config", "rollback", "--to", str(last["from_number"]))
    assert served_by(srv) == "mock/mock-pro"
    assert srv.get("/mlx/v1/config/serving").json()["configs"]["agent-v2"]["pinned"] is False


def test_interactive_prompt_after_simulate_in_a_terminal(srv):
    """[promote] [diff] [rollback-plan] offered after the report when stdin/stdout are a terminal."""
    import os
    import pty
    import select
    import sys
    import time

    from .server import ROOT

    pid, fd = pty.fork()
    if pid == 0:  # the child: simulate on a pseudo-terminal
        os.chdir(ROOT)
        os.execve(sys.executable, [sys.executable, "-m", "modelux_local", "simulate", "--config=@agent-v3",
                                   "--data-dir", str(srv.data_dir), "--config-dir", str(srv.config_dir)], srv.env)
    seen = b""

    def expect(token: bytes, timeout: float = 30) -> None:
        nonlocal seen
        end = time.monotonic() + timeout
        while token not in seen:
            assert time.monotonic() < end, seen.decode(errors="replace")[-2000:]
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    seen += os.read(fd, 65536)
                except OSError:
                    break
        assert token in seen, seen.decode(errors="replace")[-2000:]

    try:
        expect(b"enter = done >")
        os.write(fd, b"r\n")
        expect(b"restores @agent-v2 to")
        os.write(fd, b"d\n")
        expect(b"original run id")
        os.write(fd, b"\n")
        expect(b"vs  replay")
        os.write(fd, b"p\n")
        expect(b"reason (for the audit trail)")
        os.write(fd, b"from the prompt\n")
        expect(b"modelux config rollback --to")
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0
    assert served_by(srv) == "mock/mock-lite"
    last = json.loads(srv.cli("config", "history", "--json").stdout)["history"][-1]
    assert last["action"] == "promote" and last["reason"] == "from the prompt"
    srv.cli("config", "rollback")
    assert served_by(srv) == "mock/mock-pro"
