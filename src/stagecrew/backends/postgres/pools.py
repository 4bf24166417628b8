"""Connection pools: opened on first use, quick to report a down server, safe after restarts.

psycopg-pool keeps connections and replaces broken ones in the background.
Two things are added here:

- A checkout never hands out a connection the server already closed. While a
  connection sits idle nothing reads its socket, so one the server dropped
  (restart, `pg_terminate_backend`, idle timeout) shows up as a readable
  socket: only then is it pinged, and discarded if dead. A live idle
  connection costs one `select()` call, no round trip.
- A checkout does not wait out the pool's reconnect backoff. If no connection
  is ready within `QUICK_WAIT` seconds although fewer than `max_size` are in
  use here, the pool is still connecting or backing off after an outage: one
  direct connection attempt then either fails at once (a down server, so
  `enqueue` fails fast) or serves this operation and is closed after it. A
  pool whose connections are all in use is simply waited for (`pool_timeout`),
  so a busy process never opens connections beyond `pool_max`.
- A new pool's first checkout waits (up to `QUICK_WAIT`) for the pool's first connection
  instead of asking for one before it is ready: psycopg-pool opens another connection for a
  request that finds none ready, and hands out its idle connections in turn, so a process
  that enqueues from one thread would alternate between two sessions for ever, each statement
  reaching a server process that sat idle twice as long (about 15% slower per enqueue).
- An asyncio pool is closed when its event loop ends (`_close_at_loop_end`):
  psycopg-pool's background tasks swallow the cancellation `asyncio.run` sends
  them at the end while they are connecting, and would then wait forever, so a
  loop that ended during an outage (a store refusing connections) never finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import AsyncConnection, Connection
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from .settings import PostgresSettings

log = logging.getLogger("stagecrew.postgres")

CLOSE_TIMEOUT = 5.0
"""Seconds a pool's close waits for its background tasks before leaving them to finish alone."""
QUICK_WAIT = 0.1
"""Seconds a checkout waits for a pooled connection before trying the server directly."""
FIRST_CONNECTION_POLL = 0.001
"""Seconds between two looks at a new pool for its first connection."""
RECONNECT_TIMEOUT = 10.0
"""Seconds the pool keeps retrying a lost connection in the background before starting over;
short, so that its backoff never grows far past the end of an outage."""
APPLICATION_NAME = "stagecrew"

SyncConnection = Connection[TupleRow]
AsyncConn = AsyncConnection[TupleRow]

_inherited: list[object] = []
"""Pools that belong to a parent process (we were forked): never used, and never garbage
collected, because closing them here would end the parent's sessions."""


def connect_kwargs(
    settings: PostgresSettings, *, statement_timeout: bool = False
) -> dict[str, Any]:
    """Connection options stagecrew adds to the URL's (which win where both are set).

    Sessions are named `stagecrew:<schema>` in `pg_stat_activity`, unless the
    URL sets `application_name`. Every connection gets the connect timeout and
    TCP keepalive settings of `LIBPQ_DEFAULTS` the URL leaves out; with
    `statement_timeout` (stagecrew's own pools, not the tasks' transactions, the
    migration or VACUUM) the server also gets `statement_timeout`, ahead of the
    URL's own `options` so that one set there still wins.
    """
    kwargs: dict[str, Any] = {
        "autocommit": True,
        "fallback_application_name": f"{APPLICATION_NAME}:{settings.schema}"[:63],
        **settings.libpq_defaults,
    }
    if statement_timeout and settings.statement_timeout > 0:
        ours = f"-c statement_timeout={max(1, round(settings.statement_timeout * 1000))}"
        kwargs["options"] = f"{ours} {settings.libpq_options}".rstrip()
    return kwargs


def _has_idle(pool: ConnectionPool[SyncConnection] | AsyncConnectionPool[AsyncConn]) -> bool:
    """The pool holds a connection ready to hand out (or keeps none open: `pool_min=0`)."""
    stats = pool.get_stats()
    return stats.get("pool_available", 0) > 0 or stats.get("pool_min", 0) == 0


