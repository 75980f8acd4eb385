"""The command line with bad input, as a user types it: a clear message on stderr, nothing half-done,
and the same exit status for the same kind of mistake (0 ok, 1 not found / failed, 2 usage)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import client_for
from .server import ROOT


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelux_local", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


@pytest.fixture(scope="module")
def srv(default_server):
    """The embedded default with two recorded runs: `cli-1` (agent cli) and `cli-2`."""
    client = client_for(default_server)
    for rid in ("cli-1", "cli-2"):
        client.chat.completions.create(model="@executor", messages=[{"role": "user", "content": f"hello {rid}"}],
                                       extra_body={"mlx:tags": {"run_id": rid, "agent": "cli"}})
    return default_server


# A typo in --data-dir must never answer from (or leave behind) a fresh empty database.
NEEDS_A_DATABASE = [
    ("runs",), ("runs", "--json"), ("trace", "cli-1"), ("trace", "cli-1", "--json"),
    ("analytics", "--group-by", "agent"), ("logs", "search", "hello"), ("outcome", "cli-1", "--success"),
    ("abort", "cli-1"), ("webhooks", "--json"), ("replays", "list"), ("replays", "show", "abc"),
    ("config", "history"), ("config", "rollback"), ("config", "promote", "@default"),
    ("simulate", "--config=@default"),
]


def test_commands_on_a_data_dir_without_a_database_say_so(tmp_path):
    typo = tmp_path / "modelux-hoem"
    for argv in NEEDS_A_DATABASE:
        r = cli(*argv, "--data-dir", str(typo))
        assert r.returncode == 1, (argv, r.returncode, r.stderr)
        assert r.stdout == "" and r.stderr.startswith("error: no database at ") and str(typo) in r.stderr, argv
        assert not typo.exists(), f"{argv} created {typo}"


@pytest.mark.parametrize("argv,needle", [
    (("runs", "--since", "5x"), "invalid duration '5x'"),
    (("runs", "--tag", "novalue"), "use key=value"),
    (("runs", "--limit", "0"), "must be 1 or more"),
    (("runs", "--sort", "price"), "invalid choice: 'price'"),
    (("analytics", "--group-by", "agent", "--tag", "novalue"), "use key=value"),
    (("analytics", "--since", "1h"), "--group-by"),
    (("logs", "search", "hello", "--since", "yesterday"), "invalid duration 'yesterday'"),
    (("logs", "search", '"unterminated'), "cannot parse search query"),
    (("webhooks", "--limit", "-5"), "must be 1 or more"),
    (("outcome", "cli-1"), "one of the arguments --success --failure is required"),
    (("outcome", "cli-1", "--success", "--score", "high"), "invalid float value: 'high'"),
    (("simulate", "--config=@default", "--replay", "5x"), "invalid duration '5x'"),
    (("simulate", "--config=@default", "--since", "5x"), "neither a duration"),
    (("simulate", "--config=@default", "--tag", "novalue"), "expected K=V"),
    (("simulate", "--config=@default", "--sample", "0"), "must be 1 or more"),
    (("simulate", "--config=@default", "--concurrency", "0"), "must be 1 or more"),
    (("simulate", "--config=@default", "--max-cost", "-1"), "must be 0 or more"),
    (("simulate",), "--config"),
    (("config", "rollback", "--to", "latest"), "a version number"),
])
def test_usage_mistakes_exit_2_with_the_reason(srv, argv, needle):
    r = srv.cli(*argv, check=False)
    assert r.returncode == 2 and needle in r.stderr and r.stdout == "", (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("argv,needle", [
    (("trace", "no-such-run"), "no run 'no-such-run'"),
    (("trace", "no-such-run", "--json"), "no run 'no-such-run'"),
    (("outcome", "no-such-run", "--failure"), "no run 'no-such-run'"),
    (("abort", "no-such-run"), "no run 'no-such-run'"),
    (("replays", "show", "nope"), "no replay 'nope'"),
    (("config", "show", "@nope"), "no config @nope; configs: @default"),
    (("config", "promote", "@nope", "--force"), "no config @nope"),
    (("simulate", "--config=@nope"), "no config @nope in <embedded default>; configs: @default"),
    (("simulate", "--config=@default", "--tag", "agent=nobody"), "no recorded runs to replay in last 24h matching tag agent=nobody"),
    (("simulate", "--config=@default", "--run-id", "no-such-run", "--json"), "no recorded runs to replay"),
    (("config", "rollback"), "nothing to roll back"),
])
def test_what_does_not_exist_exits_1_and_prints_nothing_on_stdout(srv, argv, needle):
    r = srv.cli(*argv, check=False)
    assert r.returncode == 1 and needle in r.stderr and r.stdout == "", (r.returncode, r.stdout, r.stderr)


def test_a_replay_of_nothing_is_not_stored(srv):
    before = json.loads(srv.cli("replays", "list", "--json").stdout)["replays"]
    assert srv.cli("simulate", "--config=@default", "--tag", "agent=nobody", check=False).returncode == 1
    assert json.loads(srv.cli("replays", "list", "--json").stdout)["replays"] == before


def test_abort_twice_is_not_an_error_and_keeps_the_first_reason(srv):
    first = srv.cli("abort", "cli-2", "--reason", "first")
    assert "aborted; a running server refuses its next calls" in first.stdout
    again = srv.cli("abort", "cli-2", "--reason", "second")
    assert again.returncode == 0 and "was already aborted (first)" in again.stdout
    assert srv.get("/mlx/v1/runs/cli-2").json()["abort_reason"] == "first"


@pytest.mark.parametrize("argv,key", [
    (("runs", "--json"), "runs"), (("trace", "cli-1", "--json"), "steps"),
    (("analytics", "--group-by", "agent", "--json"), "groups"), (("logs", "search", "hello", "--json"), "results"),
    (("webhooks", "--json"), "events"), (("replays", "list", "--json"), "replays"),
    (("config", "history", "--json"), "history"),
    (("simulate", "--config=@default", "--mode", "reprice", "--json"), "replay_id"),
])
def test_json_is_one_document_on_stdout(srv, argv, key):
    r = srv.cli(*argv)
    assert key in json.loads(r.stdout)  # json.loads refuses anything around the one document


def test_a_config_dir_that_does_not_load_is_named_but_does_not_hide_the_runs(srv, tmp_path):
    r = subprocess.run([sys.executable, "-m", "modelux_local", "runs", "--data-dir", str(srv.data_dir),
                        "--config-dir", str(tmp_path / "typo")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and "cli-1" in r.stdout
    assert r.stderr.startswith("warning: config not loaded (config directory ") and "does not exist" in r.stderr
