"""Migrations of the export room. Number 13 belongs to it.

- `export_cursors`: how far each live exporter got, by `calls.rowid` (rows are only ever
  appended, so rowid order is arrival order). One row per destination (`otlp <traces URL>`),
  so a collector that is down, or a restart, resumes where it stopped and resends nothing twice
  but the batch in flight (with the same span ids, which backends deduplicate).
"""

MIGRATIONS: list[tuple[int, str]] = [
    (13, """
CREATE TABLE export_cursors (
    name TEXT PRIMARY KEY, last_rowid INTEGER NOT NULL, updated_at REAL NOT NULL
);
"""),
]
