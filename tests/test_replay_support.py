"""Shared by the replay and promotion tests: a config dir and recorded history made through the real server."""
from __future__ import annotations

import math
import shutil
import uuid
from pathlib import Path

import apsw
import openai

from .conftest import client_for
from .server import ROOT, ServerProcess

EXAMPLE = ROOT / "configs" / "example"

# A candidate that lost its summarizer: every run's last step fails, so success collapses.
BROKEN = """description = "broken candidate: no summarizer"
[aliases.planner]
targets = [{ provider = "mock", model = "mock-pro" }]
[aliases.executor]
targets = [{ provider = "mock", model = "mock-lite" }]
[aliases.embedder]
targets = [{ provider = "mock", model = "mock-embed" }]
"""

# Everything on the slow model: a replay long enough to interrupt.
SLOW = """description = "slow candidate"
[aliases.planner]
targets = [{ provider = "mock", model = "mock-pro" }]
[aliases.executor]
targets = [{ provider = "mock", model = "mock-pro" }]
[aliases.summarizer]
targets = [{ provider = "mock", model = "mock-pro" }]
[aliases.embedder]
targets = [{ provider = "mock", model = "mock-embed" }]
"""


def make_config_dir(d: Path) -> Path:
    """configs/example as shipped, plus two test candidates."""
    shutil.copytree(EXAMPLE, d)
    (d / "agent-broken.toml").write_text(BROKEN)
    (d / "agent-slow.toml").write_text(SLOW)
    return d


def record_history(server: ServerProcess, runs: int = 6) -> list[str]:
    """Agent-shaped runs (plan, three tool steps one of them streamed, summary) through the openai SDK.

    Run 1 also has a failing call (an empty message list, refused upstream) and run 2 reports a
    failed outcome, so CURRENT error rate and success are not trivially perfect.
    """
    client = client_for(server)
    ids = []
    for i in range(runs):
        rid = f"run_{i}_{uuid.uuid4().hex[:6]}"
        ids.append(rid)
        tags = {"mlx:tags": {"run_id": rid, "agent": "research-v2"}}

        def step(model, text, stream=False):
            r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}],
                                               extra_body=tags, stream=stream)
            if stream:
                for _ in r:
                    pass

        step("@planner", f"plan task {i}: compare tide tables for harbour {i}")
        for k in range(3):
            step("@executor", f"tool step {k} of task {i}: fetch tide table {k}", stream=(k == 1))
        if i == 1:
            try:
                client.chat.completions.create(model="@executor", messages=[], extra_body=tags)
            except openai.BadRequestError:
                pass
        step("@summarizer", f"summarise task {i} for the harbour master")
        if i == 2:
            assert server.post(f"/mlx/v1/runs/{rid}/outcome", json={"success": False}).status_code == 204
    return ids


def db(server: ServerProcess) -> apsw.Connection:
    return apsw.Connection(str(server.db_path), flags=apsw.SQLITE_OPEN_READONLY)


def pct(values: list[float], q: float) -> float:
    """Linear-interpolated percentile, written here again so the test does not trust the code under test."""
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)
