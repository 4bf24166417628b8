"""The SQLite engine: `sqlite:///relative/path.db` or `sqlite:////absolute/path.db`."""

from __future__ import annotations

from .backend import SQLiteBackend

__all__ = ["SQLiteBackend"]
