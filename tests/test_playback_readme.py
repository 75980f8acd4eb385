"""The README's "Testing your agent: cassettes" examples, run as a user would run them."""
from __future__ import annotations

import re
import shlex

import openai
import pytest

from modelux_local.playback import load

from .conftest import client_for
from .server import ServerProcess
from .test_readme_examples import command_lines, example, sh, strip_comment

pytest_plugins = ["pytester"]
CASSETTE = "tests/cassettes/coder.cassette"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The run of the README (task-812) on the embedded default, saved and shown by the README's lines."""
    base = tmp_path_factory.mktemp("readme-playback")
    srv = ServerProcess(base / "data").start()
    try:
        c = client_for(srv)
        tags = {"mlx:tags": {"run_id": "task-812", "agent": "coder"}}
        c.chat.completions.create(model="@planner", messages=[
            {"role": "system", "content": "You are a careful coding agent."},
            {"role": "user", "content": "Fix the failing test in parser.py"}], extra_body=tags)
        list(c.chat.completions.create(model="@executor", messages=[{"role": "user", "content": "Run the test suite"}],
                                       stream=True, extra_body=tags))
        c.embeddings.create(model="@embedder", input="parser.py", extra_body=tags)
        c.chat.completions.create(model="@summarizer", messages=[{"role": "user", "content": "Summarise the fix"}],
                                  extra_body=tags)
    finally:
        srv.stop()
    work = base / "project"
    work.mkdir()
    outs = [sh(strip_comment(line.replace("modelux ", "modelux-local ", 1)), home=srv.data_dir, cwd=work).stdout
            for line in command_lines(example("playback-save"))]
    return {"work": work, "show": outs[1], "data": srv.data_dir}


def test_save_and_show_print_what_the_readme_shows(saved):
    assert (saved["work"] / CASSETTE).exists()
    real = saved["show"].splitlines()
    shown = example("playback-show").text.splitlines()
    mask = lambda s: re.sub(r"created \S+,", "created #,", s)  # noqa: E731 - the only thing that varies
    assert [mask(x) for x in real] == [mask(x) for x in shown]


def test_the_file_sample_is_a_loadable_cassette(tmp_path):
    p = tmp_path / "c.cassette"
    p.write_text(example("playback-file").text + "\n")
    cas = load(p)
    assert [e.alias for e in cas.entries] == ["@summarizer"] and cas.header["modelux_cassette"] == 1


def test_the_serve_lines_start_with_each_miss_mode(saved, tmp_path):
    for i, line in enumerate(command_lines(example("playback-serve"))):
        args = shlex.split(strip_comment(line))
        assert args[:2] == ["modelux", "serve"]
        args = [str(saved["work"] / a) if a == CASSETTE else a for a in args[2:]]
        mode = args[args.index("--on-miss") + 1] if "--on-miss" in args else "error"
        srv = ServerProcess(tmp_path / f"d{i}", extra_args=args).start()
        srv.stop()
        assert f"recorded calls; on a miss: {mode})" in srv.log()


def test_a_miss_reads_as_the_readme_shows(saved, tmp_path):
    cassette = saved["work"] / CASSETTE
    srv = ServerProcess(tmp_path / "d", extra_args=["--cassette", str(cassette)]).start()
    try:
        with pytest.raises(openai.BadRequestError) as e:
            client_for(srv).chat.completions.create(model="@planner", messages=[
                {"role": "system", "content": "You are a careful coding agent. Be brief."},
                {"role": "user", "content": "Fix the failing test in parser.py"}])
    finally:
        srv.stop()
    got = f"openai.BadRequestError: {e.value}".replace(str(cassette), CASSETTE)
    assert got == example("playback-miss").text.strip()


def test_the_pytest_example_runs_with_the_plugin(pytester: pytest.Pytester):
    (pytester.path / "tests" / "cassettes").mkdir(parents=True)
    (pytester.path / CASSETTE).write_text(example("playback-file").text + "\n")
    pytester.makepyfile(test_coder=example("playback-pytest").text)
    pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120).assert_outcomes(passed=1)


def test_the_cache_alias_answers_the_second_identical_request(make_server):
    srv = make_server({"modelux.toml": '[providers.mock]\nkind = "mock"\n',
                       "main.toml": example("playback-cache-toml").text})
    c = client_for(srv)
    ask = [{"role": "user", "content": "same question"}]
    served = [c.chat.completions.with_raw_response.create(model="@planner", messages=ask).headers["x-mlx-served-by"]
              for _ in range(2)]
    assert served == ["mock/mock-large", "cache"]
