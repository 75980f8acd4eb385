"""Cost: published prices times usage, cached and reasoning tokens, overrides, unknown models."""
from __future__ import annotations

import httpx
import pytest

from .fakes.openai_upstream import FakeOpenAI


def completion(model: str, prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> dict:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
             "prompt_tokens_details": {"cached_tokens": cached},
             "completion_tokens_details": {"reasoning_tokens": reasoning}}
    return {"id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": model, "usage": usage,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from .server import ServerProcess, write_config
    up = FakeOpenAI().start()
    tmp = tmp_path_factory.mktemp("cost")
    cfg = write_config(tmp / "cfg", {
        "modelux.toml": f'[providers.up]\nkind = "openai"\nbase_url = "{up.base_url}"\n\n'
                        '[prices."up/house-model"]\ninput = 2.0\noutput = 6.0\ncached_input = 0.5\n',
        "main.toml": '[aliases.x]\ntargets = [{ provider = "up", model = "gpt-4o-mini" }]\n'})
    srv = ServerProcess(tmp / "data", cfg).start()
    yield srv, up
    srv.stop()
    up.stop()


def call_cost(srv, model: str) -> dict:
    r = httpx.post(srv.base_url + "/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 200, r.text
    return srv.get(f"/mlx/v1/calls/{r.headers['x-mlx-call-id']}").json()


@pytest.mark.parametrize("model,usage,expected_usd", [
    # OpenAI's published rates per 1M tokens: gpt-4o-mini $0.15 in / $0.075 cached in / $0.60 out
    ("gpt-4o-mini", (1000, 500, 0, 0), (1000 * 0.15 + 500 * 0.60) / 1e6),
    ("gpt-4o-mini", (1000, 500, 400, 0), (600 * 0.15 + 400 * 0.075 + 500 * 0.60) / 1e6),
    # o4-mini $1.10 in / $4.40 out; reasoning tokens are part of the completion and priced as output
    ("o4-mini", (2000, 3000, 0, 2500), (2000 * 1.10 + 3000 * 4.40) / 1e6),
    # a custom model priced by [prices."up/house-model"] in modelux.toml
    ("house-model", (1000, 100, 200, 0), (800 * 2.0 + 200 * 0.5 + 100 * 6.0) / 1e6),
])
def test_cost_is_published_price_times_usage(setup, model, usage, expected_usd):
    srv, up = setup
    up.enqueue(body=completion(model, *usage))
    call = call_cost(srv, f"up/{model}")
    assert call["priced"] is True
    assert call["cost_usd"] == pytest.approx(expected_usd, rel=1e-12)
    assert call["cached_tokens"] == usage[2] and call["reasoning_tokens"] == usage[3]
    assert call["decision"]["raw_usage"]["prompt_tokens"] == usage[0]  # as the provider reported it


def test_unknown_model_is_unpriced_never_zero(setup):
    srv, up = setup
    up.enqueue(body=completion("my-finetune-xyz", 100, 10))
    call = call_cost(srv, "up/my-finetune-xyz")
    assert call["cost_usd"] is None and call["priced"] is False
    assert call["decision"]["prices"] is None
    run = httpx.post(srv.base_url + "/chat/completions", json={
        "model": "up/my-finetune-xyz", "messages": [{"role": "user", "content": "x"}], "mlx:tags": {"run_id": "r-unpriced"}})
    assert run.status_code == 200
    summary = srv.get("/mlx/v1/runs/r-unpriced").json()
    assert summary["cost_usd"] is None and summary["unpriced_calls"] == 1
