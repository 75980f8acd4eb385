"""A short run of scripts/soak itself (the real soak is 20 s with a SIGKILL, outside the suite; the kill and
restart path costs a second server start, so the smoke skips it: tests/test_crash.py covers that path)."""
from __future__ import annotations

import subprocess

from .server import ROOT


def test_soak_script_runs_and_reports():
    r = subprocess.run([str(ROOT / "scripts" / "soak"), "--seconds", "2", "--clients", "8", "--no-kill"], cwd=ROOT,
                       capture_output=True, text=True, timeout=90)
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    from .test_readme_examples import command_lines, example, strip_comment

    usage = subprocess.run([str(ROOT / "scripts" / "soak"), "--help"], capture_output=True, text=True, timeout=60).stdout
    for line in command_lines(example("soak-cli")):
        cmd = strip_comment(line).split()
        assert cmd[0] == "scripts/soak" and all(f in usage for f in cmd[1:] if f.startswith("--")), line
    for needle in ("errors 0", "lost 0", "duplicated 0", "integrity ok", "RSS: first server", "soak: OK"):
        assert needle in out, out
