"""Lean command paths over redis-py connections, for the engine's hot paths.

redis-py's client spends more time per command in its pool, retry and observability layers
than a local Redis needs to run a script; an enqueue is one command, so that overhead would
halve the producer's rate. These classes keep redis-py's `Connection` (socket handling,
hiredis parsing, TLS, AUTH, timeouts) and skip the rest:

- `SyncWire`: one connection per thread (and per process: a connection inherited through
  `fork` is never used by the child).
- `AsyncWire`: a small stack of idle connections for one event loop; a connection that failed,
  or was interrupted (cancelled) mid-command, is dropped instead of reused.
- `ClusterWire`, `AsyncClusterWire`: Redis Cluster, through redis-py's cluster clients (they
  route by slot and follow MOVED/ASK; there the routing is worth its cost).

Replies are raw (HGETALL is a flat list). Error replies inside a pipeline come back as
`ResponseError` instances in place, so one failed command never desynchronises the connection.
Before use, a connection Redis closed (after a restart) is noticed and replaced, as redis-py's
pool does; nothing is ever sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

_pack_command: Any
try:
    from hiredis import pack_command as _pack_command
except ImportError:  # redis-py packs instead
    _pack_command = None

Command = Sequence[Any]

IDLE_CHECK = 0.5
"""Seconds a connection may sit idle before it is checked for a close by Redis."""
BLOCK_MARGIN = 5.0
"""Seconds past a blocking command's own timeout that its reply may take, before the read
gives up (a Redis that stopped answering)."""


class Interrupted(Exception):
    """A blocking pipeline was cancelled: its block was ended early, and `replies` holds what
    the pipeline's commands answered (they ran), or None when they may not have run."""

    def __init__(self, replies: list[Any] | None) -> None:
        super().__init__("interrupted")
        self.replies = replies


def _pack(conn: Any, commands: Sequence[Command]) -> Any:
    if _pack_command is not None:
        return [b"".join(_pack_command(tuple(c)) for c in commands)]
    return conn.pack_commands(commands)


def _transaction(commands: Sequence[Command]) -> list[Command]:
    return [("MULTI",), *commands, ("EXEC",)]


def _transaction_result(replies: list[Any]) -> list[Any]:
    """The EXEC reply; when Redis refused the transaction, the reason it gave first."""
    result = replies[-1]
    if isinstance(result, BaseException):
        for reply in replies[:-1]:
            if isinstance(reply, BaseException):
                raise reply
        raise result
    return list(result)


class SyncWire:
    def __init__(self, url: str, options: dict[str, Any]) -> None:
        pool = redis.ConnectionPool.from_url(url, **options)
        self._class: Any = pool.connection_class
        self._kwargs = dict(pool.connection_kwargs)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._made: list[tuple[int, Any]] = []

    def _connection(self) -> Any:
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is None or local.pid != os.getpid():
            conn = self._class(**self._kwargs)
            local.conn, local.pid, local.used = conn, os.getpid(), 0.0
            with self._lock:
                self._made.append((local.pid, conn))
        conn.connect()
        now = time.monotonic()
        if now - local.used > IDLE_CHECK:
            # Redis may have closed it (a restart) while this thread was idle: check before
            # sending (a poll), as redis-py's pool does, and connect again.
            try:
                stale = conn.can_read()
            except (RedisConnectionError, RedisTimeoutError, OSError):
                stale = True
            if stale:
                conn.disconnect()
                conn.connect()
        local.used = now
        return conn

    def call(self, command: Command) -> Any:
        conn = self._connection()
        if _pack_command is not None:
            conn.send_packed_command([_pack_command(tuple(command))])
        else:
            conn.send_command(*command)
        return conn.read_response()

    def pipeline(self, commands: Sequence[Command]) -> list[Any]:
        conn = self._connection()
        conn.send_packed_command(_pack(conn, commands))
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(conn.read_response())
            except ResponseError as exc:
                replies.append(exc)
        return replies

    def transaction(self, commands: Sequence[Command]) -> list[Any]:
        return _transaction_result(self.pipeline(_transaction(commands)))

    def load_script(self, text: str) -> None:
        self.call(("SCRIPT", "LOAD", text))

    def close(self) -> None:
        pid = os.getpid()
        with self._lock:
            made, self._made = self._made, []
        for owner, conn in made:
            if owner == pid:
                conn.disconnect()


