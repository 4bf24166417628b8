"""Client-side deadlines for statements: a peer that stopped answering fails a call, not hangs it.

libpq has no read timeout. TCP keepalives and `tcp_user_timeout` notice a peer that is gone,
and the server's `statement_timeout` a statement that runs too long, but none of them notices
a connection whose other end still acknowledges packets and never answers: a frozen server or
pooler, a middlebox that swallows traffic. A statement there would wait for ever, and with it
the worker's heartbeats (so its leases expire) or its acks.

So every statement stagecrew sends on its own connections is watched: `DEADLINES.guard` gives
it so many seconds to answer, and past that one thread (per process) shuts the connection's
socket down. The call
that waits on it then fails at once with a connection error (`StatementDeadlineError` when
the deadline was the cause), and the pool replaces the connection. Watching a duplicate of the
socket's descriptor keeps the deadline from ever touching a descriptor number reused elsewhere.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import threading
import time

import psycopg

POLL_SECONDS = 0.25
"""How often the deadline thread looks at the watched statements."""
IDLE_POLLS = 40
"""Polls without a watched statement after which the thread sleeps until the next one."""


class StatementDeadlineError(psycopg.OperationalError):
    """The server did not answer a statement within its deadline; the connection was closed."""


class Watch:
    """One watched statement: its deadline, and a duplicate of its connection's socket."""

    __slots__ = ("deadline", "fd", "key")

    def __init__(self, key: int, fd: int, seconds: float) -> None:
        self.key = key
        self.fd = fd
        self.deadline = time.monotonic() + seconds


class Deadlines:
    """The statements in flight in this process that have a deadline, and the thread enforcing it.

    Registering and finishing a watch take no lock: each is one dict operation, atomic in
    CPython, and whichever side pops a watch first owns its descriptor (and closes it).
    """

    def __init__(self) -> None:
        self._watched: dict[int, Watch] = {}
        self._keys = itertools.count()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._asleep = False
        """The thread waits for a wake-up (nothing watched for a while); else it polls."""
        os.register_at_fork(after_in_child=self._forget)

    def watch(self, fileno: int, seconds: float) -> Watch:
        """Give the statement about to be sent on socket `fileno` this long to answer."""
        if self._thread is None:
            self._start()
        watch = Watch(next(self._keys), os.dup(fileno), seconds)
        self._watched[watch.key] = watch
        if self._asleep:
            self._wake.set()
        return watch

    def done(self, watch: Watch) -> bool:
        """End a statement's deadline; True if it had passed (and the socket was shut down)."""
        if self._watched.pop(watch.key, None) is None:
            return True  # the deadline thread took it and closed the duplicate
        os.close(watch.fd)
        return False

    def guard(self, fileno: int, seconds: float | None) -> Guard | contextlib.nullcontext[None]:
        """A context manager watching its block as one statement (none if `seconds` is None)."""
        return _NO_DEADLINE if seconds is None else Guard(self, fileno, seconds)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                thread = threading.Thread(
                    target=self._enforce, name="stagecrew-deadlines", daemon=True
                )
                thread.start()
                self._thread = thread

    def _forget(self) -> None:
        """In a child after fork: the parent's statements are the parent's; no thread yet."""
        self._watched = {}
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread = None
        self._asleep = False

    def _enforce(self) -> None:
        """Poll the watched statements; sleep until woken once none were watched for a while.

        Polling (rather than a wake-up per statement) keeps `watch` cheap on the hot path:
        a deadline is seconds away, so a quarter of a second late is on time.
        """
        watched, wake = self._watched, self._wake
        idle_polls = 0
        while True:
            if watched:
                idle_polls = 0
                now = time.monotonic()
                for key, watch in list(watched.items()):
                    if watch.deadline <= now and watched.pop(key, None) is not None:
                        _shut_down(watch.fd)
            else:
                idle_polls += 1
            if idle_polls >= IDLE_POLLS:
                self._asleep = True  # before the check: a watch added after it wakes us
                if not watched:
                    wake.wait()
                self._asleep = False
                wake.clear()
                idle_polls = 0
            else:
                time.sleep(POLL_SECONDS)


class Guard:
    """Watches its block as one statement; a failure past the deadline is reported as such.

    A block that succeeded although its deadline passed meanwhile did succeed: that is not
    turned into an error (the pool notices the shut-down socket and drops the connection).
    """

    __slots__ = ("_deadlines", "_seconds", "_watch")

    def __init__(self, deadlines: Deadlines, fileno: int, seconds: float) -> None:
        self._deadlines = deadlines
        self._seconds = seconds
        self._watch = deadlines.watch(fileno, seconds)

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        passed = self._deadlines.done(self._watch)
        if passed and isinstance(exc, psycopg.OperationalError):
            raise deadline_error(self._seconds) from exc


_NO_DEADLINE: contextlib.nullcontext[None] = contextlib.nullcontext()


DEADLINES = Deadlines()
"""The one deadline thread of this process, shared by every PostgreSQL store in it."""


def deadline_error(seconds: float) -> StatementDeadlineError:
    return StatementDeadlineError(
        f"the server did not answer within {seconds:g}s, so the connection was closed "
        "(statement_timeout plus as long again, 5 s at most; ?statement_timeout= in the URL)"
    )


def _shut_down(fd: int) -> None:
    """Shut the socket down (both ways): the waiting call sees the connection end at once."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        os.close(fd)
        return
    with sock, contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
