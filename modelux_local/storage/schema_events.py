"""Migrations for run events: anomalies, budget state, webhook outbox. Number 3 (and later ones appended here) belong to this room."""

MIGRATIONS: list[tuple[int, str]] = []
