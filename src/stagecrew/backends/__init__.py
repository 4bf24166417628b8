"""Engines, chosen by URL."""

from __future__ import annotations

import importlib
from collections.abc import Callable
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


_ENGINES = {
    "memory": ("memory", "MemoryBackend"),
    "sqlite": ("sqlite", "SQLiteBackend"),
    "postgres": ("postgres", "PostgresBackend"),
    "postgresql": ("postgres", "PostgresBackend"),
    "redis": ("redis", "RedisBackend"),
    "rediss": ("redis", "RedisBackend"),
}
"""URL scheme: the engine's module in this package, and its class."""


def _engine(url: str) -> tuple[str, str]:
    scheme = url.split(":", 1)[0].lower()
    try:
        module, name = _ENGINES[scheme]
    except KeyError:
        raise ConfigurationError(
            f"unsupported store URL {url!r}: use sqlite:///path.db, postgresql://..., "
            "redis://... or memory:// "
            "(set STAGECREW_URL or pass App(url=...))"
        ) from None
    return f"{__name__}.{module}", name


def engine_module(url: str) -> str:
    """The module of the engine `url` names (importing it imports the engine's client
    library), without importing it: a worker's processes import it ahead of their start."""
    return _engine(url)[0]


def backend_from_url(url: str, clock: Clock | None = None) -> Backend:
    """`sqlite:///relative.db`, `sqlite:////absolute.db`, `postgresql://…`, `redis://…`, `memory://`."""
    module, name = _engine(url)
    engine: Callable[[str, Clock | None], Backend] = getattr(importlib.import_module(module), name)
    return engine(url, clock)
