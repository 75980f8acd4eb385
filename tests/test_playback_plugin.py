"""The pytest plugin the package installs (entry point pytest11), used from a test file in a temp
dir through `pytester`: a cassette recorded from the embedded default, played to an inner test."""
from __future__ import annotations

import openai
import pytest

pytest_plugins = ["pytester"]

INNER = '''
import openai
import pytest

ASK = [{"role": "user", "content": "write the release notes"}]

def client(gw):
    return openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)

@pytest.mark.modelux(cassette="tests/cassettes/notes.cassette")
def test_agent_gets_the_recorded_answer(modelux_gateway):
    assert modelux_gateway.base_url.startswith("http://127.0.0.1:") and modelux_gateway.base_url.endswith("/v1")
    got = client(modelux_gateway).chat.completions.create(model="@planner", messages=ASK,
                                                          extra_body={"mlx:tags": {"run_id": "inner"}})
    assert got.choices[0].message.content == EXPECTED
    assert modelux_gateway.run("inner")["steps"][0]["provider"] == "cassette"

@pytest.mark.modelux(cassette="tests/cassettes/notes.cassette")
def test_a_changed_prompt_fails_with_a_readable_miss(modelux_gateway):
    with pytest.raises(openai.BadRequestError, match="cassette_miss.*notes.cassette"):
        client(modelux_gateway).chat.completions.create(model="@planner", messages=[
            {"role": "user", "content": "write the release notes in French"}])

@pytest.mark.modelux(cassette="tests/cassettes/notes.cassette", config_dir="cfg", on_miss="live")
def test_config_dir_and_live_misses(modelux_gateway):
    raw = client(modelux_gateway).chat.completions.with_raw_response.create(
        model="@only-here", messages=[{"role": "user", "content": "not recorded"}])
    assert raw.headers["x-mlx-served-by"] == "mock/mock-small"


@pytest.mark.modelux(cassette="tests/cassettes/missing.cassette")
def test_a_missing_cassette_fails_the_test_at_setup(modelux_gateway):
    pass
'''

def test_plugin_plays_a_cassette_to_an_inner_test_suite(pytester: pytest.Pytester, default_server):
    c = openai.OpenAI(base_url=default_server.base_url, api_key="unused", max_retries=0)
    expected = c.chat.completions.create(model="@planner", messages=[{"role": "user", "content": "write the release notes"}],
                                         extra_body={"mlx:tags": {"run_id": "notes-1"}}).choices[0].message.content
    out = pytester.path / "tests" / "cassettes"
    out.mkdir(parents=True)
    default_server.get("/mlx/v1/runs/notes-1")  # read-after-writes: the CLI reads the file the writer fills
    default_server.cli("cassette", "save", "--run", "notes-1", "--out", str(out / "notes.cassette"))
    (pytester.path / "cfg").mkdir()
    (pytester.path / "cfg" / "modelux.toml").write_text('[providers.mock]\nkind = "mock"\n')
    (pytester.path / "cfg" / "main.toml").write_text(
        '[aliases.planner]\ntargets = [{ provider = "mock", model = "mock-large" }]\n'
        '[aliases.only-here]\ntargets = [{ provider = "mock", model = "mock-small" }]\n')
    pytester.makepyfile(test_agent=f"EXPECTED = {expected!r}\n" + INNER)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(["*cassette */tests/cassettes/missing.cassette does not exist: save one with*"])

def test_marker_is_registered_and_documented(pytester: pytest.Pytester):
    result = pytester.runpytest_subprocess("--markers")
    result.stdout.fnmatch_lines(["*@pytest.mark.modelux(cassette=None, config_dir=None, on_miss='error'*"])