class AsyncConnections:
    """Makes `redis.asyncio` connections to one URL, with the options redis-py's pool would use."""

    def __init__(self, url: str, options: dict[str, Any]) -> None:
        pool = redis.asyncio.ConnectionPool.from_url(url, **options)
        self._class: Any = pool.connection_class
        self._kwargs = dict(pool.connection_kwargs)

    def new_connection(self) -> Any:
        """A connection, not connected yet."""
        return self._class(**self._kwargs)


async def connect_fresh(conn: Any) -> None:
    """Connect `conn`, and connect it again if Redis closed it while it sat idle (a restart)."""
    await conn.connect()
    # redis-py 8 renamed can_read_destructive to can_read
    can_read = getattr(conn, "can_read", None) or conn.can_read_destructive
    try:
        stale = await can_read()  # an idle connection has nothing to read, unless it was closed
    except (RedisConnectionError, RedisTimeoutError, OSError):
        stale = True
    if stale:
        await conn.disconnect()
        await conn.connect()


class AsyncWire(AsyncConnections):
    def __init__(self, url: str, options: dict[str, Any]) -> None:
        super().__init__(url, options)
        self._idle: list[Any] = []
        self._all: set[Any] = set()

    async def _acquire(self) -> Any:
        if self._idle:
            conn = self._idle.pop()
        else:
            conn = self.new_connection()
            self._all.add(conn)
        try:
            await connect_fresh(conn)
        except BaseException:
            self._all.discard(conn)
            await conn.disconnect(nowait=True)
            raise
        return conn

    async def _run(self, commands: Sequence[Command]) -> list[Any]:
        conn = await self._acquire()
        healthy = False
        try:
            await conn.send_packed_command(_pack(conn, commands))
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await conn.read_response())
                except ResponseError as exc:
                    replies.append(exc)
            healthy = True
            return replies
        finally:
            if healthy:
                self._idle.append(conn)
            else:
                self._all.discard(conn)
                await conn.disconnect(nowait=True)

    async def call(self, command: Command) -> Any:
        [reply] = await self._run([command])
        if isinstance(reply, BaseException):
            raise reply
        return reply

    async def pipeline(self, commands: Sequence[Command]) -> list[Any]:
        return await self._run(commands)

    async def transaction(self, commands: Sequence[Command]) -> list[Any]:
        return _transaction_result(await self._run(_transaction(commands)))

    async def load_script(self, text: str) -> None:
        await self.call(("SCRIPT", "LOAD", text))

    async def call_blocking(self, commands: Sequence[Command], timeout: float) -> list[Any]:
        """Send `commands` in one pipeline, the first a blocking one of `timeout` seconds.

        Redis runs a blocked client's next commands as soon as its block ends, so the rest
        run without another round trip. Cancelled, it ends the block at once (CLIENT UNBLOCK,
        from another connection), still reads every reply, then raises `Interrupted` with them.
        """
        conn = await self._acquire()
        client_id: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        reading = asyncio.ensure_future(self._read_blocking(conn, commands, timeout, client_id))
        try:
            return await asyncio.shield(reading)
        except asyncio.CancelledError:
            await asyncio.wait({client_id, reading}, return_when=asyncio.FIRST_COMPLETED)
            if not reading.done() and client_id.done():
                with contextlib.suppress(RedisError, OSError):
                    await self.call(("CLIENT", "UNBLOCK", client_id.result()))
            try:
                replies = await reading
            except (RedisError, OSError):
                raise Interrupted(None) from None
            raise Interrupted(replies) from None

    async def _read_blocking(
        self,
        conn: Any,
        commands: Sequence[Command],
        timeout: float,
        client_id: asyncio.Future[Any],
    ) -> list[Any]:
        """Send CLIENT ID (answered at once: `client_id`, for CLIENT UNBLOCK) and `commands`;
        read their replies, the first for up to `timeout` seconds and a margin."""
        healthy = False
        try:
            await conn.send_packed_command(_pack(conn, [("CLIENT", "ID"), *commands]))
            client_id.set_result(await conn.read_response())
            replies: list[Any] = []
            for i in range(len(commands)):
                try:
                    if i == 0:
                        replies.append(await conn.read_response(timeout=timeout + BLOCK_MARGIN))
                    else:
                        replies.append(await conn.read_response())
                except ResponseError as exc:
                    replies.append(exc)
            healthy = True
            return replies
        finally:
            if not client_id.done():
                client_id.cancel()
            if healthy:
                self._idle.append(conn)
            else:
                self._all.discard(conn)
                await conn.disconnect(nowait=True)

    async def aclose(self) -> None:
        conns, self._all, self._idle = self._all, set(), []
        for conn in conns:
            await conn.disconnect()


