"""Migrations for replays, promotions audit, serving config. Number 4 (and later ones appended here) belong to this room."""

MIGRATIONS: list[tuple[int, str]] = []
