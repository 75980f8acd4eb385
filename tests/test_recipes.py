"""README's client recipes, run as written against the real server on the embedded default:
langchain-openai, pydantic-ai, simonw's `llm`, the anthropic SDK through ANTHROPIC_BASE_URL (as
Claude Code and other Anthropic-format tools configure it), and Datasette on the database."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from .server import ROOT, free_port

VENV_BIN = Path(sys.executable).parent


def recipe(name: str) -> str:
    from .test_readme_examples import example

    return example(name).text


def run_python(code: str, server, env: dict | None = None) -> str:
    """A README Python recipe, with the documented base URL pointed at the test server's port."""
    code = code.replace("127.0.0.1:4000", f"127.0.0.1:{server.port}")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**os.environ, **(env or {})})
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def run_of(server, run_id: str) -> dict:
    r = server.get(f"/mlx/v1/runs/{run_id}")
    assert r.status_code == 200, r.text
    return r.json()


def test_langchain_openai(default_server):
    out = run_python(recipe("recipe-langchain"), default_server)
    assert out.strip()
    run = run_of(default_server, "lc-run-1")
    assert run["calls"] == 2 and run["tags"]["agent"] == "langchain" and run["steps"][1]["stream"] is True


def test_pydantic_ai(default_server):
    out = run_python(recipe("recipe-pydantic-ai"), default_server)
    assert out.strip()
    run = run_of(default_server, "pai-run-1")
    assert run["calls"] >= 1 and run["steps"][0]["alias"] == "@planner" and run["tags"]["agent"] == "pydantic-ai"


def test_simonw_llm_with_extra_openai_models(default_server, tmp_path):
    yaml = recipe("recipe-llm-yaml").replace("127.0.0.1:4000", f"127.0.0.1:{default_server.port}")
    (tmp_path / "extra-openai-models.yaml").write_text(yaml)
    (line,) = [x for x in recipe("recipe-llm-cli").splitlines() if x.startswith("llm ")]
    env = {**os.environ, "LLM_USER_PATH": str(tmp_path), "OPENAI_API_KEY": "not-needed-locally",
           "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    r = subprocess.run(["bash", "-c", line], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip(), r.stdout + r.stderr
    runs = default_server.get("/mlx/v1/runs", params={"tag": "agent:llm-cli"}).json()["runs"]
    assert runs and runs[0]["calls"] >= 1


def test_anthropic_format_tools_via_anthropic_base_url(default_server):
    env_line = next(x for x in recipe("recipe-anthropic-env").splitlines() if x.startswith("export ANTHROPIC_BASE_URL"))
    base = env_line.split("=", 1)[1].split()[0].replace("4000", str(default_server.port))
    out = run_python(recipe("recipe-anthropic-sdk"), default_server,
                     env={"ANTHROPIC_BASE_URL": base, "ANTHROPIC_API_KEY": "not-needed-locally"})
    assert out.strip()
    run = run_of(default_server, "claude-run-1")
    assert run["steps"][0]["endpoint"] == "messages" and run["tags"]["agent"] == "claude-code"


def test_datasette_browses_the_database(default_server, tmp_path):
    from .conftest import client_for

    client_for(default_server).chat.completions.create(
        model="@executor", messages=[{"role": "user", "content": "for datasette"}],
        extra_body={"mlx:tags": {"run_id": "ds-run-1", "agent": "datasette"}})
    default_server.get("/mlx/v1/runs/ds-run-1")  # written
    (line,) = [x for x in recipe("recipe-datasette").splitlines() if x.startswith("datasette ")]
    port = free_port()
    line = line.replace("$MODELUX_HOME", str(default_server.data_dir)).replace("8001", str(port))
    proc = subprocess.Popen(["bash", "-c", "exec " + line], env={**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/modelux/runs.json",
                              params={"run_id": "ds-run-1", "_shape": "array"}, timeout=5)
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, proc.stdout.read().decode()[-2000:]
            time.sleep(0.3)
        rows = r.json()
        assert rows[0]["agent"] == "datasette" and rows[0]["calls"] == 1
        sql = httpx.get(f"http://127.0.0.1:{port}/modelux.json", timeout=10, params={
            "sql": "select alias, model, cost_nusd from calls where run_id = 'ds-run-1'", "_shape": "array"}).json()
        assert sql[0]["alias"] == "@executor" and sql[0]["cost_nusd"] > 0
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_readme_schema_lists_every_table(default_server):
    from modelux_local.storage import connect

    first_cells = re.findall(r"^\| ([^|]+) \|", recipe_section("schema"), re.M)
    documented = {name for cell in first_cells for name in re.findall(r"`(\w+)`", cell)}
    conn = connect(default_server.db_path, readonly=True)
    try:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                  if not name.startswith(("sqlite_", "calls_fts_", "call_vectors_"))}  # internals of FTS5/vec0
    finally:
        conn.close()
    assert {"runs", "calls", "export_cursors"} <= tables
    assert tables <= documented, f"tables missing from README's schema: {sorted(tables - documented)}"


def recipe_section(name: str) -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(rf"<!-- section:{name} -->(.*?)<!-- /section:{name} -->", text, re.S)
    assert m, name
    return m.group(1)
