"""LISTEN on one dedicated connection per backend, on its own thread, to wake idle workers.

Enqueue (and rescue, requeue, retry) send one `pg_notify(channel, queue)` per
queue that got work, inside the writing transaction, so it arrives on commit.
This thread receives them and wakes the `wait` calls interested in that
queue, whatever event loop they run on.

Nothing is lost between a claim and the next `wait`: every notification
bumps a sequence number, `claim` records the number it started at, and
`wait` returns at once if a notification for one of its queues came after
it. A (re)connection bumps every queue, since notifications sent while the
connection was down are gone. When the connection drops (server restart,
terminated backend), the thread reconnects with backoff and logs it; `wait`
keeps returning after its timeout meanwhile, so workers fall back to
polling and never stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from .deadlines import DEADLINES
from .pools import connect_kwargs
from .settings import PostgresSettings

log = logging.getLogger("stagecrew.postgres")

RECONNECT_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
POLL_SECONDS = 0.25
"""How often the thread looks up from the socket to see whether it should stop."""
PING_SECONDS = 30.0
"""How long the connection may stay silent before the thread checks it is still alive (the ping
is given the statement deadline, and the connection TCP keepalives: see settings.py)."""


@dataclass(eq=False, slots=True)
class _Waiter:
    loop: asyncio.AbstractEventLoop
    event: asyncio.Event
    queues: frozenset[str]


class NotificationListener:
    """The LISTEN thread of one backend in one process."""

    def __init__(self, settings: PostgresSettings) -> None:
        self.settings = settings
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._waiters: list[_Waiter] = []
        self._sequence = 0
        self._everything_at = 0
        self._queue_at: dict[str, int] = {}
        self.connected = threading.Event()

    # -- used by the backend ---------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="stagecrew-listen", daemon=True
                )
                self._thread.start()

    @property
    def sequence(self) -> int:
        """Notifications (and reconnections) seen so far."""
        return self._sequence

    def latest(self, queues: Iterable[str]) -> int:
        """The sequence number of the last notification that concerns any of `queues`."""
        with self._lock:
            return max([self._everything_at, *(self._queue_at.get(q, 0) for q in queues)])

    def add_waiter(self, queues: Iterable[str]) -> _Waiter:
        waiter = _Waiter(asyncio.get_running_loop(), asyncio.Event(), frozenset(queues))
        with self._lock:
            self._waiters.append(waiter)
        return waiter

    def remove_waiter(self, waiter: _Waiter) -> None:
        with self._lock:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # -- the thread ----------------------------------------------------------------
    def _wake(self, queue: str | None) -> None:
        with self._lock:
            self._sequence += 1
            if queue is None:
                self._everything_at = self._sequence
            else:
                self._queue_at[queue] = self._sequence
            waiters = [w for w in self._waiters if queue is None or queue in w.queues]
        for waiter in waiters:
            if not waiter.loop.is_closed():
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    waiter.loop.call_soon_threadsafe(waiter.event.set)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self._listen(reconnected=failures > 0)
                failures = 0
            except psycopg.Error as exc:
                self.connected.clear()
                delay = RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)]
                level = logging.WARNING if failures % 12 == 0 else logging.DEBUG  # ~1 a minute
                log.log(
                    level,
                    "LISTEN connection to PostgreSQL %s lost or refused (%s); reconnecting in "
                    "%.2fs, idle workers poll meanwhile",
                    self.settings.where,
                    str(exc).strip() or type(exc).__name__,
                    delay,
                )
                failures += 1
                self._stop.wait(delay)

    def _listen(self, *, reconnected: bool) -> None:
        kwargs = connect_kwargs(self.settings, statement_timeout=True)
        with psycopg.Connection.connect(self.settings.conninfo, **kwargs) as conn:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.settings.channel)))
            self.connected.set()
            if reconnected:
                log.info("LISTEN connection to PostgreSQL %s re-established", self.settings.where)
            self._wake(None)  # whatever was sent while we were not listening
            heard = time.monotonic()
            while not self._stop.is_set():
                for notify in conn.notifies(timeout=POLL_SECONDS):
                    self._wake(notify.payload)
                    heard = time.monotonic()
                if time.monotonic() - heard > PING_SECONDS:
                    # a half-open connection fails here, within the statement deadline
                    with DEADLINES.guard(conn.pgconn.socket, self.settings.statement_deadline):
                        conn.execute("")
                    heard = time.monotonic()
        self.connected.clear()
