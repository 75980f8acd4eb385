"""README examples, continued: replay and promotion on configs/example, and the figures and
flags the README states. The helpers and the inventory live in test_readme_examples.py."""
from __future__ import annotations

import json
import re

import pytest

from modelux_local.config.loader import load_dir

from .conftest import client_for
from .server import ROOT, ServerProcess, write_config
from .test_readme_examples import EXAMPLE_CONFIG, README, _ask, command_lines, example, examples, sh, strip_comment

# -- replay and promotion on configs/example ------------------------------------------------------

@pytest.fixture(scope="module")
def replay_env(tmp_path_factory):
    """configs/example as shipped, served; runs run_42..run_44 recorded through it (agent-shaped)."""
    srv = ServerProcess(tmp_path_factory.mktemp("replay") / "data", EXAMPLE_CONFIG).start()
    client = client_for(srv)
    for rid in ("run_42", "run_43", "run_44"):
        plan = _ask(client, rid, f"Plan task {rid}", "@planner", agent="research-v2")
        for i in (1, 2):
            _ask(client, rid, f"Do step {i}: {plan.choices[0].message.content[:40]}", agent="research-v2")
        _ask(client, rid, "Summarise the steps", "@summarizer", agent="research-v2")
    yield srv
    srv.stop()


def test_replay_walkthrough(replay_env):
    srv = replay_env
    env = {}
    out = None
    for line in command_lines(example("replay-simulate")):
        if line.startswith("export "):
            key, _, value = strip_comment(line)[len("export "):].partition("=")
            env[key] = value
        elif strip_comment(line) == "modelux serve":
            assert env["MODELUX_CONFIG_DIR"] == "configs/example"  # what the fixture serves
        else:
            out = sh(line, home=srv.data_dir, env=env).stdout
    shown = example("replay-report").text.splitlines()
    got = out.splitlines()
    assert got[0] == shown[0]  # Replaying last 24h of tagged agent traffic against @agent-v3...
    def labels(lines):  # each line's leading words: `mean cost/run`, `replay id`, `CURRENT`, `[promote]`
        return [re.split(r"\s{2,}", line.strip())[0] for line in lines if line.strip()]

    assert labels(got) == labels(shown[:1] + shown[1:])
    assert re.search(r"runs_replayed\s+3\b", out) and "3 of 3 judged runs accepted" in out
    replay_id = re.search(r"replay id\s+(\w+)", out).group(1)

    for line in command_lines(example("replay-select")):
        r = sh(line, home=srv.data_dir, env=env, check=False)
        if "--until 24h" in line:  # nothing was recorded yesterday in this fresh database
            assert r.returncode == 1 and "no recorded runs to replay" in r.stderr, r.stderr
            continue
        assert r.returncode == 0, (line, r.stderr)
        if "--json" in line:
            doc = json.loads(r.stdout)
            assert doc["quality"]["evaluator"] == "judge" and doc["runs_replayed"] == 3
        elif "--run-id" in line:
            assert re.search(r"runs_replayed\s+2\b", r.stdout)
        elif "--mode reprice" in line:
            assert "estimate" in r.stdout

    listing, show, show_run = [line.replace("3e9afe29", replay_id) for line in command_lines(example("replays-show"))]
    assert replay_id in sh(listing, home=srv.data_dir, env=env).stdout
    again = sh(show, home=srv.data_dir, env=env).stdout
    assert re.search(r"runs_replayed\s+3\b", again) and f"replay id       {replay_id}" in again
    steps = sh(show_run, home=srv.data_dir, env=env).stdout
    assert "mock/mock-pro" in steps and "mock/mock-lite" in steps  # the executor moved

    (promote,) = [line.replace("3e9afe29", replay_id) for line in command_lines(example("promote"))]
    promoted = sh(promote, home=srv.data_dir, env=env).stdout.splitlines()
    pictured = example("promote-output").text.splitlines()
    pattern = re.escape(pictured[0]).replace("55faf749cb47", r"\w+").replace("b8d8cfa64eb3", r"\w+")
    assert re.fullmatch(pattern, promoted[0]), promoted[0]
    assert promoted[1].split()[:2] == ["audit", "#1"] and f"replay {replay_id}" in promoted[1]
    assert promoted[2].startswith("  live now in the running server")
    rollback = next(line for line in pictured if "config rollback" in line)
    assert rollback in promoted
    rollback = rollback.strip()
    back = sh(rollback, home=srv.data_dir, env=env).stdout
    assert back.startswith("rolled back @agent-v2: now serves version 1")
    history = sh("modelux config history", home=srv.data_dir, env=env).stdout
    assert "promote @agent-v3 as @agent-v2" in history and "rollback @agent-v2" in history


