"""A fresh store of each engine for one test: a file, a migrated schema or a key prefix."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from stagecrew.backends.postgres import PostgresBackend
from tests.backends import test_postgres, test_redis


@contextlib.contextmanager
def fresh_store(engine: str, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty, migrated store of `engine`, removed afterwards.

    A server engine whose server is unreachable skips the test, or fails it in CI.
    """
    if engine == "memory":
        yield "memory://"
    elif engine == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
    elif engine == "postgres":
        test_postgres._server_or_skip()
        schemas = test_postgres.Schemas()
        url = test_postgres.with_schema(test_postgres.URL, schemas.new())
        try:
            backend = PostgresBackend(url)
            backend.migrate()
            backend.close()
            yield url
        finally:
            schemas.drop()
    elif engine == "redis":
        test_redis._server_or_skip()
        prefixes = test_redis.Prefixes(test_redis.URL)
        try:
            yield prefixes.url_for()
        finally:
            prefixes.delete()
    else:
        raise ValueError(f"no such engine: {engine!r}")
