"""Every fenced example of README.md, run as a user would run it.

Each fenced block in the README is preceded by `<!-- example: NAME -->`. The blocks are read from
the README at test time and run: shell lines through bash with `modelux-local` / `modelux` on the
PATH, `MODELUX_HOME` pointing at a real server's data dir and `localhost:4000` rewritten to that
server's port; Python snippets executed against the server; TOML loaded as config. Placeholders
are never substituted where a real value can be arranged instead (the runs are named `task-812`
and `run_42` as in the text); a replay id, being random, is the one exception.

`test_every_example_is_exercised` fails for a block with no marker, or a marker that neither this
file nor a named test elsewhere exercises: the README and its tests cannot drift apart.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from modelux_local.config.loader import load_dir

from .conftest import client_for
from .fakes.webhook_receiver import WebhookReceiver
from .server import ROOT, ServerProcess, write_config

README = ROOT / "README.md"
VENV_BIN = str(Path(sys.executable).parent)
EXAMPLE_CONFIG = ROOT / "configs" / "example"

# Blocks exercised by other test modules (test file :: function), checked to exist.
ELSEWHERE = {
    "providers-server": "test_messages_endpoint.py::test_readme_provider_configs_load",
    "providers-routing": "test_messages_endpoint.py::test_readme_provider_configs_load",
    "providers-messages-sdk": "test_messages_endpoint.py::test_readme_messages_snippet_runs",
    "messages-passthrough": "test_messages_passthrough.py::test_readme_passthrough_snippet_runs",
    "budgets-toml": "test_budgets.py::test_the_readme_examples_of_this_section_are_valid_config",
    "anomalies-toml": "test_budgets.py::test_the_readme_examples_of_this_section_are_valid_config",
    "webhooks-toml": "test_budgets.py::test_the_readme_examples_of_this_section_are_valid_config",
    "tui-commands": "test_tui_serve.py::test_tui_command_opens_on_a_stopped_servers_database_read_only",
    "tui-screen": "test_tui_snapshots.py",
    "export-cli": "test_export.py::test_readme_export_example_runs",
    "responses-sdk": "test_responses_sdks.py::test_readme_openai_sdk_recipe",
    "responses-agents": "test_responses_sdks.py::test_readme_agents_sdk_recipe_on_every_kind",
    "responses-pydantic-ai": "test_responses_sdks.py::test_readme_pydantic_ai_recipe",
    "responses-native": "test_responses_sdks.py::test_readme_native_config_loads",  # a picture of the runs screen; the snapshots check the real one
    "storage-healthz": "test_storage_faults.py::test_readme_healthz_example_has_the_servers_fields",
    "soak-cli": "test_soak_script.py::test_soak_script_runs_and_reports",  # a picture of the runs screen; the snapshots check the real one
    "limits-toml": "test_limits.py::test_readme_limits_example_is_the_defaults",
    "tui-timeline": "test_tui_timeline.py::test_the_readmes_timeline_is_what_the_widget_draws",
    "runs-over-usual": "test_expected.py::test_a_looping_run_the_ratio_the_meter_and_anomaly_cost_agree",
    "playback-save": "test_playback_readme.py::test_save_and_show_print_what_the_readme_shows",
    "playback-show": "test_playback_readme.py::test_save_and_show_print_what_the_readme_shows",
    "playback-file": "test_playback_readme.py::test_the_file_sample_is_a_loadable_cassette",
    "playback-serve": "test_playback_readme.py::test_the_serve_lines_start_with_each_miss_mode",
    "playback-miss": "test_playback_readme.py::test_a_miss_reads_as_the_readme_shows",
    "playback-pytest": "test_playback_readme.py::test_the_pytest_example_runs_with_the_plugin",
    "playback-cache-toml": "test_playback_readme.py::test_the_cache_alias_answers_the_second_identical_request",  # a picture of the runs screen; the snapshots check the real one
    "quickstart-demo": "test_demo.py::test_readme_quickstart_demo_finds_the_running_server",
    "otlp-live": "test_otlp_live.py::test_the_readme_config_loads_and_exports",
    "recipe-langchain": "test_recipes.py::test_langchain_openai",
    "recipe-pydantic-ai": "test_recipes.py::test_pydantic_ai",
    "recipe-llm-yaml": "test_recipes.py::test_simonw_llm_with_extra_openai_models",
    "recipe-llm-cli": "test_recipes.py::test_simonw_llm_with_extra_openai_models",
    "recipe-anthropic-env": "test_recipes.py::test_anthropic_format_tools_via_anthropic_base_url",
    "recipe-anthropic-sdk": "test_recipes.py::test_anthropic_format_tools_via_anthropic_base_url",
    "recipe-datasette": "test_recipes.py::test_datasette_browses_the_database",
    "install-tool": "test_build.py::test_readme_install_and_build_lines_are_real",
    "build": "test_build.py::test_readme_install_and_build_lines_are_real",
    "storage-toml": "test_storage_bodies.py::test_the_readme_storage_example_is_valid_config",
}


@dataclass
class Example:
    name: str
    lang: str
    text: str


def examples() -> dict[str, Example]:
    found = {}
    for m in re.finditer(r"^( *)<!-- example: ([\w-]+) -->\n\1```(\w*)\n(.*?)^\1```", README.read_text(),
                         re.S | re.M):
        indent, name, lang, body = m.groups()
        assert name not in found, f"two README examples are named {name}"
        text = "\n".join(line[len(indent):] for line in body.splitlines())
        found[name] = Example(name, lang, text)
    return found


def example(name: str) -> Example:
    return examples()[name]


def command_lines(ex: Example) -> list[str]:
    """The commands of a sh block (one a line), or the `$ ` lines of a console block."""
    if ex.lang == "console":
        return [line[2:] for line in ex.text.splitlines() if line.startswith("$ ")]
    return [line for line in ex.text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def strip_comment(line: str) -> str:
    """The command without its trailing `# comment` (a `#` inside quotes is kept, as bash does)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line


