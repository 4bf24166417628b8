"""The in-process half of SQLite's `wait_finished`: commits by this backend object.

`PRAGMA data_version` tells a connection that another connection committed, so a waiter
sees other processes' finishes by polling it. It cannot see a commit made through its own
connection (a synchronous ack on the waiting event loop's thread), and polling only sees
the rest at the next poll. So every commit of this backend object that may have made a
job final or deleted one also passes through a `FinishSignal`, which wakes waiting threads
(a condition) and waiting event loops (an event each, set from any thread) at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator


class FinishSignal:
    """Counts the commits that may have finished a job, and wakes whoever waits for one."""

    def __init__(self) -> None:
        self._changed = threading.Condition(threading.Lock())
        self._count = 0
        self._loops: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    @property
    def count(self) -> int:
        """A baseline for `wait`: it changes with every `notify`."""
        return self._count

    def notify(self) -> None:
        """Called after such a commit (never before: the waiter then reads the job)."""
        with self._changed:
            self._count += 1
            self._changed.notify_all()
            loops = list(self._loops)
        for loop, event in loops:
            with contextlib.suppress(RuntimeError):  # its loop closed: nobody waits there
                loop.call_soon_threadsafe(event.set)

    def wait(self, seen: int, timeout: float) -> bool:
        """Block until a `notify` after the baseline `seen`, or `timeout`; True if notified."""
        with self._changed:
            return self._changed.wait_for(lambda: self._count != seen, timeout)

    @contextlib.contextmanager
    def watched(self) -> Iterator[asyncio.Event]:
        """An event set by every `notify` while the block runs, on the running event loop."""
        entry = (asyncio.get_running_loop(), asyncio.Event())
        with self._changed:
            self._loops.append(entry)
        try:
            yield entry[1]
        finally:
            with self._changed:
                self._loops.remove(entry)
