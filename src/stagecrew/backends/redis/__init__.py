"""The Redis engine: `redis://host:6379/0` or `rediss://...` (TLS), with `?prefix=` for the keys."""

from __future__ import annotations

from .backend import RedisBackend

__all__ = ["RedisBackend"]