def sh(line: str, *, home: Path, port: int | None = None, env: dict | None = None, cwd: Path = ROOT,
       check: bool = True) -> subprocess.CompletedProcess:
    """Runs one README command line in bash, the way a user with an activated venv would."""
    if port is not None:
        line = re.sub(r"\b(localhost|127\.0\.0\.1):4000\b", f"127.0.0.1:{port}", line)
    full_env = {k: v for k, v in os.environ.items() if k not in ("MODELUX_CONFIG_DIR", "MODELUX_TOKEN")}
    full_env.update({"PATH": f"{VENV_BIN}:{os.environ['PATH']}", "MODELUX_HOME": str(home), **(env or {})})
    r = subprocess.run(["bash", "-c", line], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=120)
    if check and r.returncode != 0:
        raise AssertionError(f"README line failed ({r.returncode}): {line}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}")
    return r


def keys_in(doc) -> set[str]:
    if isinstance(doc, dict):
        return set(doc) | {k for v in doc.values() for k in keys_in(v)}
    if isinstance(doc, list):
        return {k for v in doc for k in keys_in(v)}
    return set()


def shape(line: str) -> list[str]:
    """A line with its figures blanked, to compare a README output line with a real one."""
    line = re.sub(r"\d{4}-\d\d-\d\d", "#", line)
    return re.sub(r"(?<![\w-])\$?\d[\d,.]*(ms|s|%)?(?![\w-])", "#", line).split()


