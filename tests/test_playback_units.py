"""The playback room's pure pieces: normalisation, the ordered matcher and its miss message, answers
in the other stream shape, the cassette file (versioned header, line-numbered errors, atomic writes)."""
from __future__ import annotations

import asyncio
import json

import msgspec
import pytest

from modelux_local.playback import CassetteError, Entry, load
from modelux_local.playback.answers import as_result, as_stream, chunks_of
from modelux_local.playback.format import Cassette, new_header
from modelux_local.playback.matcher import DevCache, Matcher
from modelux_local.playback.normalise import RULES, key_of, normalise
from modelux_local.storage.record_rows import assemble_stream


def chat(tool_id: str, **extra) -> dict:
    return {"model": "@planner", "messages": [
        {"role": "user", "content": "look it up"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": tool_id, "type": "function",
                                                                "function": {"name": "lookup", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": tool_id, "content": "42"}], **extra}


def test_volatile_keys_and_generated_ids_do_not_change_the_key():
    a = normalise("chat", chat("call_abc", stream=True, stream_options={"include_usage": True}, user="u1",
                               **{"mlx:tags": {"run_id": "r1"}}))
    b = normalise("chat", chat("call_xyz", user="u2", **{"mlx:tags": {"run_id": "r2"}}))
    assert a == b and key_of("chat", a) == key_of("chat", b)
    assert a["messages"][1]["tool_calls"][0]["id"] == a["messages"][2]["tool_call_id"] == "<id:1>"
    assert key_of("chat", a) != key_of("chat", normalise("chat", chat("call_abc", temperature=0.2)))
    assert key_of("chat", a) != key_of("messages", a)  # the endpoint is part of the key
    # key order in the body does not matter
    assert key_of("embeddings", normalise("embeddings", {"model": "@e", "input": "x"})) == \
        key_of("embeddings", normalise("embeddings", {"input": "x", "model": "@e"}))


def test_anthropic_tool_use_ids_and_metadata_are_normalised():
    def msg(tid: str, uid: str) -> dict:
        return {"model": "@planner", "max_tokens": 10, "metadata": {"user_id": uid}, "messages": [
            {"role": "assistant", "content": [{"type": "tool_use", "id": tid, "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tid, "content": "ok"}]}]}
    assert normalise("messages", msg("toolu_1", "a")) == normalise("messages", msg("toolu_9", "b"))


def test_every_endpoint_has_a_rule_and_an_unknown_one_is_named():
    assert set(RULES) == {"chat", "embeddings", "messages", "responses"}
    with pytest.raises(ValueError, match="no playback rule for endpoint 'images'"):
        normalise("images", {})


def entry(content: str, ask: str = "hi", **kw) -> Entry:
    body = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-x",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
    return Entry("chat", "@planner", normalise("chat", {"model": "@planner", "messages": [
        {"role": "user", "content": ask}], **kw}), response=msgspec.json.encode(body), answered_by="up/gpt-x")


def test_identical_requests_in_recorded_order_per_run_then_a_miss():
    m = Matcher([entry("one"), entry("two"), entry("other", ask="bye")], "c.cassette")
    k = key_of("chat", entry("").request)
    assert [json.loads(m.take(k, "r1").response)["choices"][0]["message"]["content"] for _ in range(2)] == ["one", "two"]
    assert m.take(k, "r1") is None
    assert "recorded 2 time(s) (line 2, 3) and this is request number 3 of it in run 'r1'" in \
        m.miss("chat", entry("").request, k, "r1").message
    assert json.loads(m.take(k, "r2").response)["choices"][0]["message"]["content"] == "one"


def test_miss_names_the_nearest_request_and_the_first_difference():
    m = Matcher([entry("a", ask="plan the work"), entry("b", ask="zzz", temperature=0.5)], "x.cassette")
    asked = entry("", ask="plan the work", temperature=0.9).request
    msg = m.miss("chat", asked, key_of("chat", asked), None).message
    assert msg.startswith("cassette_miss: no recorded answer in x.cassette for this chat request (model '@planner')")
    assert "Nearest recorded call (line 2, @planner) differs in temperature: 0.9 (recorded: absent)" in msg
    asked = entry("", ask="plan the play").request
    msg = m.miss("chat", asked, key_of("chat", asked), None).message
    assert 'messages[0]: {"content":"plan the play","role":"user"} (recorded: {"content":"plan the work"' in msg
    assert "--on-miss record" in msg


def collect(stream) -> list[bytes]:
    async def go():
        return [e async for e in stream.events]
    return asyncio.run(go())


def test_a_body_streams_and_a_stream_assembles_to_the_same_answer():
    tool = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"q": "x"}'}}
    body = {"id": "c1", "object": "chat.completion", "created": 7, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there, world.",
                                                 "tool_calls": [tool]}, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 4, "completion_tokens": 9, "total_tokens": 13}}
    events = chunks_of(body)
    assert len(events) > 4 and json.loads(events[-1])["choices"] == []  # the usage chunk comes last
    again = assemble_stream(events)
    assert again["choices"][0]["message"]["content"] == "Hello there, world."
    assert again["choices"][0]["message"]["tool_calls"] == [tool] and again["usage"] == body["usage"]
    streamed = Entry("chat", None, {}, events=events, stream=True)
    assert json.loads(as_result(streamed).body)["choices"][0]["message"]["tool_calls"] == [tool]
    assert collect(as_stream(streamed)) == events  # recorded chunks go out as recorded
    plain = Entry("chat", None, {}, response=msgspec.json.encode(body))
    assert collect(as_stream(plain)) == events and as_result(plain).body == plain.response


def test_dev_cache_expires_after_its_ttl():
    c = DevCache(max_entries=2)
    c.put(b"k", entry("x"), now=100.0)
    assert c.get(b"k", ttl_s=10, now=109.0) is not None
    assert c.get(b"k", ttl_s=10, now=111.0) is None
    for i in range(3):
        c.put(b"%d" % i, entry(str(i)), now=200.0)
    assert c.get(b"0", 10, now=200.0) is None and c.get(b"2", 10, now=200.0) is not None


def test_file_round_trip_is_byte_stable_and_errors_name_the_line(tmp_path):
    p = tmp_path / "c.cassette"
    Cassette(p, new_header({"runs": ["r1"]}), [entry("one"), Entry("chat", "@x", {"model": "@x"},
                                                                  events=[b'{"a": 1}'], stream=True)]).save()
    first = p.read_bytes()
    cas = load(p)
    assert [e.stream for e in cas.entries] == [False, True] and cas.entries[1].events == [b'{"a":1}']
    cas.save()
    assert p.read_bytes() == first and not list(tmp_path.glob(".c.cassette.*"))
    assert first.count(b"\n") == 3  # header + one line per call
    p.write_bytes(first + b'{"endpoint": "chat"}\n')
    with pytest.raises(CassetteError, match=r"c.cassette:4: not a recorded call \('request'\)"):
        load(p)
    p.write_bytes(b'{"modelux_cassette": 2}\n')
    with pytest.raises(CassetteError, match="not a modelux cassette of version 1"):
        load(p)
    p.write_bytes(first.replace(b'"stream":true', b'"stream":tru'))
    with pytest.raises(CassetteError, match=r"c.cassette:3: not JSON"):
        load(p)
