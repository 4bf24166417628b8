"""The servers stagecrew's tests and benchmarks use, and their throwaway namespaces.

Part of the engine registry (`engines.py`), kept free of any stagecrew import so that a
benchmark measuring another checkout of stagecrew (`STAGECREW_BENCH_SRC`) still takes its
servers, schemas and key prefixes from here: one registry for tests and benchmarks. Client
libraries (psycopg, redis, pytest) are imported only when a function needs them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass


# -- servers ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Server:
    """A server some engines need: where the tests find it, and how to tell it answers."""

    name: str
    variable: str
    """The environment variable holding its URL."""
    default: str
    ping: Callable[[str], object]
    """Connects to the URL once; raises when the server does not answer."""

    @property
    def url(self) -> str:
        return os.environ.get(self.variable, self.default)

    def unreachable(self) -> str | None:
        """Why the server does not answer, or None when it does."""
        url = self.url
        if url in _ANSWERED:
            return None
        try:
            self.ping(url)
        except Exception as exc:  # whatever the client raises (or cannot import) is the reason
            return f"{self.name} is not reachable at {self.variable}={url!r}: {exc}"
        _ANSWERED.add(url)
        return None

    def require(self) -> None:
        """Skip the calling test when the server does not answer; fail it when CI is set."""
        reason = self.unreachable()
        if reason is None:
            return
        import pytest

        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


_ANSWERED: set[str] = set()
"""Server URLs that answered once in this process: not asked again for every test."""


def _ping_postgres(url: str) -> None:
    import psycopg

    with psycopg.connect(url, connect_timeout=3):
        pass


def _ping_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        client.ping()
    finally:
        client.close()


POSTGRES_SERVER = Server(
    "PostgreSQL",
    "STAGECREW_TEST_POSTGRES_URL",
    "postgresql://postgres@127.0.0.1:5432/test",
    _ping_postgres,
)
REDIS_SERVER = Server("Redis", "STAGECREW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0", _ping_redis)


# -- PostgreSQL schemas and Redis key prefixes -------------------------------------------------
def with_schema(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


def with_query(url: str, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{url}{'&' if '?' in url else '?'}{query}"


def create_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE SCHEMA {}").format(psycopg.sql.Identifier(schema)))


def drop_schemas(url: str, schemas: list[str]) -> None:
    """Drop each schema (and everything in it) if it exists."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for name in schemas:
            conn.execute(
                psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    psycopg.sql.Identifier(name)
                )
            )


def delete_prefix(url: str, prefix: str) -> None:
    """Delete every key of the Redis key prefix `prefix`, in either key layout."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        for pattern in (f"{{{prefix}}}:*", f"{{{prefix}:*"):
            batch = list(client.scan_iter(match=pattern, count=1000))
            for i in range(0, len(batch), 500):
                client.delete(*batch[i : i + 500])
    finally:
        client.close()
