"""Config files are watched: a valid edit takes effect without restart; a broken one is refused."""
from __future__ import annotations

import time

from .conftest import client_for
from .fakes.openai_upstream import FakeOpenAI

ALIAS = '[aliases.x]\ntargets = [{{ provider = "{p}", model = "gpt-4o-mini" }}]\n'


def wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_valid_edit_reroutes_and_broken_edit_keeps_last_good(make_server):
    with FakeOpenAI() as a, FakeOpenAI() as b:
        files = {"modelux.toml": f'[providers.a]\nkind = "openai"\nbase_url = "{a.base_url}"\n\n'
                                 f'[providers.b]\nkind = "openai"\nbase_url = "{b.base_url}"\n',
                 "main.toml": ALIAS.format(p="a")}
        srv = make_server(files)
        client = client_for(srv)
        ask = lambda: client.chat.completions.create(model="@x", messages=[{"role": "user", "content": "hi"}])  # noqa: E731
        ask()
        assert len(a.requests) == 1
        v1 = srv.get("/mlx/v1/config").json()["versions"]["main"]

        (srv.config_dir / "main.toml").write_text(ALIAS.format(p="b"))
        wait_for(lambda: srv.get("/mlx/v1/config").json()["versions"]["main"] != v1)
        ask()
        assert len(b.requests) == 1 and len(a.requests) == 1

        (srv.config_dir / "main.toml").write_text(ALIAS.format(p="a") + "\nstrategyy = 1\n[aliases.x.oops]\n")
        status = wait_for(lambda: (s := srv.get("/mlx/v1/config").json()["reload"]) and not s["ok"] and s)
        assert status["file"].endswith("main.toml") and status["line"] is not None
        assert "unknown key" in status["message"]
        ask()
        assert len(b.requests) == 2, "a refused edit must leave the last good routing serving"
        assert "config change refused" in srv.log()

    # every distinct content is a version in the database, and calls record the one that routed them
    import apsw
    db = apsw.Connection(str(srv.db_path))
    versions = {r[0] for r in db.execute("SELECT version FROM config_versions WHERE name = 'main'")}
    assert len(versions) == 2 and v1 in versions
    used = [r[0] for r in db.execute("SELECT config_version FROM calls ORDER BY started_at")]
    assert used[0] == v1 and used[1] != v1 and used[1] in versions
