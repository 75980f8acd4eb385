"""Migration 20 for /v1/responses conversation state (the responses room owns number 20).

- `responses`: one row per answered /v1/responses call. `response` is the Response object as
  answered, `input_items` the request's input items (with ids) for `/input_items`, `history`
  the whole conversation up to and including this answer as OpenAI chat messages (what a later
  `previous_response_id` continues from; instructions excluded, as they are not inherited),
  `chat_body` the chat body the call was translated to (what replay re-runs).
  `stored = 0` for `store: false` (kept for replay, never served); DELETE sets `deleted_at`.
"""

MIGRATIONS: list[tuple[int, str]] = [
    (20, """
CREATE TABLE responses (
    response_id TEXT PRIMARY KEY, call_id TEXT, created_at REAL NOT NULL,
    stored INTEGER NOT NULL DEFAULT 1, deleted_at REAL, previous_response_id TEXT,
    response BLOB NOT NULL, input_items BLOB NOT NULL, history BLOB NOT NULL, chat_body BLOB
);
CREATE INDEX responses_call ON responses(call_id);
"""),
]
