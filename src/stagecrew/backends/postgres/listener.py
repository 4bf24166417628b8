"""LISTEN on one dedicated connection per backend, on its own thread, to wake idle workers
and the callers waiting for a job to finish.

Enqueue (and rescue, requeue, retry) send one `pg_notify(channel, queue)` per
queue that got work, inside the writing transaction, so it arrives on commit.
This thread receives them and wakes the `wait` calls interested in that
queue, whatever event loop they run on.

Statements that make jobs final (ack.sql, cancel.sql, settle_lost.sql) send at most one
`pg_notify(finished_channel, ids)` each, the ids comma-joined ('' for "any job"); the
thread wakes the finish waiters (`FinishWaiter`, of `wait_finished`) of those ids, in
threads or on event loops. A waiter is registered before it reads the job, so a finish
committed after that read wakes it: by its notification, or, if the connection was down
when it was sent, by the (re)connection, which wakes every finish waiter.

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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import psycopg
from psycopg import sql

from ..ops import Op
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
FINISHED_PAYLOAD_BYTES = 4000
"""The most bytes of comma-joined ids a finished notification carries, well under NOTIFY's 8000;
a statement that finished more sends '' ("any job") instead."""
LISTEN_GRACE_SECONDS = 1.0
"""How long a finish wait that finds the thread not listening (the first in a process, or during
a reconnection) waits for it before it reads the job anyway."""
UNHEARD_POLL_SECONDS = 0.05
"""How often a finish wait reads the job while the thread cannot listen (as `Backend`'s fallback
poll does), so a LISTEN connection the server refuses slows `result()` down but never stalls it."""


@dataclass(eq=False, slots=True)
class _Waiter:
    loop: asyncio.AbstractEventLoop
    event: asyncio.Event
    queues: frozenset[str]


class FinishWaiter:
    """One `wait_finished` call: woken by the listener thread, waited on by a thread or a loop.

    `wakes` counts the wake-ups (the thread adds one under the listener's lock, then rings);
    a wait is for a wake-up after a count seen earlier, so one that came before the job was
    read (and so is answered by that read) never ends the wait that follows the read.
    """

    __slots__ = ("_event", "_loop", "_thread_event", "armed", "job_id", "wakes")

    def __init__(self, job_id: int, loop: asyncio.AbstractEventLoop | None) -> None:
        self.job_id = job_id
        self.wakes = 0
        self.armed = False
        """The thread was listening when this waiter was registered."""
        self._loop = loop
        self._event = asyncio.Event() if loop is not None else None
        self._thread_event = threading.Event() if loop is None else None

    def _ring(self) -> None:
        if self._thread_event is not None:
            self._thread_event.set()
        elif self._loop is not None and self._event is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._event.set)

    def _left(self, event: threading.Event | asyncio.Event, seen: int, deadline: float) -> float:
        """Clear `event`, then the seconds left to wait on it for a wake-up after `seen`
        (0 or less: woken, or out of time). Cleared first, so a ring after the check is kept."""
        event.clear()
        return 0.0 if self.wakes != seen else deadline - time.monotonic()

    def wait(self, seen: int, seconds: float) -> bool:
        """Block this thread until a wake-up after `seen`, or `seconds`; True if woken."""
        event = self._thread_event
        assert event is not None, "a waiter of an event loop is awaited with wait_async"
        deadline = time.monotonic() + seconds
        while (left := self._left(event, seen, deadline)) > 0:
            event.wait(left)
        return self.wakes != seen

    async def wait_async(self, seen: int, seconds: float) -> bool:
        """`wait` on the waiter's event loop, which it never blocks."""
        event = self._event
        assert event is not None, "a waiter of a thread is waited on with wait"
        deadline = time.monotonic() + seconds
        while (left := self._left(event, seen, deadline)) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), left)
        return self.wakes != seen


@dataclass(frozen=True, slots=True)
class Pause:
    """A step of a finish wait: wait for a wake-up after `seen`, for at most `seconds`.
    Answered with True if woken."""

    seen: int
    seconds: float


class Read:
    """A step of a finish wait: read the job. Answered with True if it is final or gone."""

    __slots__ = ()


READ = Read()


