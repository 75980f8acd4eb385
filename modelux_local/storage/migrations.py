"""Numbered schema migrations. Append only: never edit one that has shipped.

Each room keeps its tables in its own schema_*.py list; numbers are unique across them
(1 core, 2 search, 3 events/budgets, 4 replay, 13 export, 20 responses, 30+ stored bodies,
1201 playback) and applied in order.
"""

CORE: list[tuple[int, str]] = [
    (1, """
CREATE TABLE config_versions (
    name TEXT NOT NULL, version TEXT NOT NULL, content TEXT NOT NULL,
    source TEXT, first_seen REAL NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY, tags TEXT NOT NULL DEFAULT '{}', agent TEXT,
    started_at REAL NOT NULL, last_at REAL NOT NULL, ended_at REAL,
    status TEXT NOT NULL DEFAULT 'running',
    calls INTEGER NOT NULL DEFAULT 0, errors INTEGER NOT NULL DEFAULT 0, retries INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0,
    cost_nusd INTEGER NOT NULL DEFAULT 0, unpriced_calls INTEGER NOT NULL DEFAULT 0,
    outcome TEXT, anomalies TEXT NOT NULL DEFAULT '[]', abort_reason TEXT,
    replay_id TEXT
);
CREATE INDEX runs_started ON runs(started_at);
CREATE INDEX runs_agent ON runs(agent, started_at);
CREATE TABLE calls (
    call_id TEXT PRIMARY KEY, run_id TEXT, started_at REAL NOT NULL, endpoint TEXT NOT NULL,
    alias TEXT, config TEXT, config_version TEXT, provider TEXT, model TEXT,
    status TEXT NOT NULL, http_status INTEGER NOT NULL,
    input_tokens INTEGER, output_tokens INTEGER, cached_tokens INTEGER, cache_write_tokens INTEGER,
    reasoning_tokens INTEGER, cost_nusd INTEGER, priced INTEGER NOT NULL DEFAULT 0,
    latency_ms REAL, ttft_ms REAL, stream INTEGER NOT NULL DEFAULT 0, retries INTEGER NOT NULL DEFAULT 0,
    tags TEXT NOT NULL DEFAULT '{}', attempts TEXT NOT NULL DEFAULT '[]', decision TEXT NOT NULL DEFAULT '{}',
    error TEXT, request BLOB, response BLOB,
    replay_id TEXT, original_call_id TEXT
);
CREATE INDEX calls_run ON calls(run_id, started_at);
CREATE INDEX calls_started ON calls(started_at);
"""),
]


def _all() -> list[tuple[int, str]]:
    from . import (
        schema_bodies,
        schema_events,
        schema_export,
        schema_playback,
        schema_replay,
        schema_responses,
        schema_search,
    )

    out = sorted(CORE + schema_search.MIGRATIONS + schema_events.MIGRATIONS + schema_replay.MIGRATIONS
                 + schema_responses.MIGRATIONS + schema_playback.MIGRATIONS + schema_export.MIGRATIONS
                 + schema_bodies.MIGRATIONS)
    numbers = [n for n, _ in out]
    assert len(numbers) == len(set(numbers)), f"duplicate migration numbers: {numbers}"
    return out


MIGRATIONS = _all()
