"""The openai kind's SSE reader: long lines (past aiohttp's 128 KiB readline limit) and framing.

One test goes through the real server to a fake OpenAI upstream with the official SDK; the
others feed `iter_sse_data` the same wire bytes cut at every kind of boundary. At the end: the
request helpers both translating kinds share refuse the same input the same way.
"""
from __future__ import annotations

import json
import uuid

import pytest

from modelux_local.providers._sse import SSEData, StreamIncomplete, iter_sse_data

from .conftest import client_for
from .fakes.openai_upstream import FakeOpenAI

# The fake streams one word per chunk, so this is a single ~1.1 MB SSE line: past readline's
# limit in every aiohttp (twice the read buffer: 128 KiB up to 3.13, 512 KiB in 3.14).
HUGE_WORD = "x" * 1_100_000


def test_stream_with_a_chunk_over_1_MB_passes_through_and_is_recorded(make_server):
    with FakeOpenAI() as up:
        srv = make_server({"modelux.toml": f'[routing]\ndefault = "main"\n\n[providers.up]\nkind = "openai"\n'
                                           f'base_url = "{up.base_url}"\n',
                           "main.toml": '[aliases.x]\ntargets = [{ provider = "up", model = "gpt-4o-mini" }]\n'})
        text = f"before {HUGE_WORD} after"
        up.enqueue(text=text, n_times=2)
        client = client_for(srv)
        run_id = f"run_{uuid.uuid4().hex[:12]}"
        stream = client.chat.completions.create(
            model="@x", messages=[{"role": "user", "content": "big"}], stream=True,
            stream_options={"include_usage": True}, extra_body={"mlx:tags": {"run_id": run_id}})
        chunks = list(stream)
        deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
        assert "".join(deltas) == text
        assert max(len(d) for d in deltas) > 1_000_000
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0

        # the same upstream connection pool serves the next call after that stream
        again = client.chat.completions.create(model="@x", messages=[{"role": "user", "content": "big"}],
                                               stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in again if c.choices) == text

        run = srv.get(f"/mlx/v1/runs/{run_id}").json()
        call = srv.get(f"/mlx/v1/calls/{run['steps'][0]['call_id']}").json()
        assert call["status"] == "ok" and call["stream"] is True and call["output_tokens"] > 0
        assert call["response"]["choices"][0]["message"]["content"] == text


WIRE = (b": keep-alive\r\n\r\nevent: ignored\r\ndata: {\"a\": 1}\r\n\r\n"
        b"id: 7\ndata:{\"b\":2}\n\n"
        b"data: \n\n"  # an empty payload: nothing to yield
        b"data: " + json.dumps({"big": "y" * 300_000}).encode() + b"\n\n"
        b"data: [DONE]\n\ndata: {\"after\": \"done\"}\n\n")
EXPECTED = [b'{"a": 1}', b'{"b":2}', json.dumps({"big": "y" * 300_000}).encode()]


class Body:
    """What iter_sse_data reads: aiohttp's StreamReader.iter_any(), here in reads of a fixed size."""

    def __init__(self, wire: bytes, size: int):
        self.wire, self.size = wire, size

    async def iter_any(self):
        for i in range(0, len(self.wire), self.size):
            yield self.wire[i:i + self.size]


async def _payloads(wire: bytes, size: int) -> list[bytes]:
    return [p async for p in iter_sse_data(Body(wire, size))]


@pytest.mark.parametrize("size", [1, 5, 64, 65_536, len(WIRE)])
async def test_payloads_are_the_same_bytes_whatever_the_reads(size):
    got = await _payloads(WIRE, size)
    assert got == EXPECTED and all(type(p) is bytes for p in got)


async def test_done_stops_and_a_stream_without_it_is_incomplete():
    assert await _payloads(b'data: {"x": 1}\n\ndata: [DONE]', 4) == [b'{"x": 1}']  # no newline after [DONE]: fine
    for cut in (b'data: {"x": 1}\n\ndata: {"y": 2}', b'data: {"x": 1}\n\n', b"", b'data: {"x": 1}\n\ndata: {"y"'):
        with pytest.raises(StreamIncomplete):
            await _payloads(cut, 3)


def test_one_read_gives_its_payloads_as_one_list_and_done_ends_it():
    sse = SSEData()
    assert sse.feed(b'data: {"a":1}\n\ndata: {"b":2}\n\ndata: {"c"') == [b'{"a":1}', b'{"b":2}']
    assert sse.feed(b':3}\n\n') == [b'{"c":3}'] and not sse.done
    assert sse.feed(b"data: \n\n: ping\n\n") == []
    assert sse.feed(b'data: {"d":4}\n\ndata: [DONE]\n\ndata: {"after":1}\n\n') == [b'{"d":4}'] and sse.done
    sse.finish()  # fine: [DONE] came
    with pytest.raises(StreamIncomplete, match="cut inside an event"):
        cut = SSEData()
        cut.feed(b'data: {"a":1}\n\ndata: {"b"')
        cut.finish()


# ---------------------------------------------------------------- shared translation refusals
# Both translating kinds now read images, tool-call arguments and system text through the same
# helpers (_openai_shapes): the same bad input gets the same 400.

from modelux_local.errors import UpstreamError  # noqa: E402
from modelux_local.providers import _gemini_translate as gtr  # noqa: E402
from modelux_local.providers import anthropic_out as atr  # noqa: E402

TRANSLATE = {"anthropic": lambda body: atr.request_to_anthropic(body, "claude", 1024),
             "gemini": lambda body: gtr.request_to_gemini(body, {})}
BAD = [
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,AAAA"}}]}],
     "image data URLs must be base64-encoded", "messages[0].content[0]"),
    ([{"role": "user", "content": "x"},
      {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                            "function": {"name": "f", "arguments": "{nope"}}]}],
     "tool call arguments are not valid JSON",
     # (unchanged quirk: the anthropic kind names the call under `.content`)
     {"anthropic": "messages[1].content.tool_calls[0]", "gemini": "messages[1].tool_calls[0]"}),
    ([{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
      {"role": "user", "content": "x"}],
     "only text parts are allowed in messages[0]", "messages[0]"),
]


@pytest.mark.parametrize("kind", sorted(TRANSLATE))
@pytest.mark.parametrize("messages,message,param", BAD)
def test_the_same_bad_input_gets_the_same_400_from_both_translators(kind, messages, message, param):
    with pytest.raises(UpstreamError) as e:
        TRANSLATE[kind]({"model": "m", "messages": messages})
    param = param[kind] if isinstance(param, dict) else param
    assert e.value.status == 400 and e.value.category is None and e.value.message == message
    assert json.loads(e.value.body)["error"] == {"message": message, "type": "invalid_request_error",
                                                "code": "unsupported_parameter", "param": param}


@pytest.mark.parametrize("kind,vendor", [("anthropic", "Anthropic"), ("gemini", "Gemini")])
def test_refused_and_unknown_fields_name_the_vendor(kind, vendor):
    with pytest.raises(UpstreamError, match=f"'logit_bias' is not supported for {vendor} models: "):
        TRANSLATE[kind]({"model": "m", "messages": [{"role": "user", "content": "x"}], "logit_bias": {"1": 2}})
    TRANSLATE[kind]({"model": "m", "messages": [{"role": "user", "content": "x"}], "logit_bias": {}})  # off: fine
    with pytest.raises(UpstreamError, match=f"^'frobnicate' is not supported for {vendor} models$"):
        TRANSLATE[kind]({"model": "m", "messages": [{"role": "user", "content": "x"}], "frobnicate": 1})
