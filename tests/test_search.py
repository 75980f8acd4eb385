"""`logs search` and GET /mlx/v1/search: FTS5 phrases and filters, bad syntax, and --semantic
through the @embedder alias (the mock's deterministic embedder), via a real server."""
from __future__ import annotations

import json
import time
import uuid

import pytest

from ._readside import CONFIG, age_run, call, cli_json
from .conftest import client_for

TOPICS = {
    "bread": "How do I bake sourdough bread at home with a starter?",
    "ratelimit": "Explain the rate limit errors returned by the payment gateway",
    "haiku": "Write a haiku about autumn leaves falling in the park",
    "funds": "Compare index funds and government bonds for retirement savings",
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from .server import ServerProcess, write_config

    base = tmp_path_factory.mktemp("search")
    s = ServerProcess(base / "data", write_config(base / "config", CONFIG))
    s.start()
    client = client_for(s)
    run_a, run_b = f"sa-{uuid.uuid4().hex[:6]}", f"sb-{uuid.uuid4().hex[:6]}"
    ids, texts = {}, {}
    for name, prompt in TOPICS.items():
        run = run_a if name in ("bread", "ratelimit") else run_b
        cid, resp = call(client, "@executor", prompt, stream=(name == "haiku"), run_id=run, agent=f"agent-{name}")
        ids[name] = cid
        texts[name] = resp["text"] if isinstance(resp, dict) else resp.choices[0].message.content
    yield s, ids, texts, run_a, run_b
    s.stop()


def test_a_phrase_from_a_response_finds_its_call(world):
    server, ids, texts, run_a, _ = world
    for name in ("ratelimit", "haiku"):  # haiku was streamed: its assembled answer is indexed
        words = texts[name].split(":")[0].split()[-4:]  # the answer's own words, not the prompt's form
        phrase = '"' + " ".join(words) + '"'
        doc = cli_json(server, "logs", "search", phrase)
        assert doc["results"][0]["call_id"] == ids[name], (phrase, doc)
        assert "**" in doc["results"][0]["snippet"]
    api = server.get("/mlx/v1/search", params={"q": '"payment gateway"'}).json()
    hit = api["results"][0]
    assert (hit["call_id"], hit["run_id"], hit["seq"], hit["model"]) == (ids["ratelimit"], run_a, 2, "mock-small")
    assert "**payment gateway**" in hit["snippet"] and hit["score"] > 0


def test_filters_by_run_tag_and_time(world):
    server, ids, _, run_a, run_b = world
    both = {r["call_id"] for r in cli_json(server, "logs", "search", "about")["results"]}
    assert both == set(ids.values())
    in_b = cli_json(server, "logs", "search", "about", "--run-id", run_b)["results"]
    assert {r["call_id"] for r in in_b} == {ids["haiku"], ids["funds"]}
    tagged = cli_json(server, "logs", "search", "about", "--tag", "agent=agent-bread")["results"]
    assert [r["call_id"] for r in tagged] == [ids["bread"]]
    api = server.get("/mlx/v1/search", params={"q": "about", "run_id": run_a, "tag": "agent:agent-ratelimit"}).json()
    assert [r["call_id"] for r in api["results"]] == [ids["ratelimit"]]
    human = server.cli("logs", "search", "sourdough").stdout
    assert human.startswith(f"{ids['bread']}  {run_a} #1  mock/mock-small") and "**sourdough**" in human


def test_bad_search_syntax_is_a_clear_error(world):
    server = world[0]
    r = server.cli("logs", "search", '"unterminated phrase', check=False)
    assert r.returncode == 2 and "cannot parse search query" in r.stderr and "Traceback" not in r.stderr
    r = server.cli("logs", "search", "AND OR", check=False)
    assert r.returncode == 2 and "cannot parse search query" in r.stderr
    api = server.get("/mlx/v1/search", params={"q": "bread AND"})
    assert api.status_code == 400 and api.json()["error"]["code"] == "bad_search_query"
    assert server.get("/mlx/v1/search").status_code == 400


def test_semantic_search_finds_a_paraphrase_first(world):
    server, ids, _, _, _ = world
    query = "baking sourdough at home using a starter"
    assert cli_json(server, "logs", "search", query)["results"] == []  # no literal match for every word
    deadline = time.monotonic() + 15
    while True:  # the server embeds calls in the background, off the request path
        r = server.get("/mlx/v1/search", params={"q": query, "semantic": "1"})
        if r.status_code == 200 and len(r.json()["results"]) == len(ids):
            break
        assert time.monotonic() < deadline, r.text
        time.sleep(0.2)
    assert r.json()["results"][0]["call_id"] == ids["bread"], r.json()
    doc = cli_json(server, "logs", "search", query, "--semantic")
    assert doc["model"] == "mock/mock-embed" and doc["results"][0]["call_id"] == ids["bread"]
    assert doc["results"][0]["score"] > doc["results"][1]["score"]
    money = cli_json(server, "logs", "search", "saving for retirement", "--semantic")["results"][0]
    assert money["call_id"] == ids["funds"]


def test_the_indexing_jobs_own_embedding_calls_are_recorded_and_priced(make_server):
    """What semantic search costs shows up as calls (no run, tag modelux=semantic-index), and those
    calls are never embedded in turn."""
    import time as _time

    from modelux_local.storage.db import connect as _connect

    srv = make_server(None, name="embedcost")
    from .conftest import client_for as _client_for
    c = _client_for(srv)
    for i in range(3):
        c.chat.completions.create(model="@executor", messages=[{"role": "user", "content": f"index me {i}"}])
    conn = _connect(srv.db_path)
    q = "SELECT count(*), sum(cost_nusd), sum(input_tokens) FROM calls WHERE json_extract(tags, '$.modelux') = 'semantic-index'"
    deadline = _time.monotonic() + 20
    while (row := conn.execute(q).fetchone())[0] == 0:
        assert _time.monotonic() < deadline, "the indexing job recorded no call"
        _time.sleep(0.2)
    _time.sleep(3)  # a few more rounds of the job: its own calls must not be embedded again
    n, cost, tokens = conn.execute(q).fetchone()
    assert n == row[0] and cost > 0 and tokens > 0
    prov, model, alias, run_id = conn.execute("SELECT provider, model, alias, run_id FROM calls WHERE "
                                              "json_extract(tags, '$.modelux') = 'semantic-index'").fetchone()
    assert (prov, model, alias, run_id) == ("mock", "mock-embed", "@embedder", None)


def test_since_leaves_out_calls_older_than_the_window(world):
    """Two calls with the same rare word, one of them moved two days back: --since 24h finds only
    the recent one, no --since finds both (CLI and API). Last of the `world` tests: it adds calls."""
    server = world[0]
    client = client_for(server)
    old_run, new_run = f"old-{uuid.uuid4().hex[:6]}", f"new-{uuid.uuid4().hex[:6]}"
    old, _ = call(client, "@executor", "the zeppelin timetable for Friedrichshafen", run_id=old_run, suite="since")
    new, _ = call(client, "@executor", "the zeppelin timetable for Konstanz", run_id=new_run, suite="since")
    age_run(server, old_run, hours=48)
    hits = lambda *a: {r["call_id"] for r in cli_json(server, "logs", "search", "zeppelin", *a)["results"]}  # noqa: E731
    assert hits() == {old, new}
    assert hits("--since", "24h") == {new}
    assert hits("--since", "3d") == {old, new}
    api = server.get("/mlx/v1/search", params={"q": "zeppelin", "since": "24h"}).json()["results"]
    assert [r["call_id"] for r in api] == [new]


def test_extract_text_reads_the_usual_shapes_and_any_other_the_same_way():
    """The typed fast path (chat, Messages, embeddings shapes) and the generic path agree: odd
    shapes (a message that is not an object, a string `choices`) fall back and give the same text."""
    from modelux_local.storage.search import extract_text

    req = {"model": "m", "system": [{"type": "text", "text": "sys"}], "tools": [{"type": "function"}],
           "messages": [{"role": "user", "content": ["a", {"type": "text", "text": "b"}, {"type": "tool_result",
                                                                                       "content": [{"text": "c"}]},
                                                   {"type": "tool_use", "input": {"q": 1}}]},
                        {"role": "assistant", "content": None,
                         "tool_calls": [{"function": {"name": "f", "arguments": '{"x":1}'}}, {"id": "no-fn"}]}]}
    resp = {"id": "x", "usage": {"prompt_tokens": 1},
            "choices": [{"message": {"content": "answer", "tool_calls": [{"function": {"name": "g"}}]}},
                        {"message": None}],
            "content": [{"type": "text", "text": "anthropic"}], "error": {"message": "boom"}}
    prompt, answer = "sys\na\nb\nc\n{\"q\":1}\nf {\"x\":1}", "answer\ng\nanthropic\nboom"
    assert extract_text(json.dumps(req).encode(), json.dumps(resp).encode()) == (prompt, answer)
    odd_req = {**req, "messages": [*req["messages"], "not an object", 5]}
    odd_resp = {**resp, "choices": [*resp["choices"], {"message": "text"}, 7]}
    assert extract_text(json.dumps(odd_req).encode(), json.dumps(odd_resp).encode()) == (prompt, answer)
    assert extract_text(b'{"input": ["e1", "e2"]}', b'{"data": [{"embedding": [0.1]}]}') == ("e1\ne2", "")
    assert extract_text(b"not json", b"[1, 2]") == ("", "")
    assert extract_text(None, b'{"choices": "x"}') == ("", "")
