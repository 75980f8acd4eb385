"""Owner-only files whatever the umask, and provider keys echoed by an upstream never stored
(issue 14, D12 and scope 6): the real server, the openai SDK, a fake upstream that puts the key
it was sent into its error text, and a byte scan of every file the app wrote (WAL included)."""
from __future__ import annotations

import os
import signal
import stat

import openai
import pytest

from .conftest import client_for
from .fakes.openai_upstream import FakeOpenAI
from .server import ServerProcess, write_config

SECRET = "sk-live-ECHOED-BY-THE-UPSTREAM-0123456789"


def mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)  # the server subprocess inherits it
    yield
    os.umask(old)


def test_data_dir_database_wal_shm_and_exports_are_owner_only(tmp_path, umask_022):
    srv = ServerProcess(tmp_path / "home" / "data")
    srv.log_path = tmp_path / "server.log"
    srv.data_dir.parent.mkdir()
    with srv:
        client = client_for(srv)
        client.chat.completions.create(model="@executor", messages=[{"role": "user", "content": "private"}],
                                       extra_body={"mlx:tags": {"run_id": "modes"}})
        assert srv.get("/mlx/v1/runs/modes").status_code == 200  # written
        files = {p.name: mode(p) for p in srv.data_dir.iterdir()}
        assert mode(srv.data_dir) == 0o700
        assert {"modelux.db", "modelux.db-wal", "modelux.db-shm"} <= set(files)
        assert all(m == 0o600 for m in files.values()), files
        out = tmp_path / "calls.jsonl"
        srv.cli("export", "--jsonl", str(out))
        assert "private" in out.read_text() and mode(out) == 0o600


def test_an_existing_0755_data_dir_from_an_older_version_is_tightened(tmp_path, umask_022):
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    (data / "modelux.db").touch(mode=0o644)
    os.chmod(data / "modelux.db", 0o644)
    with ServerProcess(data):
        assert mode(data) == 0o700 and mode(data / "modelux.db") == 0o600


def test_a_key_echoed_in_upstream_error_text_is_masked_before_anything_is_stored(tmp_path):
    echo = {"error": {"message": f"Incorrect API key provided: {SECRET}. You can find your key at ...",
                      "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}
    with FakeOpenAI() as up:
        cfg = write_config(tmp_path / "cfg", {
            "modelux.toml": f'[providers.up]\nkind = "openai"\nbase_url = "{up.base_url}"\napi_key_env = "UP_KEY"\n',
            "main.toml": '[aliases.x]\ntargets = [{ provider = "up", model = "gpt-4o-mini" }]\n'
                         'retries = { attempts = 1, backoff_ms = 1 }\n'})
        srv = ServerProcess(tmp_path / "data", cfg, env={"UP_KEY": SECRET})
        srv.log_path = tmp_path / "server.log"
        srv.start()
        client = client_for(srv)
        up.enqueue(status=401, error=echo)  # passes through to the client: it is their own answer
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="@x", messages=[{"role": "user", "content": "a"}],
                                           extra_body={"mlx:tags": {"run_id": "echo"}})
        up.enqueue(status=500, error=echo, n_times=2)  # retried, then 502: the key sits in the attempts
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model="@x", messages=[{"role": "user", "content": "b"}],
                                           extra_body={"mlx:tags": {"run_id": "echo"}})
        up.enqueue(status=401, error=echo)
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="@x", stream=True, messages=[{"role": "user", "content": "c"}],
                                           extra_body={"mlx:tags": {"run_id": "echo"}})
        run = srv.get("/mlx/v1/runs/echo").json()  # read-your-writes: everything is in the db or its WAL
        assert run["calls"] == 3
        assert up.requests[0].headers["authorization"] == f"Bearer {SECRET}"  # the upstream did get the key
        step = srv.get(f"/mlx/v1/calls/{run['steps'][0]['call_id']}").json()
        assert "Incorrect API key provided: [redacted]" in str(step)
        live = {p.name: p.read_bytes() for p in srv.data_dir.iterdir() if p.is_file()}
        assert "modelux.db-wal" in live
        for name, blob in live.items():
            assert SECRET.encode() not in blob, f"the key is in {name}"
        srv.stop(signal.SIGTERM)
    for p in [*srv.data_dir.iterdir(), srv.log_path]:
        if p.is_file():
            assert SECRET.encode() not in p.read_bytes(), f"the key is in {p.name}"
