"""Time as a dependency: every component reads a `Clock`, so tests can move time.

Times are seconds since the epoch as floats throughout the internals; the public
`Job` record converts them to timezone-aware datetimes.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """Where stagecrew reads the current time."""

    def now(self) -> float:
        """Seconds since the epoch."""
        ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> float:
        return time.time()


class FakeClock:
    """A clock that only moves when told to; safe to share between threads.

    The store (memory and SQLite engines), the backoff and the worker all read
    it, so a test can jump an hour ahead instead of sleeping.
    """

    def __init__(self, start: float | datetime = 1_700_000_000.0) -> None:
        self._lock = threading.Lock()
        self._now = start.timestamp() if isinstance(start, datetime) else float(start)

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        """Move time forward and return the new time."""
        if seconds < 0:
            raise ValueError("a FakeClock only moves forward")
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, when: float | datetime) -> None:
        value = when.timestamp() if isinstance(when, datetime) else float(when)
        with self._lock:
            if value < self._now:
                raise ValueError("a FakeClock only moves forward")
            self._now = value


def to_datetime(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def is_fake(clock: Clock) -> bool:
    return isinstance(clock, FakeClock)
