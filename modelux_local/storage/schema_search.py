"""Migrations for full-text and vector search (FTS5, sqlite-vec), read-side indexes. Number 2 (and later ones appended here) belong to this room."""

MIGRATIONS: list[tuple[int, str]] = []
