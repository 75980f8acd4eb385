"""The TUI's boundaries: the core rooms never import textual, and inside modelux_local/tui only
data.py reaches the rest of modelux_local."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TUI = ROOT / "modelux_local" / "tui"


def test_core_rooms_do_not_import_textual():
    code = ("import sys\n"
            "import modelux_local.cli, modelux_local.runtime, modelux_local.proxy.app, modelux_local.routing, "
            "modelux_local.storage, modelux_local.config.loader, modelux_local.providers, modelux_local.pricing, "
            "modelux_local.commands.serve, modelux_local.commands.tui_cmd\n"
            "import modelux_local.cli as c; c.build_parser()\n"
            "bad = sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.'))\n"
            "print(len(bad)); print(bad[:5])\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "0", r.stdout


def _modelux_imports(path: Path) -> list[str]:
    """Absolute names of the modelux_local modules a TUI file imports."""
    package = "modelux_local." + ".".join(path.relative_to(ROOT / "modelux_local").with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                out.append(".".join(base + ([node.module] if node.module else [])))
            elif node.module and node.module.startswith("modelux_local"):
                out.append(node.module)
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.startswith("modelux_local")]
    return out


def test_tui_reads_modelux_local_only_through_data_py():
    files = sorted(TUI.rglob("*.py"))
    assert len(files) >= 8
    outside = {str(f.relative_to(ROOT)): [m for m in _modelux_imports(f) if not m.startswith("modelux_local.tui")]
               for f in files if f.name != "data.py"}
    assert {f: m for f, m in outside.items() if m} == {}
    # and data.py itself does reach the core (the check above is not vacuous)
    assert any(not m.startswith("modelux_local.tui") for m in _modelux_imports(TUI / "data.py"))
