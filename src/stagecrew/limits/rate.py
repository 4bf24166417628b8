"""Rate limits as tasks declare them, and the one algorithm that enforces them fleet-wide.

`@app.task(rate_limit="100/m")` lets the task's jobs start at most at that rate across every
worker; `rate_limit=dict(rate="10/s", key="{customer_id}")` limits each key instead. The state
of each limit is one record in the store (`rate:<task>` or `rate:<task>:<key>`, see
`backends/limit_states.py`), changed only by compare-and-set, so every worker process of the
fleet draws from the same bucket.

The algorithm is a token bucket in its "generic cell rate" form: the record holds the
theoretical arrival time `tat`, the time at which the bucket is empty again if nothing more is
taken. A job may start at `now` when `tat - now <= (burst - 1) * interval`, and starting it moves
`tat` on by one `interval` (1 / rate). So in any window of W seconds at most `burst + W * rate`
jobs start. Jobs that find no token are booked, in claim order, at the times their tokens
come free, one interval apart and after the jobs booked before them (`booked`), and handed
back to run then, their attempt not counted (see docs/limits.md).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import ConfigurationError

RateKey = str | Callable[..., str | None]
"""What a per-key rate limit counts by, as for concurrency keys: a template over the job's
arguments by name, or a function of them (None: the job has no key, and no rate applies)."""

PERIODS = {"s": 1.0, "m": 60.0, "h": 3_600.0, "d": 86_400.0}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d*(?:\.\d+)?)\s*([smhd])\s*$")

EPSILON = 1e-6
"""Seconds of slack when counting tokens, so that a token due now is available: epoch
times near 1.7e9 carry about 2e-7 s of float precision."""
RECORD_SLACK = 60.0
"""Seconds a limit's record outlives the last time it matters (an idle bucket is full)."""
MAX_KEYED_NAME = 200


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A rate limit: at most `per_second` job starts a second, with bursts up to `burst`.

    `burst` defaults to one second's worth (at least 1). With `key`, each key has a bucket of
    its own; tasks that give the same `name` share each bucket. When a task raises
    `RateLimited`, the limit slows to `slowdown` times its rate for `cooldown` seconds."""

    per_second: float
    burst: int
    key: RateKey | None = None
    name: str | None = None
    cooldown: float = 60.0
    slowdown: float = 0.5
    text: str = ""
    """The rate as declared ("100/m"), for messages."""

    @property
    def interval(self) -> float:
        return 1.0 / self.per_second

    def group(self, task: str) -> str:
        return self.name or task

    def record_name(self, task: str, key: str | None = None) -> str:
        """The name of this limit's record in the store, for a job of `task` with `key`."""
        base = f"rate:{self.group(task)}"
        if key is None:
            return base
        name = f"{base}:{key}"
        if len(name) > MAX_KEYED_NAME or any(ord(c) < 32 for c in name):
            digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
            name = f"{base}:#{digest}"
        return name

    @classmethod
    def coerce(cls, value: str | RateLimit | Mapping[str, Any] | None) -> RateLimit | None:
        if value is None or isinstance(value, RateLimit):
            return value
        if isinstance(value, str):
            return cls.parse(value)
        if isinstance(value, Mapping):
            unknown = set(value) - {"rate", "burst", "key", "name", "cooldown", "slowdown"}
            if unknown or "rate" not in value:
                raise ConfigurationError(
                    "rate_limit takes rate= (required, e.g. '100/m'), burst=, key=, name=, "
                    f"cooldown= and slowdown=, not {sorted(value)}"
                )
            return cls.parse(
                value["rate"],
                burst=value.get("burst"),
                key=value.get("key"),
                name=value.get("name"),
                cooldown=value.get("cooldown", 60.0),
                slowdown=value.get("slowdown", 0.5),
            )
        raise ConfigurationError(
            f"rate_limit must be a rate such as '100/m', a dict(rate=..., burst=..., key=...) "
            f"or a RateLimit, not {value!r}"
        )

    @classmethod
    def parse(
        cls,
        rate: object,
        *,
        burst: object = None,
        key: object = None,
        name: object = None,
        cooldown: object = 60.0,
        slowdown: object = 0.5,
    ) -> RateLimit:
        """A limit from its text: `"100/m"`, `"10/s"`, `"5000/h"`, `"2/d"`, `"3/10s"`."""
        match = _RATE.match(rate) if isinstance(rate, str) else None
        if match is None or not isinstance(rate, str):
            raise ConfigurationError(
                f"a rate is a count per period such as '100/m', '10/s', '5000/h' or '3/10s', "
                f"not {rate!r}"
            )
        count, span, unit = float(match[1]), match[2], match[3]
        seconds = (float(span) if span else 1.0) * PERIODS[unit]
        per_second = count / seconds if seconds > 0 else math.inf
        if not (math.isfinite(per_second) and per_second > 0):
            raise ConfigurationError(f"a rate must be more than 0 per a period above 0: {rate!r}")
        if burst is None:
            burst = max(1, math.floor(per_second))
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ConfigurationError(
                f"rate_limit burst must be a whole number, 1 or more: {burst!r}"
            )
        if key is not None and not callable(key) and (not isinstance(key, str) or not key):
            raise ConfigurationError(
                f"rate_limit key must be a template str or a function: {key!r}"
            )
        if name is not None and (not isinstance(name, str) or not name or ":" in name):
            raise ConfigurationError(
                f"rate_limit name must be a non-empty str without ':', not {name!r}"
            )
        if name is not None and key is None:
            raise ConfigurationError("a rate_limit name groups keys: give key= with it")
        return cls(
            per_second,
            burst,
            key,
            name,
            _seconds(cooldown, "cooldown"),
            _fraction(slowdown),
            rate.strip(),
        )


