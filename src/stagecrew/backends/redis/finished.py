"""Waiting for a job to finish (`wait_finished`): classic pub/sub on each queue's T:finished.

The scripts that make jobs final (ack.lua, cancel.lua, rescue.lua, release_worker.lua) publish
once per call, after their writes, on the queue's T:finished channel: the ids that became final,
or '' for "any job of this queue" (see keys.py); nothing when no job became final.

A waiter subscribes to its job's channel and waits for Redis to confirm; only then does it read
the job (`RedisBackend._wait_finished_async`), so that a finish the read did not see is one whose
message is on its way. Each event loop has one `FinishedListener`: one connection and one reader
task for every waiter on that loop, subscribed to a channel while anyone waits on it. The
synchronous form waits on a loop of its own (`LoopThread`, one thread per backend, started on
first use), so the waiting threads of a process share one connection too. When the connection
fails, every waiter returns at once (its caller reads the job again) rather than trust a
subscription that may have missed a message; a failure while subscribing raises.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError

from .wire import AsyncConnections, connect_fresh

T = TypeVar("T")

log = logging.getLogger("stagecrew.redis")

READ_SECONDS = 60.0
"""How long one read of the subscription waits before it simply reads again."""

_Confirmation = asyncio.Future[BaseException | None]
"""Resolved when Redis confirms a SUBSCRIBE: None, or the failure that ended the connection."""


class FinishedListener:
    """One event loop's subscription to the T:finished channels its waiters wait on.

    Only the reader task reads the connection; waiters only send SUBSCRIBE and UNSUBSCRIBE, which
    Redis answers in order, so each channel's confirmations meet its SUBSCRIBEs in a queue. The
    reader runs while the connection has subscriptions; the connection stays open in between.
    """

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect
        self._conn: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._connecting = asyncio.Lock()
        self._waiters: dict[bytes, dict[bytes, list[asyncio.Event]]] = {}
        """Channel -> job id (as published) -> the events of the waits for that job."""
        self._subscribed: set[bytes] = set()
        """Channels SUBSCRIBEd on the current connection and not UNSUBSCRIBEd since."""
        self._confirmations: dict[bytes, deque[_Confirmation]] = {}

    @classmethod
    def from_url(cls, url: str, options: dict[str, Any]) -> FinishedListener:
        return cls(AsyncConnections(url, options).new_connection)

    @contextlib.asynccontextmanager
    async def watch(
        self, channel: str, job_id: int, timeout: float
    ) -> AsyncIterator[asyncio.Event | None]:
        """Listen on `channel` for `job_id`, subscribed and confirmed on entry.

        Yields an event that is set by a message naming the job (or any job), or when the
        connection fails; None when Redis did not confirm within `timeout`.
        """
        name, key = channel.encode(), str(job_id).encode()
        event = asyncio.Event()
        self._waiters.setdefault(name, {}).setdefault(key, []).append(event)
        try:
            confirmed = await self._subscribe(name, timeout)
            yield event if confirmed else None
        finally:
            await self._unwatch(name, key, event)

    async def _subscribe(self, name: bytes, timeout: float) -> bool:
        if name in self._subscribed:
            pending = self._confirmations.get(name)
            if not pending:
                return True
            confirmation = pending[-1]
        else:
            conn = await self._connection()
            confirmation = asyncio.get_running_loop().create_future()
            self._confirmations.setdefault(name, deque()).append(confirmation)
            self._subscribed.add(name)
            try:
                await conn.send_command("SUBSCRIBE", name, check_health=False)
            except BaseException as exc:  # a command sent in part: the connection is unusable
                self._fail(conn, exc)
                raise
        try:
            failure = await asyncio.wait_for(asyncio.shield(confirmation), timeout)
        except TimeoutError:
            return False
        if isinstance(failure, Exception):  # Redis refused, or could not be reached: say so
            raise failure
        # confirmed; or the connection was dropped as another wait was interrupted, which has
        # set this wait's event already: it returns at once
        return True

    async def _unwatch(self, name: bytes, key: bytes, event: asyncio.Event) -> None:
        waiting = self._waiters[name]
        events = waiting[key]
        events.remove(event)
        if not events:
            del waiting[key]
        if waiting:
            return
        del self._waiters[name]
        conn = self._conn
        if conn is None or name not in self._subscribed:
            return
        self._subscribed.discard(name)
        try:
            await conn.send_command("UNSUBSCRIBE", name, check_health=False)
        except BaseException as exc:
            self._fail(conn, exc)
            if not isinstance(exc, Exception):
                raise

    async def _connection(self) -> Any:
        """The connection, connected, with its reader running."""
        async with self._connecting:
            conn = self._conn
            if conn is None or self._reader is None:  # new, or idle since its last subscription
                conn = conn or self._connect()
                try:
                    await connect_fresh(conn)
                except BaseException:
                    self._conn = None
                    with contextlib.suppress(Exception):
                        await conn.disconnect(nowait=True)
                    raise
                self._conn = conn
                self._reader = asyncio.get_running_loop().create_task(self._read(conn))
            return conn

    async def _read(self, conn: Any) -> None:
        """Read `conn` until it has no subscription left (then leave it open, idle) or fails."""
        idle = False
        try:
            while not idle:
                reply = await conn.read_response(timeout=READ_SECONDS, disconnect_on_error=True)
                if reply is None:  # nothing came within READ_SECONDS
                    continue
                self._dispatch(reply)
                # the last UNSUBSCRIBE answered (no subscription left), and none sent since
                if reply[0] == b"unsubscribe" and reply[2] == 0 and not self._subscribed:
                    idle = True
                    self._reader = None
        except Exception as exc:  # RedisError, OSError, a reply of a shape not expected here
            self._fail(conn, exc)
        finally:
            if not idle:
                with contextlib.suppress(Exception):
                    await conn.disconnect(nowait=True)

    def _dispatch(self, reply: list[Any]) -> None:
        kind, name = reply[0], reply[1]
        if kind == b"message":
            waiting = self._waiters.get(name)
            if waiting:
                ids = reply[2]
                found = waiting.values() if not ids else map(waiting.get, ids.split(b" "))
                for events in found:
                    for event in events or ():
                        event.set()
        elif kind == b"subscribe":
            pending = self._confirmations.get(name)
            if pending:
                confirmation = pending.popleft()
                if not pending:
                    del self._confirmations[name]
                if not confirmation.done():
                    confirmation.set_result(None)

    def _fail(self, conn: Any, exc: BaseException) -> None:
        """Drop the connection and wake every waiter: none may trust it now."""
        if conn is not self._conn:
            return
        log.debug("finish subscription failed (%r); its waiters return", exc)
        reader, self._reader, self._conn = self._reader, None, None
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()  # it disconnects
        self._subscribed.clear()
        confirmations, self._confirmations = self._confirmations, {}
        for pending in confirmations.values():
            for confirmation in pending:
                if not confirmation.done():
                    confirmation.set_result(exc)
        for waiting in self._waiters.values():
            for events in waiting.values():
                for event in events:
                    event.set()

    async def aclose(self) -> None:
        reader, conn = self._reader, self._conn
        if conn is None:
            return
        self._fail(conn, RedisConnectionError("the backend was closed"))
        if reader is not None:
            with contextlib.suppress(BaseException):
                await reader
        with contextlib.suppress(Exception):
            await conn.disconnect(nowait=True)


class LoopThread:
    """An event loop on a daemon thread, started on first use: where the synchronous
    `wait_finished` calls of every thread wait, on one `FinishedListener`."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0

    def run(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run the wait `coroutine` on the thread's loop to its end (or raise its error).

        A wait cut short by `close` (its loop stops under it) just returns: a waiter may
        always return early, and reads the job again.
        """
        future = asyncio.run_coroutine_threadsafe(coroutine, self._running())
        try:
            future.result()
        except concurrent.futures.CancelledError:
            return
        finally:
            future.cancel()  # an interrupted caller (KeyboardInterrupt) leaves no wait behind

    def _running(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():  # a forked child starts its own
                ready = threading.Event()
                thread = threading.Thread(
                    target=self._serve, args=(ready,), name=self._name, daemon=True
                )
                thread.start()
                ready.wait()
                self._thread, self._pid = thread, os.getpid()
            assert self._loop is not None
            return self._loop

    def _serve(self, ready: threading.Event) -> None:
        async def serve() -> None:
            self._stop = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            ready.set()
            await self._stop.wait()

        asyncio.run(serve())  # at its end, the loop's side (and listener) is closed

    def close(self) -> None:
        with self._lock:
            loop, stop, thread = self._loop, self._stop, self._thread
            self._loop = self._stop = self._thread = None
            if loop is None or stop is None or thread is None or self._pid != os.getpid():
                return
        with contextlib.suppress(RuntimeError):  # its loop has ended already
            loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
