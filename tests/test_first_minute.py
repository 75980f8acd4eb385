"""The first minute and small truths (issue 13): data-dir discovery, untagged calls, near-miss
tag keys, mock model typos, `dimensions`, sub-cent costs, the indexer out of calls/min."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import anthropic
import openai
import pytest

from modelux_local.pricing import format_usd

from .conftest import client_for
from .server import ROOT, ServerProcess, write_config


def bare_cli(*args: str, runtime_dir, cwd=ROOT) -> subprocess.CompletedProcess:
    """A command as a user types it: no --data-dir, no MODELUX_HOME."""
    env = {k: v for k, v in os.environ.items() if k not in ("MODELUX_HOME", "MODELUX_CONFIG_DIR")}
    env["MODELUX_RUNTIME_DIR"] = str(runtime_dir)
    env["XDG_DATA_HOME"] = str(runtime_dir / "xdg")  # the platform default, if it is used, is empty
    return subprocess.run([sys.executable, "-m", "modelux_local", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60)


def test_commands_without_data_dir_find_the_one_running_server(tmp_path):
    rt = tmp_path / "run"
    srv = ServerProcess(tmp_path / "data", env={"MODELUX_RUNTIME_DIR": str(rt)}).start()
    try:
        assert f"export MODELUX_HOME={srv.data_dir.resolve()}" in srv.log()
        client_for(srv).chat.completions.create(model="@planner", messages=[{"role": "user", "content": "hi"}],
                                                extra_body={"mlx:tags": {"run_id": "run_found"}})
        time.sleep(0.5)
        r = bare_cli("runs", runtime_dir=rt)
        assert r.returncode == 0, r.stderr
        assert f"using the data dir of the server running on {srv.url} (pid {srv.proc.pid})" in r.stderr
        assert "run_found" in r.stdout

        # a stale file (its process is gone) is ignored; a second live server makes it ambiguous
        (rt / "server-999999999.json").write_text(json.dumps({"pid": 999999999, "host": "127.0.0.1", "port": 1,
                                                               "data_dir": "/nonexistent"}))
        assert "run_found" in bare_cli("runs", runtime_dir=rt).stdout
        other = ServerProcess(tmp_path / "data2", env={"MODELUX_RUNTIME_DIR": str(rt)}).start()
        try:
            r = bare_cli("runs", runtime_dir=rt)
            assert "2 servers are running" in r.stderr and "run_found" not in r.stdout
        finally:
            other.stop()
    finally:
        srv.stop()
    assert not list(rt.glob("server-*.json")) or all("999999999" in p.name for p in rt.glob("server-*.json"))
    r = bare_cli("runs", runtime_dir=rt)
    assert "using the data dir" not in r.stderr and "run_found" not in r.stdout


def test_untagged_calls_are_counted_and_the_indexer_is_not_traffic(make_server):
    srv = make_server()
    c = client_for(srv)
    for _ in range(2):
        c.chat.completions.create(model="@executor", messages=[{"role": "user", "content": "no tag here"}])
    c.chat.completions.create(model="@executor", messages=[{"role": "user", "content": "tagged"}],
                              extra_body={"mlx:tags": {"run_id": "run_t1"}})
    deadline = time.monotonic() + 20
    from modelux_local.storage import connect
    while True:  # the semantic indexer embeds the three calls with calls of its own
        conn = connect(srv.db_path, readonly=True)
        internal = conn.execute("SELECT count(*) FROM calls WHERE tags LIKE '%semantic-index%'").fetchone()[0]
        conn.close()
        if internal or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert internal, "the indexer made no call"
    out = srv.cli("runs").stdout
    assert "run_t1" in out and "2 calls without a run_id" in out
    assert json.loads(srv.cli("runs", "--json").stdout)["untagged_calls"] == 2

    from modelux_local.tui.data import DataSource
    pulse = DataSource(srv.db_path, None).pulse()
    assert pulse.calls_per_min == 3 and pulse.untagged_calls == 2


@pytest.mark.parametrize("key", ["mlx_tags", "mlx-tags", "mlxTags"])
def test_near_miss_tag_keys_are_refused_naming_mlx_tags(default_server, key):
    with pytest.raises(openai.BadRequestError) as e:
        client_for(default_server).chat.completions.create(
            model="@planner", messages=[{"role": "user", "content": "hi"}], extra_body={key: {"run_id": "r"}})
    assert e.value.status_code == 400 and "'mlx:tags'" in e.value.message and repr(key) in e.value.message
    a = anthropic.Anthropic(base_url=default_server.url, api_key="unused", max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as e:
        a.messages.create(model="@planner", max_tokens=20, messages=[{"role": "user", "content": "hi"}],
                          extra_body={key: {"run_id": "r"}})
    assert "run tags go in 'mlx:tags'" in e.value.body["error"]["message"]


def test_unknown_mock_models_are_config_errors_and_404s(tmp_path, default_server):
    d = write_config(tmp_path / "c", {
        "modelux.toml": '[providers.mock]\nkind = "mock"\n[providers.mock.models.mock-small]\nlatency_ms = 1\n',
        "a.toml": '[aliases.x]\ntargets = [\n  { provider = "mock", model = "mock-smal" },\n]\n'})
    r = subprocess.run([sys.executable, "-m", "modelux_local", "config", "check", str(d)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "a.toml:3:" in r.stderr and "unknown mock model 'mock-smal'" in r.stderr
    assert "mock-small" in r.stderr.split("mock-smal'", 1)[1]
    with pytest.raises(openai.NotFoundError) as e:
        client_for(default_server).chat.completions.create(model="mock/mock-smal",
                                                           messages=[{"role": "user", "content": "hi"}])
    assert "unknown model 'mock-smal'" in e.value.message


def test_mock_embeddings_honour_dimensions_and_tiny_costs_keep_their_digits(default_server):
    c = client_for(default_server)
    r = c.embeddings.create(model="@embedder", input="hi", dimensions=64,
                            extra_body={"mlx:tags": {"run_id": "run_emb1"}})
    assert len(r.data[0].embedding) == 64
    assert len(c.embeddings.create(model="@embedder", input="hi").data[0].embedding) == 256
    with pytest.raises(openai.BadRequestError) as e:
        c.embeddings.create(model="@embedder", input="hi", dimensions=0)
    assert "'dimensions'" in e.value.message
    time.sleep(0.5)
    out = default_server.cli("trace", "run_emb1").stdout
    assert "$0.00000002" in out, out  # 1 token at $0.02 per million; it used to print as $0.000000


def test_format_usd_keeps_two_significant_digits_under_a_cent():
    assert format_usd(4e-8) == "$0.00000004"
    assert format_usd(0.0012345) == "$0.0012"
    assert format_usd(0.0075, 5) == "$0.00750"
    assert format_usd(0.5) == "$0.5000" and format_usd(1234.5) == "$1,234.5000" and format_usd(0) == "$0.0000"
    assert format_usd(-3e-5) == "-$0.00003"


async def test_the_tui_empty_state_counts_calls_that_arrived_without_a_run(make_server):
    from modelux_local.tui.app import ModeluxApp
    from modelux_local.tui.data import DataSource

    from .test_tui_screens import until

    srv = make_server()
    for _ in range(2):
        client_for(srv).chat.completions.create(model="@executor", messages=[{"role": "user", "content": "untagged"}])
    srv.get("/mlx/v1/runs")  # written
    app = ModeluxApp(DataSource(srv.db_path, None), subtitle="x")
    async with app.run_test(size=(100, 30)):
        box = app.screen.query_one("#runs-empty")
        await until(lambda: box.display and "without a run_id" in str(box.render()), what="the untagged note")
        assert "No runs yet" in str(box.render()) and "2 calls arrived without a run_id" in str(box.render())