def _seconds(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigurationError(f"rate_limit {what} must be finite seconds, not {value!r}")
    if value < 0:
        raise ConfigurationError(f"rate_limit {what} must be 0 or more, not {value!r}")
    return float(value)


def _fraction(value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 < value <= 1
    ):
        raise ConfigurationError(f"rate_limit slowdown must be in (0, 1], not {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class Bucket:
    """A rate limit's stored state (the record's JSON), in the store's time."""

    tat: float = 0.0
    """When the bucket is empty again if no more is taken (the theoretical arrival time)."""
    booked: float = 0.0
    """The time the last job handed back for want of a token was booked for."""
    slow_until: float = 0.0
    """Until then the rate is `slowdown` times the declared one (after a `RateLimited`)."""

    @classmethod
    def from_text(cls, text: str | None) -> Bucket:
        """The state a record holds; a record that is not one (or none) is a full bucket."""
        if text is None:
            return cls()
        try:
            data = orjson.loads(text)
            return cls(float(data["tat"]), float(data["booked"]), float(data["slow_until"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return cls()

    def to_text(self) -> str:
        return orjson.dumps(
            {"tat": self.tat, "booked": self.booked, "slow_until": self.slow_until}
        ).decode()

    def ttl(self, now: float) -> float:
        """Seconds the record must live: past that it reads as a full bucket, which it is."""
        return max(self.tat, self.booked, self.slow_until) - now + RECORD_SLACK


@dataclass(frozen=True, slots=True)
class Taken:
    """What one draw of `count` tokens from a bucket gave."""

    bucket: Bucket
    start_at: tuple[float, ...]
    """For each of the first jobs, the store time its token is for (now, or within the draw's
    `wait`): those start then."""
    run_at: tuple[float, ...]
    """For each job after those, the store time at which its token comes free: those are
    booked for then, their tokens not taken."""
    ahead: int = 0
    """Tokens taken ahead, for jobs the worker claims within the draw's `ahead` seconds."""

    @property
    def admitted(self) -> int:
        return len(self.start_at)


def interval_at(limit: RateLimit, bucket: Bucket, now: float) -> float:
    """The interval between starts at `now`: longer while slowed after a `RateLimited`."""
    interval = limit.interval
    return interval / limit.slowdown if now < bucket.slow_until else interval


def take(
    limit: RateLimit,
    bucket: Bucket,
    now: float,
    count: int,
    wait: float = 0.0,
    ahead: float = 0.0,
) -> Taken:
    """Take up to `count` tokens at `now`, and those that come free within `wait` seconds
    (their jobs start when they do); book the jobs left without one.

    With `ahead`, a bucket that every job found a token in, and that still holds at least
    twice `ahead` seconds' worth of tokens after them, gives one such worth more, for the
    caller's next jobs within `ahead` seconds: a limit far from reached then costs one draw
    per `ahead` seconds, not one per batch. Those tokens are counted now and used up to
    `ahead` later, so a window of W seconds may see `burst + (W + ahead) * rate` starts; a
    bucket nearer empty gives none ahead, and its starts keep `burst + W * rate`."""
    interval = interval_at(limit, bucket, now)
    tolerance = (limit.burst - 1) * interval
    tat = max(bucket.tat, now)
    start_at: list[float] = []
    while len(start_at) < count:
        free_at = max(now, tat - tolerance)  # when the next token is there
        if free_at > now + wait + EPSILON:
            break
        start_at.append(now if free_at <= now + EPSILON else free_at)
        tat += interval
    held = count - len(start_at)
    spare = 0
    if ahead and not held and now >= bucket.slow_until:
        wanted = math.floor(limit.per_second * ahead)
        if _tokens(limit, tat, now, interval) >= 2 * wanted:
            spare = wanted
            tat += spare * interval
    first = max(bucket.booked + interval, tat - tolerance, now)
    run_at = tuple(first + i * interval for i in range(held))
    booked = run_at[-1] if run_at else bucket.booked
    return Taken(Bucket(tat, booked, bucket.slow_until), tuple(start_at), run_at, spare)


def _tokens(limit: RateLimit, tat: float, now: float, interval: float) -> int:
    """The tokens a bucket at `tat` holds at `now` (at most `burst`)."""
    tolerance = (limit.burst - 1) * interval
    tat = max(tat, now)
    if tat > now + tolerance + EPSILON:
        return 0
    return min(limit.burst, math.floor((now + tolerance - tat + EPSILON) / interval) + 1)


def slow_down(limit: RateLimit, bucket: Bucket, now: float, retry_after: float) -> Bucket:
    """A remote end said "too many": no token before `now + retry_after`, then the slower
    rate until the cooldown ends."""
    slow_until = max(bucket.slow_until, now + limit.cooldown)
    interval = limit.interval / limit.slowdown
    resume = now + retry_after
    tat = max(bucket.tat, resume + (limit.burst - 1) * interval)
    return Bucket(tat, bucket.booked, slow_until)


def check_shared_rates(tasks: Iterable[tuple[str, RateLimit | None]]) -> None:
    """Tasks that share a rate-limit name draw from one bucket per key: give it one rate."""
    seen: dict[str, tuple[str, RateLimit]] = {}
    for task, limit in tasks:
        if limit is None or limit.name is None:
            continue
        first_task, first = seen.setdefault(limit.name, (task, limit))
        if (first.per_second, first.burst) != (limit.per_second, limit.burst):
            raise ConfigurationError(
                f"tasks {first_task!r} and {task!r} share the rate_limit name {limit.name!r} "
                f"with different rates ({first.text}, burst {first.burst}; {limit.text}, "
                f"burst {limit.burst}); give them one rate"
            )


@dataclass(frozen=True, slots=True)
class BucketView:
    """A stored bucket as an operator reads it, at the store's now."""

    tokens: int | None
    """Starts it allows at once (None: its limit is not declared in this code)."""
    booked_for: float
    """Seconds until the last job handed back for want of a token is due."""
    slowed_for: float
    """Seconds the limit stays slowed after a `RateLimited`."""


def view(limit: RateLimit | None, bucket: Bucket, now: float) -> BucketView:
    tokens = None
    if limit is not None:
        tokens = _tokens(limit, bucket.tat, now, interval_at(limit, bucket, now))
    return BucketView(tokens, max(0.0, bucket.booked - now), max(0.0, bucket.slow_until - now))
