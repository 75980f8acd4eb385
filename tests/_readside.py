"""Shared by the read-side tests (runs, trace, analytics, search): a config with a failing
target to fall back from, and a helper that makes one tagged call and returns its call id."""
from __future__ import annotations

import json

CONFIG = {
    "modelux.toml": """
[routing]
default = "t"

[providers.mock]
kind = "mock"

[providers.mock.models.mock-large]
latency_ms = 25

[providers.mock.models.mock-small]
latency_ms = 8
ttft_ms = 2

[providers.mock.models.mock-broken]
latency_ms = 2
error_rate = 1.0
error_status = 503

[providers.mock.models.mock-embed]
latency_ms = 0
""",
    "t.toml": """
[aliases.planner]
targets = [{ provider = "mock", model = "mock-large" }]

[aliases.executor]
targets = [{ provider = "mock", model = "mock-small" }]

# the first target always fails with 503: one retry, then a fallback that succeeds
[aliases.flaky]
strategy = "fallback"
targets = [{ provider = "mock", model = "mock-broken" }, { provider = "mock", model = "mock-small" }]
retries = { attempts = 1, backoff_ms = 1, on = ["5xx"] }

[aliases.broken]
targets = [{ provider = "mock", model = "mock-broken" }]

[aliases.embedder]
targets = [{ provider = "mock", model = "mock-embed" }]
""",
}


def call(client, alias: str, content: str, stream: bool = False, **tags: str) -> tuple[str, object]:
    """One chat call through the SDK; returns (call_id from the x-mlx-call-id header, parsed response)."""
    raw = client.chat.completions.with_raw_response.create(
        model=alias, messages=[{"role": "user", "content": content}], stream=stream,
        extra_body={"mlx:tags": tags}, **({"stream_options": {"include_usage": True}} if stream else {}))
    parsed = raw.parse()
    if stream:
        chunks = list(parsed)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        usage = next((c.usage for c in chunks if c.usage), None)
        return raw.headers["x-mlx-call-id"], {"text": text, "usage": usage}
    return raw.headers["x-mlx-call-id"], parsed


def cli_json(server, *args: str) -> dict:
    return json.loads(server.cli(*args, "--json").stdout)


def age_run(server, run_id: str, hours: float) -> None:
    """Moves a recorded run and its calls `hours` into the past in the server's SQLite file, so
    `--since` has something outside its window (the proxy only ever records calls made now)."""
    import apsw

    assert server.get(f"/mlx/v1/runs/{run_id}").status_code == 200  # read-your-writes: the run is stored
    conn = apsw.Connection(str(server.db_path))
    conn.set_busy_timeout(5000)
    shift = hours * 3600
    with conn:
        conn.execute("UPDATE calls SET started_at = started_at - ? WHERE run_id = ?", (shift, run_id))
        conn.execute("UPDATE runs SET started_at = started_at - ?, last_at = last_at - ? WHERE run_id = ?",
                     (shift, shift, run_id))
    conn.close()