def wait_for(fn, timeout: float = 15.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


# -- the inventory -------------------------------------------------------------------------------

def test_every_example_is_exercised():
    found = examples()
    blocks = len(re.findall(r"^ *```", README.read_text(), re.M)) // 2
    assert len(found) == blocks, f"{blocks} fenced blocks, {len(found)} with an `<!-- example: NAME -->` line above"
    ours = Path(__file__).read_text() + (Path(__file__).parent / "test_readme_replay.py").read_text()
    here = set(re.findall(r'(?:example|_console)\("([\w-]+)"\)', ours))
    assert set(found) == here | set(ELSEWHERE), {
        "not exercised": sorted(set(found) - here - set(ELSEWHERE)),
        "exercised but gone from README": sorted((here | set(ELSEWHERE)) - set(found))}
    for where in set(ELSEWHERE.values()):
        module, _, fn = where.partition("::")
        source = (ROOT / "tests" / module).read_text()
        assert not fn or f"def {fn}(" in source, f"{where} is gone"


# -- the two commands and the quickstart: scripts/serve on the embedded demo default --------------

@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`scripts/serve` as the README starts it (headless, on a free port), seeded like the examples."""
    s = ServerProcess(tmp_path_factory.mktemp("demo") / "data")
    s.data_dir.mkdir(parents=True)
    (line,) = command_lines(example("quickstart-serve"))
    assert strip_comment(line) == "scripts/serve"
    s._log = open(s.log_path, "ab")
    env = {**s.env, "MODELUX_HOME": str(s.data_dir)}
    s.proc = subprocess.Popen([str(ROOT / "scripts" / "serve"), "--headless", "--port", str(s.port)], cwd=ROOT,
                              env=env, stdout=s._log, stderr=subprocess.STDOUT)
    wait_for(lambda: _healthy(s), 30, f"scripts/serve to answer:\n{s.log()}")
    _seed_runs(s)
    yield s
    s.stop()


def _healthy(s: ServerProcess) -> bool:
    assert s.proc.poll() is None, s.log()
    try:
        return s.get("/healthz").status_code == 200
    except Exception:
        return False


def _ask(client, run_id: str | None, content: str, model: str = "@executor", **tags):
    t = {"run_id": run_id, **tags} if run_id else tags
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}],
                                          extra_body={"mlx:tags": t}, max_tokens=60)


def _seed_runs(s: ServerProcess) -> None:
    """The runs the runs-section examples name: task-812 and task-807 of research-v2, and others."""
    c = client_for(s)
    _ask(c, "task-812", "Plan the investigation of failed checkouts", "@planner", agent="research-v2")
    _ask(c, "task-812", "Explain the rate limit errors returned by the payment gateway", agent="research-v2")
    _ask(c, "task-812", "Summarise what was found", "@summarizer", agent="research-v2")
    _ask(c, "task-807", "How do I bake sourdough bread at home with a starter?", agent="research-v2")
    _ask(c, "bot-1", "Where is my parcel?", agent="support-bot")
    _ask(c, "untagged-1", "A run without an agent tag")
    _ask(c, None, "A call outside any run")


def test_the_two_commands(demo):
    serve, test = command_lines(example("two-commands"))
    assert strip_comment(serve) == "scripts/serve"  # running: the demo fixture started it
    assert demo.get("/healthz").json()["config"] == "<embedded default>"
    assert strip_comment(test) == "scripts/test"
    r = sh(strip_comment(test) + " --collect-only -q tests/test_readme_examples.py", home=demo.data_dir)
    assert re.search(r"^tests/test_readme_examples.py: \d+$", r.stdout, re.M), r.stdout  # pytest, collecting


def test_quickstart_agent_and_looking_at_its_run(demo):
    snippet = example("quickstart-agent").text
    assert 'base_url="http://127.0.0.1:4000/v1"' in snippet
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(snippet.replace("127.0.0.1:4000", f"127.0.0.1:{demo.port}"), {})
    run_id = out.getvalue().strip()
    assert run_id.startswith("run_")
    run = demo.get(f"/mlx/v1/runs/{run_id}").json()
    assert [s["alias"] for s in run["steps"]] == ["@planner", "@executor"]
    call_id = run["steps"][1]["call_id"]

    env = {"RUN_ID": run_id, "CALL_ID": call_id}
    runs, trace, curl_run, curl_call = [sh(line, home=demo.data_dir, port=demo.port, env=env)
                                        for line in command_lines(example("quickstart-look"))]
    assert run_id in runs.stdout and "task-812" in runs.stdout
    assert trace.stdout.startswith(f"run {run_id}  running  agent=research-v2")
    assert "@planner -> mock/mock-large" in trace.stdout and "attempt 1: mock/mock-small" in trace.stdout
    assert json.loads(curl_run.stdout)["steps"][0]["decision"]
    call = json.loads(curl_call.stdout)
    assert call["call_id"] == call_id and call["request"]["messages"] and call["response"]["choices"]


# -- configuration -------------------------------------------------------------------------------

def test_config_directory_walkthrough(tmp_path):
    lines = command_lines(example("config-init"))
    home = tmp_path / "data"
    init, check, serve, list_, show = lines
    assert "init ./modelux-config" in init and "serve --config-dir ./modelux-config" in serve
    assert "wrote modelux-config/" in sh(init, home=home, cwd=tmp_path).stdout
    assert "@agent-v2 (default)" in sh(check, home=home, cwd=tmp_path).stdout
    with ServerProcess(home, tmp_path / "modelux-config") as srv:  # the serve line, on a free port
        reply = client_for(srv).chat.completions.create(model="@planner", messages=[{"role": "user", "content": "hi"}])
        assert reply.model == "mock-large"
        listing = sh(list_, home=home, cwd=tmp_path).stdout
        assert re.search(r"^@agent-v2 .*default", listing, re.M) and "@agent-v3" in listing
        shown = sh(show, home=home, cwd=tmp_path).stdout
        assert shown.startswith("# @agent-v2") and "[aliases.planner]" in shown


def test_routing_config_example_loads(tmp_path):
    routing = example("config-routing").text
    d = write_config(tmp_path, {
        "modelux.toml": '[routing]\ndefault = "agent-v2"\n[providers.anthropic]\nkind = "anthropic"\n'
                        '[providers.openai]\nkind = "openai"\n',
        "agent-v2.toml": routing})
    cs = load_dir(d)
    planner = cs.routing["agent-v2"].aliases["planner"]
    assert [(t.provider, t.model, t.timeout_s) for t in planner.targets] == [
        ("anthropic", "claude-sonnet-4-5", None), ("openai", "gpt-4.1", 30)]
    assert planner.retries.attempts == 2 and planner.retries.on == ["429", "5xx", "timeout"]
    assert planner.timeout_s == 60 and planner.strategy == "fallback"


# -- runs, traces, analytics, search, the management API -----------------------------------------

def _console(name: str) -> tuple[list[str], list[list[str]]]:
    """A console block's commands, and the output lines README shows under each."""
    cmds, outs = [], []
    for line in example(name).text.splitlines():
        if line.startswith("$ "):
            cmds.append(line[2:])
            outs.append([])
        else:
            outs[-1].append(line)
    return cmds, outs


def test_runs_list(demo):
    (cmd,), (shown,) = _console("runs-list")
    out = sh(cmd, home=demo.data_dir).stdout.split("\n\n")[0].splitlines()  # the table, not the untagged footer
    assert out[0].split() == shown[0].split()  # the same columns
    rows = [line.split() for line in out[1:]]
    assert {"task-812", "task-807"} <= {r[1] for r in rows} and {r[2] for r in rows} == {"research-v2"}
    costs = [float(r[5].lstrip("$")) for r in rows]
    assert costs == sorted(costs, reverse=True)  # --sort cost: highest first
    same = lambda line: shape(line)[:1] + shape(line)[2:]  # noqa: E731 - all but the run id
    assert all(same(line) == same(shown[1]) for line in out[1:]), (out, shown[1])


def test_trace_tree(demo):
    (cmd,), (shown,) = _console("runs-trace")
    out = sh(cmd, home=demo.data_dir).stdout.splitlines()
    assert out[0] == shown[0]  # run task-812  running  agent=research-v2
    assert shape(out[1]) == shape(shown[1])
    assert out[2].startswith("  started ") and out[3] == shown[3] == "  anomalies: none"
    assert out[4].startswith("  by alias: @planner $") and "@executor $" in out[4] and "@summarizer $" in out[4]
    assert out[5].startswith("  by model: mock/mock-large $") and shown[5].startswith("  by model: ")
    assert shape(out[6])[:2] == shape(shown[6])[:2] == ["repeated", "prompt:"] and "of input tokens" in out[6]
    assert out[7].startswith("├─ #1 @planner -> mock/mock-large  ok 200")
    assert out[8].startswith("│    routing: @default ") and " fallback -> mock/mock-large" in out[8]
    assert out[9].startswith("│    └─ attempt 1: mock/mock-large  ok 200")


def test_analytics_table(demo):
    (cmd,), (shown,) = _console("runs-analytics")
    out = sh(cmd, home=demo.data_dir).stdout.splitlines()
    assert out[0].split() == shown[0].split() and out[-1] == shown[-1]
    groups = [line.split()[0] for line in out[1:-1]]
    assert sorted(groups) == ["(none)", "research-v2", "support-bot"]
    research = next(line for line in out if line.startswith("research-v2"))
    assert shape(research)[:3] == ["research-v2", "#", "#"]


def test_analytics_by_model(demo):
    (cmd,), (shown,) = _console("runs-analytics-by-model")
    out = sh(cmd, home=demo.data_dir).stdout.splitlines()
    gap = out.index("")
    assert out[0].split() == shown[0].split() and out[gap + 1].split() == shown[shown.index("") + 1].split()
    models = [line.split() for line in out[gap + 2:]]
    research = {m[1]: m for m in models if m[0] == "research-v2"}
    assert set(research) == {"mock/mock-large", "mock/mock-small"}  # @planner, and @executor / @summarizer
    group_calls = next(int(line.split()[2].replace(",", "")) for line in out[1:gap] if line.startswith("research-v2"))
    assert sum(int(m[2].replace(",", "")) for m in research.values()) == group_calls
    shares = [float(m[-1].rstrip("%")) for m in research.values()]
    assert sum(shares) == pytest.approx(100, abs=1)


def test_full_text_search(demo):
    (cmd,), (shown,) = _console("search-fts")
    out = sh(cmd, home=demo.data_dir).stdout.splitlines()
    assert out[0].split()[1:4] == shown[0].split()[1:4] == ["task-812", "#2", "mock/mock-small"]
    assert out[1] == shown[1]  # Explain the rate limit errors returned by the **payment gateway**


def test_semantic_search(demo):
    (cmd,), _ = _console("search-semantic")
    query = shlex.split(cmd)[3]

    def bread_first():  # the server embeds calls in the background
        r = demo.get("/mlx/v1/search", params={"q": query, "semantic": "1", "limit": "1"})
        return r.status_code == 200 and r.json()["results"] and r.json()["results"][0]["run_id"] == "task-807"

    wait_for(bread_first, 20, "the calls to be embedded")
    out = sh(cmd, home=demo.data_dir).stdout.splitlines()
    assert out[0].split()[1] == "task-807" and "**sourdough** bread" in out[1]


def test_management_api(demo):
    cmds, shown = _console("management-api")
    for cmd, claimed in zip(cmds, shown):
        doc = json.loads(sh(cmd, home=demo.data_dir, port=demo.port).stdout)
        if "runs?" in cmd:
            assert {"task-812", "task-807"} <= {r["run_id"] for r in doc["runs"]}
        elif "runs/task-812" in cmd:
            assert doc["run_id"] == "task-812" and len(doc["steps"]) == 3
        elif "search" in cmd:
            assert [r["run_id"] for r in doc["results"]] == ["task-812"]
        claimed_keys = set(re.findall(r'(?<!: )"(\w+)"', " ".join(claimed)))  # keys, not values
        assert claimed_keys <= keys_in(doc), claimed_keys - keys_in(doc)


# -- budgets, aborts, outcomes, webhooks ---------------------------------------------------------

def test_abort_and_outcome_then_the_sdk_sees_402(demo):
    client = client_for(demo)
    _ask(client, "run-ops", "first step", agent="ops")
    for line in command_lines(example("abort-outcome")):
        if line.startswith("curl"):  # the comment says 204: ask curl for the status
            line = strip_comment(line) + " -s -o /dev/null -w '%{http_code}'"
        r = sh(line, home=demo.data_dir, port=demo.port, env={"RUN_ID": "run-ops"})
        assert not line.startswith("curl") or r.stdout == "204", (line, r.stdout)
    run = demo.get("/mlx/v1/runs/run-ops").json()
    assert run["status"] == "aborted" and run["abort_reason"] == "looping on the same tool"
    assert run["outcome"]["success"] is True and run["outcome"]["score"] == 0.9

    snippet = example("budgets-sdk").text
    assert "...  # stop the agent" in snippet
    caught = []
    scope = {"openai": openai, "prompt": [{"role": "user", "content": "next step"}], "caught": caught,
             "step": lambda prompt: client.chat.completions.create(
                 model="@executor", messages=prompt, extra_body={"mlx:tags": {"run_id": "run-ops"}})}
    wait_for(lambda: _refused(client), 10, "the server to see the CLI abort")
    exec(snippet.replace("...  # stop the agent", "caught.append(e)  # stop the agent"), scope)
    assert caught and caught[0].body["code"] == "run_aborted"


def _refused(client) -> bool:
    try:
        _ask(client, "run-ops", "probe")
    except openai.APIStatusError as e:
        return e.status_code == 402
    return False


@pytest.fixture(scope="module")
def hooked(tmp_path_factory):
    """A server whose modelux.toml is the README's budgets, anomalies and webhooks blocks."""
    tmp = tmp_path_factory.mktemp("hooked")
    receiver = WebhookReceiver().start()
    blocks = [example(n).text for n in ("budgets-toml", "anomalies-toml", "webhooks-toml")]
    body = "\n".join(blocks).replace("http://127.0.0.1:9000/modelux", receiver.url)
    cfg = write_config(tmp / "config", {
        "modelux.toml": '[routing]\ndefault = "default"\n[providers.mock]\nkind = "mock"\n' + body,
        "default.toml": '[aliases.executor]\ntargets = [{ provider = "mock", model = "mock-small" }]\n'})
    srv = ServerProcess(tmp / "data", cfg, env={"MODELUX_WEBHOOK_SECRET": "whsec-readme"}).start()
    yield srv, receiver
    srv.stop()
    receiver.stop()


def test_webhook_signature_check_and_the_webhooks_command(hooked, monkeypatch):
    srv, receiver = hooked
    _ask(client_for(srv), "run-hook", "one step", agent="research-v2")
    srv.cli("abort", "run-hook", "--reason", "operator stop")
    hit = wait_for(lambda: receiver.hits, 15, "the run.aborted delivery")[0]
    assert hit.headers["x-modelux-event"] == "run.aborted"

    check = example("webhooks-verify").text
    monkeypatch.setenv("MODELUX_WEBHOOK_SECRET", "whsec-readme")  # the receiver's copy of the secret
    request = types.SimpleNamespace(headers={"X-Modelux-Signature": hit.headers["x-modelux-signature"]})
    exec(check, {"raw_body": hit.body, "request": request})
    with pytest.raises(AssertionError):  # and a forged body fails it
        exec(check, {"raw_body": hit.body + b" ", "request": request})

    text_line, json_line = command_lines(example("webhooks-cli"))
    env = {"MODELUX_CONFIG_DIR": str(srv.config_dir)}

    def delivered():
        out = sh(text_line, home=srv.data_dir, env=env).stdout
        return out if "delivered" in out else None

    out = wait_for(delivered, 10, "the delivery to be recorded")
    assert "run.aborted" in out and receiver.url in out
    doc = json.loads(sh(json_line, home=srv.data_dir, env=env).stdout)
    claimed = set(re.findall(r'"(\w+)"', json_line))
    assert claimed <= keys_in(doc) and doc["events"][0]["deliveries"][0]["status"] == "delivered"
