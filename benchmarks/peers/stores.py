"""A fresh, empty store for each measurement, removed afterwards.

- SQLite: a new file in the run's temporary folder.
- PostgreSQL: a new database (`peers_<random>`) on the server, dropped afterwards with
  `WITH (FORCE)`; a whole database rather than a schema, so that every library creates its
  tables where its defaults put them.
- Redis: a dedicated database number (15 by default, never 0, which the tests use), emptied
  with FLUSHDB before and after; the libraries keep their default key names in it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
from psycopg import sql

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"


class StoreError(RuntimeError):
    """The engine's server cannot be used for the benchmark."""


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def redis_db(url: str) -> int:
    path = urlsplit(url).path.strip("/")
    return int(path) if path else 0


@contextmanager
def postgres_database(url: str) -> Iterator[str]:
    """The URL of a new, empty database on the server of `url`, dropped afterwards."""
    name = f"peers_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(url, name)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def check_redis(url: str) -> None:
    """Refuse database 0 (the tests' own) and a database that already holds keys."""
    db = redis_db(url)
    if db == 0:
        raise StoreError(f"{url}: the peers benchmark empties its Redis database; use 1-15")
    client = redis.Redis.from_url(url)
    try:
        keys = client.dbsize()
    finally:
        client.close()
    if keys:
        raise StoreError(
            f"Redis database {db} of {url} holds {keys} keys: it must be empty (and used by "
            "nothing else), as each measurement empties it; flush it or pass another "
            "--redis-url"
        )


def flush_redis(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


@contextmanager
def redis_database(url: str) -> Iterator[str]:
    flush_redis(url)
    try:
        yield url
    finally:
        flush_redis(url)


@contextmanager
def sqlite_file(folder: Path) -> Iterator[str]:
    path = folder / f"store-{uuid.uuid4().hex[:8]}.db"
    try:
        yield str(path)
    finally:
        for suffix in ("", "-wal", "-shm", "-journal"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)


@contextmanager
def fresh_store(engine: str, folder: Path, postgres_url: str, redis_url: str) -> Iterator[str]:
    """A new empty store of `engine`: a SQLite path, a PostgreSQL or a Redis URL.

    A server that fails while the store is made or removed raises `StoreError`.
    """
    try:
        with _fresh_store(engine, folder, postgres_url, redis_url) as store:
            yield store
    except (psycopg.Error, redis.RedisError) as exc:
        raise StoreError(f"the {engine} store: {type(exc).__name__}: {exc}") from exc


@contextmanager
def _fresh_store(engine: str, folder: Path, postgres_url: str, redis_url: str) -> Iterator[str]:
    if engine == "sqlite":
        with sqlite_file(folder) as path:
            yield path
    elif engine == "postgres":
        with postgres_database(postgres_url) as url:
            yield url
    elif engine == "redis":
        with redis_database(redis_url) as url:
            yield url
    else:
        raise ValueError(f"unknown engine {engine!r}")
