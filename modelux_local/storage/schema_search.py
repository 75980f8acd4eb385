"""Migrations for full-text and vector search (FTS5, sqlite-vec), read-side indexes.

Numbers 2, 6, 8... belong to this room (4 is replay's, 3 events').

- calls_run_latency: per-run latencies come from the index alone, already sorted, so a
  run's p50/p95 and the analytics percentiles (exact, SQLite's percentile()) never touch
  the wide `calls` rows.
- runs_cost / runs_calls: `runs --sort cost|calls` reads the top N from an index instead of
  sorting every run.
- calls_fts: the searchable text of each call (prompt = request messages, response = the
  assembled answer), keyed by calls.rowid. It keeps its own copy of the text because the
  bodies are JSON blobs; the copy also feeds the embedding job.
- search_state: high-water marks of the background jobs (which calls are embedded).
  The vector tables (vec0) are created on first use, because their dimension is the
  embedder's, known only once it answers: `call_vectors_<dim>`.
"""

MIGRATIONS: list[tuple[int, str]] = [
    (2, """
CREATE INDEX calls_run_latency ON calls(run_id, latency_ms);
CREATE INDEX runs_cost ON runs(cost_nusd);
CREATE INDEX runs_calls ON runs(calls);
CREATE VIRTUAL TABLE calls_fts USING fts5(prompt, response, tokenize = 'porter unicode61 remove_diacritics 2');
CREATE TABLE search_state (key TEXT PRIMARY KEY, value);
"""),
]
