"""Write jobs straight into a store with the engine's own SQL or Redis commands.

These bypass the producer (no validation, no encoding): what an attacker with
write access to the store, a buggy script or a half-finished migration could
leave there. Every writer stores a due, available job in the given queue.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping
from typing import Any

import psycopg
import redis
from psycopg import sql

from stagecrew.backends.postgres.settings import parse_url as parse_postgres_url
from stagecrew.backends.redis.keys import Keys
from stagecrew.backends.redis.keys import parse_url as parse_redis_url
from stagecrew.backends.sqlite.backend import _parse_url as parse_sqlite_url


class AsBlob(bytes):
    """On SQLite, store these bytes as a BLOB (plain bytes are stored as TEXT)."""


class RawWriteRefused(Exception):
    """The engine itself refuses to store this value (for example PostgreSQL and invalid UTF-8)."""


def write_raw_job(
    url: str,
    task: str | bytes,
    payload: bytes,
    *,
    queue: str = "default",
    scheduled: bool = False,
    fields: Mapping[str, Any] | None = None,
) -> int:
    """Store one due job as raw bytes (available, or `scheduled` with run_at passed); its id.

    `fields` overrides stored columns or hash fields as they are. SQLite: bytes
    are stored as TEXT even when they are not valid UTF-8 (as `CAST(x AS TEXT)`
    does), `AsBlob` as a BLOB, anything else as it is. Redis: bytes or str,
    None leaves the field out.
    """
    state = "scheduled" if scheduled else "available"
    if url.startswith("sqlite:"):
        return _write_sqlite(url, task, payload, queue, state, fields or {})
    if url.startswith(("postgres:", "postgresql:")):
        return _write_postgres(url, task, payload, queue, state, fields or {})
    if url.startswith(("redis:", "rediss:")):
        return _write_redis(url, task, payload, queue, state, fields or {})
    raise ValueError(f"no raw writer for {url!r}")


def _write_sqlite(
    url: str, task: str | bytes, payload: bytes, queue: str, state: str, fields: Mapping[str, Any]
) -> int:
    path, _, _ = parse_sqlite_url(url)
    now = time.time() - 1.0
    columns: dict[str, Any] = {
        "task": task,
        "payload": payload,
        "queue": queue,
        "state": state,
        "priority": 0,
        "run_at": now,
        "order_at": now,
        "max_attempts": 20,
        "enqueued_at": now,
        **fields,
    }
    values = [
        "CAST(? AS TEXT)" if isinstance(v, bytes) and not isinstance(v, AsBlob) else "?"
        for v in columns.values()
    ]
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        cursor = conn.execute(
            f"INSERT INTO stagecrew_jobs ({', '.join(columns)}) VALUES ({', '.join(values)})",
            [bytes(v) if isinstance(v, AsBlob) else v for v in columns.values()],
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid
    finally:
        conn.close()


def _write_postgres(
    url: str, task: str | bytes, payload: bytes, queue: str, state: str, fields: Mapping[str, Any]
) -> int:
    settings = parse_postgres_url(url)
    now = time.time() - 1.0
    columns: dict[str, Any] = {
        "task": task.decode() if isinstance(task, bytes) else task,
        "queue": queue,
        "state": state,
        "priority": 0,
        "run_at": now,
        "order_at": now,
        "max_attempts": 20,
        "enqueued_at": now,
        **fields,
    }
    statement = sql.SQL(
        "INSERT INTO {table} (payload, {names}) VALUES (convert_from(%s, 'UTF8'), {values}) "
        "RETURNING id"
    ).format(
        table=sql.Identifier(settings.schema, "jobs"),
        names=sql.SQL(", ").join(sql.Identifier(n) for n in columns),
        values=sql.SQL(", ").join(sql.Placeholder() for _ in columns),
    )
    try:
        with psycopg.connect(settings.conninfo, autocommit=True) as conn:
            row = conn.execute(statement, [payload, *columns.values()]).fetchone()
    except (psycopg.DataError, UnicodeDecodeError) as exc:
        raise RawWriteRefused(str(exc)) from exc
    assert row is not None
    return int(row[0])


def _write_redis(
    url: str, task: str | bytes, payload: bytes, queue: str, state: str, fields: Mapping[str, Any]
) -> int:
    settings = parse_redis_url(url)
    keys = Keys(settings.prefix, per_queue_globals=settings.cluster_layout)
    queue_keys = keys.queue(queue)
    client = redis.Redis.from_url(settings.redis_url)
    try:
        job_id = int(client.incr(queue_keys.keys[10]))
        now = time.time() - 1.0
        mapping: dict[str, Any] = {
            "task": task,
            "state": state,
            "payload": payload,
            "priority": "0",
            "run_at": repr(now),
            "max_attempts": "20",
            "enqueued_at": repr(now),
            **fields,
        }
        present = {k: v for k, v in mapping.items() if v is not None}
        job_key = queue_keys.job(job_id)
        member = f"{round(now * 1_000_000):017d}:{chr(48 + len(str(job_id)))}{job_id}"
        pipe = client.pipeline(transaction=True)
        pipe.hset(job_key, mapping=present)
        if state == "scheduled":
            pipe.zadd(queue_keys.keys[1], {str(job_id): now})
        else:
            pipe.zadd(queue_keys.keys[0], {member: 0})
        pipe.zadd(queue_keys.keys[6], {str(job_id): job_id})
        pipe.sadd(keys.queues, queue)
        pipe.set(queue_keys.registered, "1")
        pipe.execute()
        return job_id
    finally:
        client.close()