class ClusterWire:
    """Redis Cluster through redis-py's `RedisCluster`, which routes each command to its slot.

    Every script call names keys of one slot, so it lands on the node that owns them; pipelines
    are split per node by redis-py. Transactions are never needed here (the Cluster layout
    writes one queue per script).
    """

    def __init__(self, url: str, options: dict[str, Any]) -> None:
        self.client: Any = redis.cluster.RedisCluster.from_url(url, **options)

    def call(self, command: Command) -> Any:
        return self.client.execute_command(*command)

    def pipeline(self, commands: Sequence[Command]) -> list[Any]:
        pipe = self.client.pipeline()
        for command in commands:
            pipe.execute_command(*command)
        return list(pipe.execute(raise_on_error=False))

    def transaction(self, commands: Sequence[Command]) -> list[Any]:
        raise NotImplementedError("the Cluster layout writes one queue per script")

    def load_script(self, text: str) -> None:
        self.client.script_load(text)  # on every primary

    def close(self) -> None:
        self.client.close()


class AsyncClusterWire:
    """The asynchronous `ClusterWire`, on `redis.asyncio.cluster.RedisCluster`."""

    def __init__(self, url: str, options: dict[str, Any]) -> None:
        self.client: Any = redis.asyncio.cluster.RedisCluster.from_url(url, **options)
        self._socket_timeout = float(options.get("socket_timeout") or 10.0)

    async def call(self, command: Command) -> Any:
        return await self.client.execute_command(*command)

    async def pipeline(self, commands: Sequence[Command]) -> list[Any]:
        pipe = self.client.pipeline()
        for command in commands:
            pipe.execute_command(*command)
        return list(await pipe.execute(raise_on_error=False))

    async def transaction(self, commands: Sequence[Command]) -> list[Any]:
        raise NotImplementedError("the Cluster layout writes one queue per script")

    async def call_blocking(self, commands: Sequence[Command], timeout: float) -> list[Any]:
        """`AsyncWire.call_blocking` in two round trips: the blocking pop first, one per key
        (a Cluster routes one slot per command), shorter than the socket timeout; then the
        rest. Cancelled while blocked, it sends nothing more and raises `Interrupted(None)`;
        cancelled after, it reads the rest's replies and raises `Interrupted` with them."""
        pop, *keys, _ = commands[0]
        seconds = max(min(timeout, 0.5 * self._socket_timeout), 0.001)
        pops = [
            asyncio.ensure_future(self.client.execute_command(pop, key, f"{seconds:.3f}"))
            for key in keys
        ]
        try:
            done, _ = await asyncio.wait(pops, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            for task in pops:
                task.cancel()
            await self._put_back(pops)
            raise Interrupted(None) from None
        for task in pops:
            task.cancel()
        woken = next(iter(done))
        await self._put_back([task for task in done if task is not woken])
        first = woken.result()
        if len(commands) == 1:
            return [first]
        rest = asyncio.ensure_future(self.pipeline(commands[1:]))
        try:
            return [first, *(await asyncio.shield(rest))]
        except asyncio.CancelledError:
            try:
                replies = [first, *(await rest)]
            except (RedisError, OSError):
                raise Interrupted(None) from None
            raise Interrupted(replies) from None

    async def _put_back(self, pops: Sequence[asyncio.Future[Any]]) -> None:
        """Tokens that pops took for nobody (a cancelled wait, or a second queue's token
        while the first one woke it) go back to their lists, for another worker."""
        for task in pops:
            if task.done() and not task.cancelled() and task.exception() is None:
                popped = task.result()
                if popped:
                    with contextlib.suppress(RedisError, OSError):
                        await self.client.execute_command("RPUSH", popped[0], "1")

    async def load_script(self, text: str) -> None:
        await self.client.script_load(text)  # on every primary

    async def aclose(self) -> None:
        await self.client.aclose()
