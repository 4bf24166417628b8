"""Time as a dependency: every component reads a `Clock`, so tests can move time.

Times are seconds since the epoch as floats throughout the internals; the public
`Job` record converts them to timezone-aware datetimes.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from .errors import InvalidTimeError

LATEST_TIME = 253_402_300_799.0
"""9999-12-31 23:59:59 UTC, the last second a `datetime` can show: the latest `run_at`."""
MAX_SECONDS = 100 * 365.25 * 86_400.0
"""The longest delay or duration stagecrew accepts: a hundred years."""


def checked_seconds(value: float, what: str, *, positive: bool = False) -> float:
    """`value` as seconds if it is finite, 0 or more (above 0 with `positive`), and sane.

    NaN compares false with everything, so an unchecked NaN delay makes a job that is
    never due on one engine and due at once on another; infinity is no better. Every time
    value that enters stagecrew from outside goes through here or `checked_time`.
    """
    seconds = float(value)
    low_ok = seconds > 0.0 if positive else seconds >= 0.0
    if low_ok and seconds <= MAX_SECONDS:  # false for NaN
        return seconds
    bound = "more than 0" if positive else "0 or more"
    raise InvalidTimeError(
        f"{what} must be a finite number of seconds, {bound} and at most 100 years; got {value!r}"
    )


def checked_time(value: float, what: str) -> float:
    """`value` as a time (seconds since the epoch) if it lies between 1970 and 9999."""
    when = float(value)
    if 0.0 <= when <= LATEST_TIME:  # false for NaN
        return when
    raise InvalidTimeError(
        f"{what} must be a finite time in seconds since the epoch, between 1970 and 9999 "
        f"(or a timezone-aware datetime); got {value!r}"
    )


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
        if not math.isfinite(seconds):
            raise InvalidTimeError(
                f"a FakeClock moves by a finite number of seconds, not {seconds}"
            )
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, when: float | datetime) -> None:
        value = when.timestamp() if isinstance(when, datetime) else float(when)
        if not math.isfinite(value):
            raise InvalidTimeError(f"a FakeClock is set to a finite time, not {value}")
        with self._lock:
            if value < self._now:
                raise ValueError("a FakeClock only moves forward")
            self._now = value


def to_datetime(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def is_fake(clock: Clock) -> bool:
    return isinstance(clock, FakeClock)
