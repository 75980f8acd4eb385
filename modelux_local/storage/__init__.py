"""SQLite storage: one writer thread, readers on their own connections, numbered migrations."""
from .db import connect, migrate, open_db
from .queries import Reader
from .writer import Writer

__all__ = ["connect", "migrate", "open_db", "Reader", "Writer"]
