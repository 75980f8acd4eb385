"""export: OTLP/HTTP traces with GenAI attributes to a real receiver; JSONL lines per call."""
from __future__ import annotations

import json

import pytest

from .conftest import client_for
from .fakes.otlp_collector import OtlpCollector as Collector


def attrs(span: dict) -> dict:
    return {a["key"]: next(iter(a["value"].values())) for a in span["attributes"]}


@pytest.fixture(scope="module")
def recorded(default_server):
    c = client_for(default_server)
    for i in range(3):
        c.chat.completions.create(model="@planner" if i == 0 else "@executor", messages=[{"role": "user", "content": f"q{i}"}],
                                  extra_body={"mlx:tags": {"run_id": "exp-run", "agent": "exporter"}})
    c.chat.completions.create(model="@executor", messages=[{"role": "user", "content": "no run"}])
    default_server.get("/mlx/v1/runs/exp-run")  # barrier: everything is written
    return default_server


def test_otlp_export_sends_genai_spans_with_a_run_root(recorded):
    col = Collector(fail_first=1)  # a receiver that fails once: the exporter retries
    out = recorded.cli("export", "--otlp", col.url + "/", "--batch", "2", "--header", "x-team=ml")
    spans = col.spans()
    roots = [s for s in spans if attrs(s)["gen_ai.operation.name"] == "invoke_agent"]
    exported = len(spans) - len(roots)  # the 4 chat calls, plus the search indexer's embeddings calls
    assert f"exported {exported} calls" in out.stderr and exported >= 4
    assert all(p["path"] == "/v1/traces" for p in col.posts) and len(col.posts) == (exported + 1) // 2
    assert col.posts[0]["headers"]["x-team"] == "ml"
    assert col.posts[0]["content_type"] == "application/x-protobuf"  # the default protocol
    calls = [s for s in spans if attrs(s)["gen_ai.operation.name"] == "chat"]
    assert len(calls) == 4 and len(roots) == 1
    assert all(attrs(s)["modelux.tag.modelux"] == "semantic-index" for s in spans
               if attrs(s)["gen_ai.operation.name"] == "embeddings")
    root = roots[0]
    in_run = [s for s in calls if attrs(s).get("modelux.run_id") == "exp-run"]
    assert len(in_run) == 3 and all(s["traceId"] == root["traceId"] and s["parentSpanId"] == root["spanId"] for s in in_run)
    a = attrs(in_run[0])
    assert a["gen_ai.provider.name"] == "mock" and a["gen_ai.request.model"] == "@planner"
    assert a["gen_ai.response.model"] == "mock-large" and int(a["gen_ai.usage.input_tokens"]) > 0
    assert a["gen_ai.response.finish_reasons"] == {"values": [{"stringValue": "stop"}]}
    assert a["modelux.cost_usd"] > 0 and a["modelux.tag.agent"] == "exporter"
    assert in_run[0]["events"][0]["name"] == "modelux.attempt"
    assert attrs(root)["modelux.calls"] == "3" and root["name"] == "invoke_agent exporter"
    assert len({s["spanId"] for s in calls}) == 4 and all(len(s["traceId"]) == 32 for s in spans)


def test_otlp_export_reports_a_receiver_that_refuses(recorded):
    col = Collector()
    col.fail_with = 400
    out = recorded.cli("export", "--otlp", col.url, check=False)
    assert out.returncode == 1 and "HTTP 400" in out.stderr and "0 calls" in out.stderr


def test_jsonl_export_one_line_per_call(recorded, tmp_path):
    f = tmp_path / "calls.jsonl"
    recorded.cli("export", "--jsonl", str(f), "--since", "1h")
    lines = [json.loads(line) for line in f.read_text().splitlines()]
    run = [x for x in lines if x["run_id"] == "exp-run"]
    assert len(run) == 3 and run[0]["alias"] == "@planner" and run[0]["request"]["messages"][0]["content"] == "q0"
    assert run[0]["response"]["choices"][0]["message"]["content"] and "mlx:tags" in run[0]["request"]
    again = [json.loads(x) for x in recorded.cli("export", "--jsonl", "-").stdout.splitlines()]
    ours = lambda rows: [x["call_id"] for x in rows if x["tags"].get("modelux") != "semantic-index"]  # noqa: E731
    assert ours(again) == ours(lines)  # the indexer may add its own calls in between


