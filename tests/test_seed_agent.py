"""The product page's agent.py runs verbatim against the server, and every call lands in the run."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .server import ROOT


def test_seed_agent_runs_verbatim_and_is_fully_recorded(default_server):
    env = {**os.environ, "MODELUX_BASE_URL": default_server.base_url}
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "agent.py")], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout.splitlines()
    run_id = out[0]
    assert run_id.startswith("run_") and out[1]

    run = default_server.get(f"/mlx/v1/runs/{run_id}").json()
    assert run["calls"] == 5 and run["errors"] == 0
    assert run["tags"] == {"run_id": run_id, "agent": "research-v2"}
    steps = run["steps"]
    assert [s["seq"] for s in steps] == [1, 2, 3, 4, 5]
    assert [s["alias"] for s in steps] == ["@planner", "@executor", "@executor", "@executor", "@summarizer"]
    assert [s["model"] for s in steps] == ["mock-large", "mock-small", "mock-small", "mock-small", "mock-small"]
    assert all(s["priced"] and s["cost_usd"] > 0 for s in steps)
    assert run["cost_usd"] == pytest.approx(sum(s["cost_usd"] for s in steps), abs=1e-9)
    assert run["input_tokens"] == sum(s["input_tokens"] for s in steps)
    assert run["output_tokens"] == sum(s["output_tokens"] for s in steps)
    assert run["p50_ms"] is not None and run["p95_ms"] >= run["p50_ms"]
