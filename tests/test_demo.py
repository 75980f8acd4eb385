"""`modelux-local demo`: the product page's story against the real server on the embedded default."""
from __future__ import annotations

import os
import re
import subprocess
import sys

from .server import ROOT


def demo(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelux_local", "demo", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def test_demo_against_a_running_server_shows_a_loop_a_retry_storm_and_a_budget_abort(default_server):
    r = demo("--base-url", default_server.url)
    assert r.returncode == 0, r.stderr + r.stdout
    out = r.stdout
    assert re.search(r"\[20/20\]", out), out  # progress, one line per run
    suffix = re.search(r"demo-loop-(\w+)", out).group(1)
    runs = {x["run_id"]: x for x in default_server.get("/mlx/v1/runs", params={"tag": "source:demo", "limit": 100})
            .json()["runs"]}
    mine = {k: v for k, v in runs.items() if k.endswith(suffix)}
    assert len(mine) == 20 and {v["tags"]["agent"] for v in mine.values()} == {"research-v2", "coder-v1", "support-bot"}
    loop, flaky, capped = mine[f"demo-loop-{suffix}"], mine[f"demo-flaky-{suffix}"], mine[f"demo-budget-{suffix}"]
    assert loop["calls"] == 14 and "loop" in loop["anomalies"]
    assert "retry_storm" in flaky["anomalies"] and flaky["errors"] == 3
    assert capped["status"] == "aborted" and "while streaming" in capped["abort_reason"]
    assert all(not v["anomalies"] and v["status"] != "aborted" for k, v in mine.items()
               if k not in (loop["run_id"], flaky["run_id"], capped["run_id"]))
    steps = default_server.get(f"/mlx/v1/runs/{capped['run_id']}").json()["steps"]
    assert steps[1]["stream"] and steps[1]["status"] == "aborted"  # cut mid-stream, not refused up front
    for line in ("modelux-local runs --tag source=demo", f"modelux-local trace demo-loop-{suffix}",
                 "modelux-local tui", "modelux-local simulate --replay=1h --tag source=demo --config=@default"):
        assert line in out
    assert "loop" in out and "retry_storm" in out and "aborted: run" in out  # the flagged list


def test_demo_starts_its_own_server_when_none_runs(tmp_path):
    r = demo("--data-dir", str(tmp_path / "data"), env={"MODELUX_RUNTIME_DIR": str(tmp_path / "rt")})
    assert r.returncode == 0, r.stderr + r.stdout
    assert "started in-process" in r.stdout and "20 runs" in r.stdout
    listed = subprocess.run([sys.executable, "-m", "modelux_local", "runs", "--tag", "source=demo", "--limit", "100",
                             "--data-dir", str(tmp_path / "data")], cwd=ROOT, capture_output=True, text=True,
                            timeout=60).stdout
    assert len([line for line in listed.splitlines() if line.split()[1:2] and line.split()[1].startswith("demo-")]) == 20


def test_readme_quickstart_demo_finds_the_running_server(tmp_path):
    from .server import ServerProcess
    from .test_readme_examples import command_lines, example, sh

    rt = tmp_path / "rt"
    srv = ServerProcess(tmp_path / "data", env={"MODELUX_RUNTIME_DIR": str(rt)}).start()
    try:
        (line,) = command_lines(example("quickstart-demo"))
        out = sh(line, home=tmp_path / "elsewhere", env={"MODELUX_RUNTIME_DIR": str(rt)}).stdout
        assert f"against http://127.0.0.1:{srv.port} (the server running here" in out
        assert srv.get("/mlx/v1/runs", params={"tag": "source:demo", "limit": 100}).json()["runs"]
    finally:
        srv.stop()
