from __future__ import annotations

import os
import tempfile

import openai
import pytest

from .server import ServerProcess, write_config

# Servers started by tests announce themselves here, not where a developer's own server does
# (commands without --data-dir would otherwise find one of them).
os.environ["MODELUX_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="modelux-run-")


@pytest.fixture
def make_server(tmp_path):
    """make_server(config_files: dict | None = None, **kw) -> a started ServerProcess (stopped after the test)."""
    started: list[ServerProcess] = []

    def make(config_files: dict[str, str] | None = None, *, name: str = "srv", env: dict | None = None,
             extra_args: list[str] | None = None, config_dir=None) -> ServerProcess:
        cdir = config_dir
        if config_files is not None:
            cdir = write_config(tmp_path / f"{name}-config", config_files)
        s = ServerProcess(tmp_path / f"{name}-data", cdir, env=env, extra_args=extra_args)
        started.append(s.start())
        return s

    yield make
    for s in started:
        s.stop()


@pytest.fixture(scope="module")
def default_server(tmp_path_factory):
    """One server on the embedded default (mock provider) shared by a test module."""
    s = ServerProcess(tmp_path_factory.mktemp("default") / "data")
    s.start()
    yield s
    s.stop()


def client_for(server: ServerProcess, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=kw.pop("api_key", "sk-test-not-used"), max_retries=0, **kw)
