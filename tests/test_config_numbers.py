"""Config numbers are finite and in range, named by file, line and key (issue 14, D6).

The numeric keys are found by walking the schema's types, so a key added later is covered by
the property test without a line here."""
from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import msgspec.inspect as mi
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelux_local.config.loader import load_dir
from modelux_local.config.schema import RoutingConfig, ServerConfig
from modelux_local.errors import ConfigError

from .server import ROOT, write_config

SERVER_BASE = {"providers": {"mock": {"kind": "mock", "models": {"m": {}}}}, "budgets": [{"match": {"agent": "a"}}],
               "prices": {"p/m": {"input": 1.0}}, "webhooks": [{"url": "http://127.0.0.1:9/hook"}]}
ROUTING_BASE = {"aliases": {"x": {"targets": [{"provider": "mock", "model": "m"}], "retries": {}}}}


def numeric_keys(info, base, path=()):
    """(path, info) of every int/float field reachable from `base`'s shape."""
    for f in info.fields:
        t = f.type
        if isinstance(t, mi.UnionType):
            t = next((x for x in t.types if not isinstance(x, mi.NoneType)), t)
        if isinstance(t, (mi.IntType, mi.FloatType)):
            yield (*path, f.name), t
        elif isinstance(t, mi.StructType):
            yield from numeric_keys(t, base.get(f.name, {}), (*path, f.name))
        elif isinstance(t, mi.DictType) and isinstance(t.value_type, mi.StructType) and f.name in base:
            k = next(iter(base[f.name]))
            yield from numeric_keys(t.value_type, base[f.name][k], (*path, f.name, k))
        elif isinstance(t, mi.ListType) and isinstance(t.item_type, mi.StructType) and f.name in base:
            yield from numeric_keys(t.item_type, base[f.name][0], (*path, f.name, 0))


SERVER_KEYS = list(numeric_keys(mi.type_info(ServerConfig), SERVER_BASE))
ROUTING_KEYS = list(numeric_keys(mi.type_info(RoutingConfig), ROUTING_BASE))


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")  # TOML forbids a raw DEL
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{ " + ", ".join(f"{json.dumps(str(k))} = {toml_value(x)}" for k, x in v.items()) + " }"


def render(doc: dict) -> str:
    """One `key = value` line per top-level key, nested values as inline tables."""
    return "".join(f"{k} = {toml_value(v)}\n" for k, v in doc.items())


def put(doc: dict, path: tuple, value) -> dict:
    doc = copy.deepcopy(doc)
    node = doc
    for p in path[:-1]:
        node = node.setdefault(p, {}) if isinstance(node, dict) else node[p]
    node[path[-1]] = value
    return doc


def load_with(server: dict, routing: dict) -> tuple[Path, object]:
    d = Path(tempfile.mkdtemp(prefix="cfgprop"))
    write_config(d, {"modelux.toml": render(server), "main.toml": render(routing)})
    return d, load_dir(d)


@pytest.mark.parametrize("server,routing,line,key,needle", [
    ('[[budgets]]\nmatch = { agent = "a" }\nmax_cost_usd = nan\n', None, 5, "max_cost_usd", "must be finite"),
    ('[limits]\nmax_body_mb = inf\n', None, 4, "max_body_mb", "must be finite"),
    ('[prices."p/m"]\ninput = nan\n', None, 4, "input", "must be finite"),
    ('[prices."p/m"]\ninput = -0.5\n', None, 4, "input", ">= 0.0"),
    ('[[budgets]]\nmax_calls = -5\n', None, 4, "max_calls", ">= 0"),
    ('[[budgets]]\nwarn_at = 1.5\n', None, 4, "warn_at", "<= 1"),
    ('[runs]\nidle_timeout_s = 0\n', None, 4, "idle_timeout_s", "> 0"),
    (None, '[aliases.x]\ntargets = [{ provider = "mock", model = "m" }]\nretries = { attempts = 1024 }\n', 3,
     "attempts", "<= 100"),
    (None, '[aliases.x]\ntargets = [{ provider = "mock", model = "m", weight = -inf }]\n', 2, "weight",
     "must be finite"),
])
def test_bad_numbers_are_refused_with_file_line_and_key(tmp_path, server, routing, line, key, needle):
    d = write_config(tmp_path, {"modelux.toml": '[providers.mock]\nkind = "mock"\n' + (server or ""),
                                "main.toml": routing or '[aliases.x]\ntargets = [{ provider = "mock", model = "m" }]\n'})
    with pytest.raises(ConfigError) as e:
        load_dir(d)
    assert e.value.key == key and e.value.line == line and needle in e.value.message, e.value.message
    out = subprocess.run([sys.executable, "-m", "modelux_local", "config", "check", str(d)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and f":{line}: " in out.stderr and key in out.stderr, out.stderr


def test_the_walk_finds_the_numeric_keys():
    keys = {p[-1] for p, _ in SERVER_KEYS + ROUTING_KEYS}
    assert {"port", "max_cost_usd", "max_calls", "warn_at", "input", "max_body_mb", "latency_ms", "attempts",
            "weight", "backoff_ms", "timeout_s", "idle_timeout_s"} <= keys
    for path, t in SERVER_KEYS + ROUTING_KEYS:  # every numeric key has bounds (a type from config/schema.py)
        bounds = [getattr(t, a, None) for a in ("gt", "ge", "lt", "le")]
        assert any(b is not None for b in bounds[:2]) and any(b is not None for b in bounds[2:]) \
            or path[-1] == "seed", f"{'.'.join(map(str, path))} has no bounds"


EXAMPLES = {"n": 0}
values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(), st.integers(min_value=-2**70, max_value=2**70),
    st.booleans(), st.text(max_size=5), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(["a", "b"]), st.integers(), max_size=1),
    st.sampled_from([0, -1, 1, 2**53, 2**53 + 1, 2**63, 1e15, 1e16, 5e-324, -0.0, 65535, 65536]))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.sampled_from(SERVER_KEYS + ROUTING_KEYS), value=values)
def test_random_numbers_load_or_are_refused_naming_file_and_key(which, value):
    EXAMPLES["n"] += 1
    path, _ = which
    in_server = which in SERVER_KEYS
    server = put(SERVER_BASE, path, value) if in_server else SERVER_BASE
    routing = ROUTING_BASE if in_server else put(ROUTING_BASE, path, value)
    try:
        d, cs = load_with(server, routing)
    except ConfigError as e:
        assert e.file and e.file.endswith("modelux.toml" if in_server else "main.toml"), (e.file, e.message)
        assert e.key == path[-1], (path, value, e.key, e.message)
        assert e.line is not None, e.message
        return
    node = cs.server if in_server else cs.routing["main"]
    for p in path:
        node = node[p] if isinstance(node, (dict, list)) else getattr(node, p)
    assert isinstance(node, (int, float)) and not isinstance(node, bool) and math.isfinite(node)
    assert node == value


def test_zz_report_example_count():
    print(f"\nhypothesis: {EXAMPLES['n']} config examples")
    assert EXAMPLES["n"] >= 100