def finished_ids(payload: str) -> frozenset[int] | None:
    """The job ids a finished-channel payload names; None for "any job" ('' or unreadable)."""
    if not payload:
        return None
    try:
        return frozenset(int(part) for part in payload.split(","))
    except ValueError:
        return None


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
        self._finish_waiters: dict[int, list[FinishWaiter]] = {}
        self._listening = False
        """Both LISTENs are in effect (changed under the lock, with the wake of every waiter)."""
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

    @contextlib.contextmanager
    def finish_waiter(
        self, job_id: int, loop: asyncio.AbstractEventLoop | None = None
    ) -> Iterator[FinishWaiter]:
        """A waiter for job `job_id` (on `loop`, or for a thread), registered while the block runs.

        Starts the thread if it is not running (a process that never waits for a result
        never opens this connection).
        """
        self.start()
        waiter = FinishWaiter(job_id, loop)
        with self._lock:
            waiter.armed = self._listening
            self._finish_waiters.setdefault(job_id, []).append(waiter)
        try:
            yield waiter
        finally:
            with self._lock:
                waiters = self._finish_waiters[job_id]
                waiters.remove(waiter)
                if not waiters:
                    del self._finish_waiters[job_id]

    def finish_steps(self, waiter: FinishWaiter, timeout: float) -> Op[None]:
        """The steps of one finish wait of a registered `waiter` (`READ`, `Pause`), for
        `Backend._wait_finished` to drive, in a thread or on a loop.

        The waiter was registered before the first read: it waits for a wake-up after that
        read, returns when the job is final or gone, or a wake-up came (the caller reads the
        job again), or after `timeout`. While the thread is not listening it reads the job
        every `UNHEARD_POLL_SECONDS` instead.
        """
        deadline = time.monotonic() + timeout
        if not waiter.armed:  # the thread is (re)connecting; its LISTEN will wake this waiter
            yield Pause(0, min(timeout, LISTEN_GRACE_SECONDS))
        while True:
            seen, listening = waiter.wakes, self._listening
            if (yield READ):
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            pause = remaining if listening else min(remaining, UNHEARD_POLL_SECONDS)
            if (yield Pause(seen, pause)):
                return
            if listening:
                return

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._listened(False)  # a finish wait in progress reads the job again, and is told

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

    def _wake_finished(self, payload: str) -> None:
        """Wake the finish waiters of the ids in `payload` (every one for '')."""
        if not self._finish_waiters:  # nobody in this process waits: nothing to read
            return
        ids = finished_ids(payload)
        with self._lock:
            if ids is None:
                woken = [w for waiters in self._finish_waiters.values() for w in waiters]
            else:
                woken = [w for job_id in ids for w in self._finish_waiters.get(job_id, ())]
            for waiter in woken:
                waiter.wakes += 1
        for waiter in woken:
            waiter._ring()

    def _listened(self, listening: bool) -> None:
        """The LISTENs took effect (or stopped): wake every finish waiter, since whatever was
        sent while the thread was not listening is lost."""
        with self._lock:
            self._listening = listening
            woken = [w for waiters in self._finish_waiters.values() for w in waiters]
            for waiter in woken:
                waiter.wakes += 1
        for waiter in woken:
            waiter._ring()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self._listen(reconnected=failures > 0)
                failures = 0
            except psycopg.Error as exc:
                self.connected.clear()
                self._listened(False)  # a waiter that saw it listening must not sleep on
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
        queues, finished = self.settings.channel, self.settings.finished_channel
        with psycopg.Connection.connect(self.settings.conninfo, **kwargs) as conn:
            for channel in (queues, finished):
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            self.connected.set()
            if reconnected:
                log.info("LISTEN connection to PostgreSQL %s re-established", self.settings.where)
            # whatever was sent while we were not listening
            self._wake(None)
            self._listened(True)
            heard = time.monotonic()
            while not self._stop.is_set():
                for notify in conn.notifies(timeout=POLL_SECONDS):
                    if notify.channel == finished:
                        self._wake_finished(notify.payload)
                    else:
                        self._wake(notify.payload)
                    heard = time.monotonic()
                if time.monotonic() - heard > PING_SECONDS:
                    # a half-open connection fails here, within the statement deadline
                    with DEADLINES.guard(conn.pgconn.socket, self.settings.statement_deadline):
                        conn.execute("")
                    heard = time.monotonic()
        self.connected.clear()
        with self._lock:
            self._listening = False
