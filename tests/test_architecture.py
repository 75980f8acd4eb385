"""Dependencies run one way: the core rooms import neither the web framework nor the TUI."""
from __future__ import annotations

import subprocess
import sys

from .server import ROOT

CORE_ROOMS = ["modelux_local.core", "modelux_local.calls", "modelux_local.calls.embedder", "modelux_local.config.loader", "modelux_local.pricing", "modelux_local.routing",
              "modelux_local.providers", "modelux_local.storage", "modelux_local.runtime", "modelux_local.analytics",
              "modelux_local.replay.engine", "modelux_local.replay.simulate", "modelux_local.replay.promotion",
              "modelux_local.playback", "modelux_local.playback.save"]


def test_core_rooms_do_not_import_litestar_or_textual():
    code = ("import sys\n" + "".join(f"import {m}\n" for m in CORE_ROOMS) +
            "bad = [m for m in ('litestar', 'textual', 'modelux_local.proxy', 'modelux_local.tui') if m in sys.modules]\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_routing_is_pure():
    code = ("import sys\nimport modelux_local.routing\n"
            "bad = [m for m in ('aiohttp', 'apsw', 'litestar', 'modelux_local.storage', 'modelux_local.providers') "
            "if m in sys.modules]\nprint(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_one_module_outside_routing_runs_the_attempt_loop():
    """Every call (proxy, replay, evaluators, search indexer) goes through calls/dispatch.py."""
    import re

    pkg = ROOT / "modelux_local"
    callers = sorted(str(p.relative_to(pkg)) for p in pkg.rglob("*.py")
                     if p.parent.name != "routing" and re.search(r"\bexecute\(\s*[\w.]*plan", p.read_text()))
    assert callers == ["calls/dispatch.py"]


def test_import_contracts_hold():
    """pyproject's [tool.importlinter] contracts: layers downward, litestar only in proxy/, textual only in tui/."""
    from pathlib import Path

    lint = Path(sys.executable).with_name("lint-imports")  # installed with the test extra, next to this python
    out = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def test_ruff_is_clean():
    """pyproject's [tool.ruff] rules hold for the whole tree (tests and benches included)."""
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