def test_export_bad_input(recorded, tmp_path):
    assert recorded.cli("export", "--jsonl", "-", "--since", "5x", check=False).returncode == 2
    import subprocess
    import sys

    from .server import ROOT
    out = subprocess.run([sys.executable, "-m", "modelux_local", "export", "--jsonl", "-", "--data-dir",
                          str(tmp_path / "nope")], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 1 and "no database at" in out.stderr


def test_export_usage_mistakes_and_seq(recorded, tmp_path):
    bad = [("--jsonl", "-", "--batch", "0"), ("--jsonl", "-", "--header", "k=v"), ("--otlp", "not-a-url")]
    for args in bad:
        r = recorded.cli("export", *args, check=False)
        assert r.returncode == 2 and r.stderr.strip(), args
    r = recorded.cli("export", "--jsonl", str(tmp_path / "no" / "such" / "dir.jsonl"), check=False)
    assert r.returncode == 1 and "cannot write" in r.stderr and "Traceback" not in r.stderr
    lines = [json.loads(x) for x in recorded.cli("export", "--jsonl", "-").stdout.splitlines()]
    assert [x["seq"] for x in lines if x["run_id"] == "exp-run"] == [1, 2, 3]


def test_readme_export_example_runs(recorded, tmp_path):
    from .test_readme_examples import examples
    col = Collector()
    lines = [line.split("#")[0].split() for line in examples()["export-cli"].text.splitlines() if line.strip()]
    for argv in lines:
        assert argv[:2] == ["modelux-local", "export"]
        argv = [col.url if a == "http://127.0.0.1:4318" else str(tmp_path / a) if a.endswith(".jsonl") else a
                for a in argv[2:]]
        recorded.cli("export", *argv)
    assert len(col.spans()) >= 5
    assert len((tmp_path / "calls.jsonl").read_text().splitlines()) >= 4


def test_since_and_reexport_give_the_same_spans(make_server, tmp_path):
    """--since leaves out a run moved two days back; exporting the same calls twice sends the same
    trace and span ids (what lets a backend de-duplicate them)."""
    from ._readside import age_run

    srv = make_server(None, name="export-since")
    c = client_for(srv)
    for run in ("exp-old", "exp-new", "exp-new"):
        c.chat.completions.create(model="@executor", messages=[{"role": "user", "content": run}],
                                  extra_body={"mlx:tags": {"run_id": run}})
    age_run(srv, "exp-old", hours=48)
    runs = lambda rows: sorted(x["run_id"] for x in rows if x["run_id"])  # noqa: E731
    rows = [json.loads(x) for x in srv.cli("export", "--jsonl", "-").stdout.splitlines()]
    assert runs(rows) == ["exp-new", "exp-new", "exp-old"]
    rows = [json.loads(x) for x in srv.cli("export", "--jsonl", "-", "--since", "24h").stdout.splitlines()]
    assert runs(rows) == ["exp-new", "exp-new"]
    col = Collector()

    def run_spans() -> set:
        """(trace id, span id) of every span in exp-new's trace (the indexer's own calls may come and go)."""
        trace = {s["traceId"] for s in col.spans() if attrs(s).get("modelux.run_id") == "exp-new"}
        assert len(trace) == 1, col.spans()
        return {(s["traceId"], s["spanId"]) for s in col.spans() if s["traceId"] in trace}

    srv.cli("export", "--otlp", col.url, "--since", "24h")
    assert "exp-old" not in {attrs(s).get("modelux.run_id") for s in col.spans()}
    first = run_spans()
    col.posts.clear()
    srv.cli("export", "--otlp", col.url, "--since", "24h")
    assert run_spans() == first and len(first) == 3  # the run's root span and its two calls, same ids
