"""Installing from the repository (what `uv tool install .` / `pipx install .` build) and the one-file
build. The full build takes minutes, so it runs only with MODELUX_TEST_BUILD=1 (or `scripts/build --check`)."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest

from .server import ROOT


def test_readme_install_and_build_lines_are_real(tmp_path):
    from .test_readme_examples import command_lines, example, strip_comment

    assert [strip_comment(x) for x in command_lines(example("install-tool"))] == ["uv tool install ."]
    assert [strip_comment(x) for x in command_lines(example("build"))] == ["scripts/build", "scripts/build --check"]
    assert os.access(ROOT / "scripts" / "build", os.X_OK)
    # the wheel a tool installer builds from the checkout: both commands, and the data files the
    # embedded default, the starter config and the TUI need at run time
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("modelux_local-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "modelux-local = modelux_local.cli:main" in entry and "modelux = modelux_local.cli:main" in entry
    for needed in ("modelux_local/config/default/modelux.toml", "modelux_local/config/default/default.toml",
                   "modelux_local/config/starter/modelux.toml", "modelux_local/commands/demo.py"):
        assert needed in names, needed
    assert any(n.startswith("modelux_local/tui/") and n.endswith(".tcss") for n in names)


@pytest.mark.skipif(os.environ.get("MODELUX_TEST_BUILD") != "1", reason="minutes long: MODELUX_TEST_BUILD=1")
def test_the_built_file_runs_without_python():
    r = subprocess.run([str(ROOT / "scripts" / "build"), "--check"], capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0 and "OK: " in r.stdout, r.stdout + r.stderr
