"""The semantic search index's storage side: which calls wait to be embedded, and storing vectors.

The job that embeds them (through the `@embedder` alias and the calls/ dispatcher) is
modelux_local/calls/embedder.py; `search_state.embedded_upto` is its high-water mark
(calls_fts rowids), so a restart resumes where it stopped.
"""
from __future__ import annotations

import asyncio

from ..errors import StorageUnavailable
from .search import catch_up, ensure_vector_table, pack

BATCH = 32
MAX_CHARS = 4_000          # of prompt + response per call: the gist, within any embedder's input limit


def embedding_text(prompt: str | None, response: str | None) -> str:
    return f"{prompt or ''}\n{response or ''}".strip()[:MAX_CHARS]


def pending(conn, after: int, limit: int) -> list[tuple]:
    return conn.execute(
        "SELECT f.rowid, f.prompt, f.response, c.run_id, c.started_at FROM calls_fts AS f "
        "JOIN calls AS c ON c.rowid = f.rowid WHERE f.rowid > ? ORDER BY f.rowid LIMIT ?", (after, limit)).fetchall()


def high_water(conn) -> int:
    row = conn.execute("SELECT value FROM search_state WHERE key = 'embedded_upto'").fetchone()
    return int(row[0]) if row else 0


def store_vectors(conn, model: str, rows: list[tuple], vectors: list[list[float]], upto: int) -> None:
    """On the writer thread: the vectors, and the new high-water mark, in one transaction."""
    if vectors:
        table = ensure_vector_table(conn, len(vectors[0]))
        conn.execute(f"DELETE FROM {table} WHERE rowid IN ({','.join('?' * len(rows))})", [r[0] for r in rows])
        conn.executemany(f"INSERT INTO {table}(rowid, embedding, model, run_id, started_at) VALUES (?, ?, ?, ?, ?)",
                         [(rowid, pack(v), model, run_id or "", started)
                          for (rowid, run_id, started), v in zip(rows, vectors)])
    conn.execute("INSERT OR REPLACE INTO search_state(key, value) VALUES ('embedded_upto', ?)", (upto,))


async def catch_up_slices(writer) -> None:
    """Indexes what the FTS table missed, in slices, so a large backlog never holds the writer
    (and the calls queued behind it) for long."""
    while True:
        try:
            if not await writer.run(lambda c: catch_up(c, max_rows=2_000)):
                return
        except StorageUnavailable:  # a failing disk: the index catches up once it recovers
            await asyncio.sleep(30)