def _socket_has_data(fileno: int) -> bool:
    try:
        readable, _, _ = select.select([fileno], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _idle_and_open(conn: SyncConnection | AsyncConn) -> bool:
    return (
        not conn.closed
        and conn.pgconn.transaction_status == TransactionStatus.IDLE
        and not _socket_has_data(conn.pgconn.socket)
    )


class SyncPool:
    """A `ConnectionPool` opened on first use; `connection()` is the only way in.

    `statement_timeout` puts the URL's statement timeout on its connections (stagecrew's
    own statements; not the pool of the tasks' transactions).
    """

    def __init__(
        self, settings: PostgresSettings, name: str, max_size: int, *, statement_timeout: bool
    ) -> None:
        self.settings = settings
        self.name = name
        self.max_size = max_size
        self.kwargs = connect_kwargs(settings, statement_timeout=statement_timeout)
        self._lock = threading.Lock()
        self._pool: ConnectionPool[SyncConnection] | None = None
        self._pid = 0
        self._closed = False
        self._in_use = 0
        self._fresh = False
        """The pool was just opened: no checkout has looked for its first connection yet."""

    def _get_pool(self) -> ConnectionPool[SyncConnection]:
        pool = self._pool
        if pool is not None and self._pid == os.getpid():
            return pool
        with self._lock:
            if self._closed:
                raise psycopg.OperationalError("the store was closed")
            if self._pool is not None and self._pid != os.getpid():
                _inherited.append(self._pool)
                self._pool = None
            if self._pool is None:
                pool = ConnectionPool(
                    self.settings.conninfo,
                    kwargs=self.kwargs,
                    min_size=min(self.settings.pool_min, self.max_size),
                    max_size=self.max_size,
                    timeout=self.settings.pool_timeout,
                    reconnect_timeout=RECONNECT_TIMEOUT,
                    name=self.name,
                    open=False,
                )
                pool.open(wait=False)
                self._pool, self._pid = pool, os.getpid()
                self._fresh = True
            return self._pool

    def _direct(self) -> SyncConnection:
        return psycopg.Connection.connect(self.settings.conninfo, **self.kwargs)

    def _getconn(self, pool: ConnectionPool[SyncConnection]) -> SyncConnection | None:
        """A pooled connection, or None if the pool cannot give one now and is not just busy."""
        try:
            return pool.getconn(timeout=QUICK_WAIT)
        except PoolTimeout:
            if self._in_use < self.max_size:
                return None
        return pool.getconn(timeout=self.settings.pool_timeout)

    def _checkout(self) -> tuple[SyncConnection, ConnectionPool[SyncConnection] | None]:
        pool = self._get_pool()
        if self._fresh:
            self._fresh = False
            deadline = time.monotonic() + QUICK_WAIT
            while not _has_idle(pool) and time.monotonic() < deadline:
                time.sleep(FIRST_CONNECTION_POLL)
        for _ in range(self.max_size + 1):
            conn = self._getconn(pool)
            if conn is None:
                break
            if _idle_and_open(conn) or _still_alive(conn):
                return conn, pool
            conn.close()
            pool.putconn(conn)  # a closed connection is dropped and replaced
        return self._direct(), None  # raises at once if the server is down

    @contextlib.contextmanager
    def connection(self) -> Iterator[SyncConnection]:
        """A live connection in autocommit mode, returned (or closed) afterwards."""
        conn, pool = self._checkout()
        if pool is not None:
            with self._lock:
                self._in_use += 1
        try:
            yield conn
        finally:
            if pool is None:
                conn.close()
            else:
                with self._lock:
                    self._in_use -= 1
                pool.putconn(conn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None and self._pid == os.getpid():
            pool.close(timeout=CLOSE_TIMEOUT)


def _still_alive(conn: SyncConnection) -> bool:
    """Ping a connection whose idle socket had data: the server may have closed it."""
    if conn.closed:
        return False
    try:
        conn.execute("")
    except psycopg.Error:
        return False
    return conn.pgconn.transaction_status == TransactionStatus.IDLE


async def _still_alive_async(conn: AsyncConn) -> bool:
    if conn.closed:
        return False
    try:
        await conn.execute("")
    except psycopg.Error:
        return False
    return conn.pgconn.transaction_status == TransactionStatus.IDLE


@dataclass(slots=True)
class _LoopPool:
    pool: AsyncConnectionPool[AsyncConn]
    connections: weakref.WeakSet[AsyncConn]
    in_use: int = 0
    opened: bool = False
    closer: asyncio.Task[None] | None = None
    """Closes the pool when the loop ends (see `_close_at_loop_end`)."""


async def _close_at_loop_end(pool: AsyncConnectionPool[AsyncConn]) -> None:
    """Wait until cancelled, then close `pool`: `asyncio.run` cancels every task at its end.

    psycopg-pool's worker tasks catch `CancelledError` while they run a job (a connection
    attempt, say during an outage) and go back to waiting for the next job, so the
    cancellation `asyncio.run` sends every task at the end is lost on them and the loop
    waits for them for ever. Closing the pool sends each worker the stop job it waits for.
    """
    try:
        await asyncio.get_running_loop().create_future()
    except asyncio.CancelledError:  # not GeneratorExit: a task destroyed unrun cannot await
        await pool.close(timeout=CLOSE_TIMEOUT)
        raise


class AsyncPools:
    """One `AsyncConnectionPool` per event loop, opened on first use in that loop.

    asyncio objects belong to the loop that made them, and a backend may
    outlive a loop (each `asyncio.run` makes a new one), so pools are kept per
    loop. A pool whose loop has closed is dropped, its connections closed.
    """

    def __init__(
        self, settings: PostgresSettings, name: str, max_size: int, *, statement_timeout: bool
    ) -> None:
        self.settings = settings
        self.name = name
        self.max_size = max_size
        self.kwargs = connect_kwargs(settings, statement_timeout=statement_timeout)
        self._lock = threading.Lock()
        self._pools: dict[asyncio.AbstractEventLoop, _LoopPool] = {}
        self._pid = os.getpid()
        self._closed = False
        self._closing_tasks: set[asyncio.Task[None]] = set()

    async def _get_pool(self) -> _LoopPool:
        loop = asyncio.get_running_loop()
        entry = self._pools.get(loop)
        if entry is None or self._pid != os.getpid():
            with self._lock:
                if self._closed:
                    raise psycopg.OperationalError("the store was closed")
                if self._pid != os.getpid():
                    _inherited.append(self._pools)
                    self._pools, self._pid = {}, os.getpid()
                for old in [lp for lp in self._pools if lp.is_closed()]:
                    _finish(self._pools.pop(old))
                entry = self._pools.get(loop)
                if entry is None:
                    entry = self._new_pool()
                    self._pools[loop] = entry
        if not entry.opened:
            await entry.pool.open(wait=False)
            entry.opened = True
            entry.closer = asyncio.create_task(
                _close_at_loop_end(entry.pool), name=f"{self.name}: close at loop end"
            )
            deadline = time.monotonic() + QUICK_WAIT
            while not _has_idle(entry.pool) and time.monotonic() < deadline:
                await asyncio.sleep(FIRST_CONNECTION_POLL)
        return entry

    def _new_pool(self) -> _LoopPool:
        connections: weakref.WeakSet[AsyncConn] = weakref.WeakSet()

        async def track(conn: AsyncConn) -> None:
            connections.add(conn)  # so they can be closed even once the loop is gone

        pool = AsyncConnectionPool(
            self.settings.conninfo,
            kwargs=self.kwargs,
            min_size=min(self.settings.pool_min, self.max_size),
            max_size=self.max_size,
            timeout=self.settings.pool_timeout,
            reconnect_timeout=RECONNECT_TIMEOUT,
            name=self.name,
            configure=track,
            open=False,
        )
        return _LoopPool(pool, connections)

    async def _direct(self) -> AsyncConn:
        return await psycopg.AsyncConnection.connect(self.settings.conninfo, **self.kwargs)

    async def _getconn(self, entry: _LoopPool) -> AsyncConn | None:
        """A pooled connection, or None if the pool cannot give one now and is not just busy."""
        try:
            return await entry.pool.getconn(timeout=QUICK_WAIT)
        except PoolTimeout:
            if entry.in_use < self.max_size:
                return None
        return await entry.pool.getconn(timeout=self.settings.pool_timeout)

    async def _checkout(self) -> tuple[AsyncConn, _LoopPool | None]:
        entry = await self._get_pool()
        for _ in range(self.max_size + 1):
            conn = await self._getconn(entry)
            if conn is None:
                break
            if _idle_and_open(conn) or await _still_alive_async(conn):
                return conn, entry
            await conn.close()
            await entry.pool.putconn(conn)
        return await self._direct(), None

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConn]:
        """A live connection in autocommit mode, returned (or closed) afterwards."""
        conn, entry = await self._checkout()
        if entry is not None:
            entry.in_use += 1
        try:
            yield conn
        finally:
            if entry is None:
                await conn.close()
            else:
                entry.in_use -= 1
                await entry.pool.putconn(conn)

    async def aclose(self) -> None:
        """Close the pool of the running loop properly (the others as `close` does)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._pools.pop(loop, None)
        if entry is not None:
            await entry.pool.close(timeout=CLOSE_TIMEOUT)
            if entry.closer is not None:
                entry.closer.cancel()
        self.close()

    def close(self) -> None:
        """Close every loop's pool: awaited where its loop runs elsewhere, else by force."""
        with self._lock:
            self._closed = True
            pools, self._pools = self._pools, {}
        if self._pid != os.getpid():
            _inherited.append(pools)
            return
        for loop, entry in pools.items():
            if loop.is_closed() or not loop.is_running():
                _finish(entry)
                continue
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:  # called from inside that loop: close in the background
                task = loop.create_task(entry.pool.close(timeout=CLOSE_TIMEOUT))
                self._closing_tasks.add(task)
                task.add_done_callback(self._closing_tasks.discard)
            else:
                future = asyncio.run_coroutine_threadsafe(
                    entry.pool.close(timeout=CLOSE_TIMEOUT), loop
                )
                try:
                    future.result(timeout=2 * CLOSE_TIMEOUT)
                except Exception:  # the loop stopped meanwhile
                    _finish(entry)
            if entry.closer is not None:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(entry.closer.cancel)


def _finish(entry: _LoopPool) -> None:
    """Close a pool's connections without its (closed or stopped) event loop."""
    for conn in list(entry.connections):
        if not conn.closed:
            with contextlib.suppress(Exception):
                conn.pgconn.finish()