def test_promotion_gate_example_loads(tmp_path):
    block = example("promotion-toml").text
    shipped = (EXAMPLE_CONFIG / "modelux.toml").read_text()
    server_toml = shipped[: shipped.index("[promotion]")] + block
    d = write_config(tmp_path, {"modelux.toml": server_toml,
                                **{p.name: p.read_text() for p in EXAMPLE_CONFIG.glob("agent-*.toml")}})
    gate = load_dir(d).server.promotion
    assert (gate.max_success_drop_pp, gate.max_p95_latency_increase_pct, gate.max_error_rate_increase_pp) == (2, 25, 1)
    assert gate.embedder == "@embedder" and gate.judge == "@judge" and gate.judge_rubric.startswith("Which answer")


# -- figures stated in prose ---------------------------------------------------------------------

def test_the_webhook_retry_span_stated_is_the_schedule():
    from modelux_local.analytics.webhooks import MAX_ATTEMPTS, backoff_s

    stated = re.search(r"for (\d+) attempts \(about (\d+) minutes\)", README.read_text())
    assert stated, "README budgets section: the webhook retry sentence changed"
    attempts, minutes = int(stated.group(1)), int(stated.group(2))
    assert attempts == MAX_ATTEMPTS
    assert round(sum(backoff_s(n) for n in range(1, attempts)) / 60) == minutes


def _cli_options() -> tuple[set[str], set[str]]:
    """Every command path (`config promote`) and every option string of the modelux-local parser."""
    import argparse

    from modelux_local import cli

    commands, options = set(), set()

    def walk(parser, path):
        for action in parser._actions:
            options.update(o for o in action.option_strings if o.startswith("--"))
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    commands.add(" ".join([*path, name]))
                    walk(sub, [*path, name])

    walk(cli.build_parser(), [])
    return commands, options


def test_commands_and_flags_named_in_the_readme_exist():
    text = README.read_text()
    commands, options = _cli_options()
    bench = "\n".join(p.read_text() for p in (ROOT / "bench").glob("*.py"))
    scripts = "\n".join(p.read_text() for p in (ROOT / "scripts").iterdir() if p.is_file())
    spans = re.findall(r"`([^`\n]+)`", text) + [line for e in examples().values() for line in e.text.splitlines()]
    other_tools = ("datasette ", "pip ", "uv ", "pipx ", "llm ", "claude")  # recipes: their flags, not ours
    unknown = {f for span in spans if not span.lstrip().startswith(other_tools)
               for f in re.findall(r"(?<![\w-])--[a-z][a-z-]*", span)
               if f not in options and f'"{f}"' not in bench and f'"{f}"' not in scripts}
    assert not unknown, f"flags in README that no command takes: {sorted(unknown)}"
    for span in spans:
        for m in re.finditer(r"(?:^|\$ |\s)modelux(?:-local)? ([a-z]+)(?: ([a-z]+))?", span):
            cmd, sub = m.group(1), m.group(2)
            assert cmd in commands, span
            if any(c.startswith(cmd + " ") for c in commands):  # a group: config, replays, logs
                assert f"{cmd} {sub}" in commands, span
    from bench.run import SECTIONS

    for section in re.findall(r"scripts/bench --only (\w+)", text):
        assert section in SECTIONS, section
