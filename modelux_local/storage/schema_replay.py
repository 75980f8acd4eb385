"""Migrations for replays, promotions audit, serving config. Number 4 (and later ones appended here) belong to this room.

- `replays`: one row per `simulate` (its selection, state and final report as JSON).
- `replay_runs`: per original run of a replay: the replay run it produced and the verdicts.
- `answer_embeddings`: float32 vectors (sqlite-vec's format) of final answers, so a second
  replay over the same originals does not embed them again.
- `serving_versions`: every routing-config content that served through a promotion or
  rollback, numbered 1, 2, 3... (the "version number" users pass to `config rollback --to`).
- `serving`: which numbered content a config name serves instead of its file (absent: the file).
- `config_audit`: who promoted / rolled back what, when, from which to which version, why.
- `serving_acks`: a running server's pid and the last audit entry it applied, so the CLI can
  say when a promotion is live.
"""

MIGRATIONS: list[tuple[int, str]] = [
    (4, """
CREATE TABLE replays (
    replay_id TEXT PRIMARY KEY, created_at REAL NOT NULL, finished_at REAL,
    status TEXT NOT NULL DEFAULT 'running',          -- running | completed | partial | failed
    mode TEXT NOT NULL, candidate TEXT NOT NULL, candidate_version TEXT NOT NULL,
    baseline TEXT, evaluator TEXT NOT NULL, selection TEXT NOT NULL DEFAULT '{}',
    runs_total INTEGER NOT NULL DEFAULT 0, runs_done INTEGER NOT NULL DEFAULT 0,
    requests INTEGER NOT NULL DEFAULT 0, cost_nusd INTEGER NOT NULL DEFAULT 0,
    pid INTEGER, who TEXT, note TEXT, report TEXT
);
CREATE INDEX replays_created ON replays(created_at);
CREATE TABLE replay_runs (
    replay_id TEXT NOT NULL, original_run_id TEXT NOT NULL, replay_run_id TEXT,
    status TEXT NOT NULL,                            -- done | partial | skipped
    original_success INTEGER, candidate_success INTEGER,
    judged INTEGER NOT NULL DEFAULT 0, accepted INTEGER, score REAL, verdict TEXT,
    detail TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (replay_id, original_run_id)
);
CREATE INDEX calls_replay ON calls(replay_id, original_call_id);
CREATE INDEX runs_replay ON runs(replay_id);
CREATE TABLE answer_embeddings (
    call_id TEXT NOT NULL, model TEXT NOT NULL, vec BLOB NOT NULL,
    PRIMARY KEY (call_id, model)
);
CREATE TABLE serving_versions (
    number INTEGER PRIMARY KEY, name TEXT NOT NULL, content TEXT NOT NULL,
    content_version TEXT NOT NULL, source TEXT NOT NULL, created_at REAL NOT NULL
);
CREATE TABLE serving (
    name TEXT PRIMARY KEY, number INTEGER NOT NULL REFERENCES serving_versions(number)
);
CREATE TABLE config_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, who TEXT NOT NULL,
    action TEXT NOT NULL, name TEXT NOT NULL,
    from_number INTEGER, to_number INTEGER, from_version TEXT, to_version TEXT,
    candidate TEXT, replay_id TEXT, figures TEXT, reason TEXT, forced INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE serving_acks (pid INTEGER PRIMARY KEY, audit_id INTEGER NOT NULL, at REAL NOT NULL);
"""),
]
