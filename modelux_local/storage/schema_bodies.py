"""Migrations for stored bodies: each distinct message once. Numbers 30+ belong to this room.

- `messages`: one row per distinct message (the exact bytes of one element of a request's
  `messages` / `input` array, compressed), found by its 16-byte BLAKE2b `hash`. Requests in
  `calls.request` reference rows by `id` (storage/bodies.py). `last_at` is when a stored call
  last referenced it (refreshed at most hourly): retention deletes rows no kept call can use.

Databases made before this migration keep their raw bodies (readers tell the formats apart)
and are switched to incremental auto-vacuum once, by `retention.ensure_incremental_vacuum`
(a VACUUM cannot run inside a migration's transaction).
"""

MIGRATIONS: list[tuple[int, str]] = [
    (30, """
CREATE TABLE messages (
    id INTEGER PRIMARY KEY, hash BLOB NOT NULL UNIQUE, last_at REAL NOT NULL, body BLOB NOT NULL
);
CREATE INDEX messages_last ON messages(last_at);
"""),
]
