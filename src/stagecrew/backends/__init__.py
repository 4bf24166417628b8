"""Engines, chosen by URL."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from ..clock import Clock
from ..errors import ConfigurationError
from .base import Backend

DEFAULT_URL = "sqlite:///stagecrew.db"


def redact_url(url: str) -> str:
    """The store URL for messages and logs: its password, if any, replaced by `***`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user.split(':', 1)[0]}:***@{host}"))


def backend_from_url(url: str, clock: Clock | None = None) -> Backend:
    """`sqlite:///relative.db`, `sqlite:////absolute.db`, `postgresql://…`, `redis://…`, `memory://`."""
    scheme = url.split(":", 1)[0].lower()
    if scheme == "memory":
        from .memory import MemoryBackend

        return MemoryBackend(url, clock)
    if scheme == "sqlite":
        from .sqlite import SQLiteBackend

        return SQLiteBackend(url, clock)
    if scheme in ("postgres", "postgresql"):
        from .postgres import PostgresBackend

        return PostgresBackend(url, clock)
    if scheme in ("redis", "rediss"):
        from .redis import RedisBackend

        return RedisBackend(url, clock)
    raise ConfigurationError(
        f"unsupported store URL {url!r}: use sqlite:///path.db, postgresql://..., "
        "redis://... or memory:// "
        "(set STAGECREW_URL or pass App(url=...))"
    )
