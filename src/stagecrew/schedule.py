"""Periodic schedules declared in code: when each tick falls, and what a scheduler pass fires.

A `Schedule` names a task, its arguments and its timing: a cron expression in a time zone
(`CronTiming`, evaluated by the `cronsim` library) or a fixed interval anchored to the Unix
epoch (`EveryTiming`). `plan_fire` turns a schedule's stored last tick and the current time
into the one store request (`ScheduleFire`) a scheduler sends; the store's compare-and-set
makes it fire once fleet-wide (see `backends.schedules` and docs/schedules.md).

Everything is checked when the schedule is declared, so a bad expression, an unknown zone, a
bad interval or arguments that are not JSON fail at import time, not at 3 a.m.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from .backends.schedules import ScheduleFire, TickJob, check_schedule_name
from .clock import LATEST_TIME
from .errors import ScheduleError, StagecrewError
from .serialization import encode_payload
from .task import EnqueueOptions

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from .job import Job, NewJob
    from .task import Task

DEFAULT_MAX_CATCH_UP = 100
"""Most missed ticks `catch_up="all"` fires after a downtime (the most recent ones)."""
SKIP_GRACE_SECONDS = 60.0
"""With `catch_up="skip"`, the latest due tick still fires if it is at most this late."""
MIN_INTERVAL_SECONDS = 1.0
"""The shortest `every=`: a scheduler pass per second per schedule is plenty."""
KEY_PREFIX = "schedule:"

NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
"""The usual cron nicknames, as the 5-field expressions they stand for."""


class CatchUp(StrEnum):
    """What a schedule does with ticks missed while no scheduler ran (or ran late)."""

    LATEST = "latest"
    """One job for the missed period: the latest due tick fires, the earlier ones do not."""
    ALL = "all"
    """Every missed tick fires, up to `max_catch_up` of them (the most recent ones)."""
    SKIP = "skip"
    """Missed ticks are passed over; the latest fires only if at most a minute late."""


@dataclass(frozen=True, slots=True)
class CronTiming:
    """A cron expression evaluated in a time zone (cronsim's rules, which follow Debian cron).

    Five fields (minute hour day month weekday), or six with the seconds first; nicknames
    such as `@daily`. Daylight saving time, for an expression with a fixed minute and hour:
    a local time that does not exist (spring forward) fires once, at the transition; one
    that happens twice (fall back) fires once, the first time. An expression whose minute
    or hour is `*` follows real time: it runs in every hour that happens.
    """

    expression: str
    tz: ZoneInfo
    _expanded: str = field(repr=False, default="")

    @classmethod
    def parse(cls, expression: str, tz: str | ZoneInfo | None) -> CronTiming:
        if not isinstance(expression, str) or not expression.strip():
            raise ScheduleError(
                f"a cron expression is a string such as '0 3 * * *', not {expression!r}"
            )
        text = " ".join(expression.split())
        expanded = NICKNAMES.get(text.lower(), text)
        if expanded.startswith("@"):
            raise ScheduleError(
                f"unknown cron nickname {expression!r}; use one of {', '.join(NICKNAMES)}"
            )
        fields = len(expanded.split())
        if fields not in (5, 6):
            raise ScheduleError(
                f"bad cron expression {expression!r}: it has {fields} fields; give five "
                "(minute hour day month weekday) or six (with the seconds first)"
            )
        zone = _zone(tz)
        from cronsim import CronSim, CronSimError  # only an app with cron schedules pays

        try:
            CronSim(expanded, datetime(2000, 1, 1, tzinfo=zone))
        except (CronSimError, ValueError) as exc:
            raise ScheduleError(f"bad cron expression {expression!r}: {exc}") from None
        timing = cls(text, zone, expanded)
        if timing.next_after(946_684_800.0) is None:
            raise ScheduleError(f"cron expression {expression!r} never fires")
        return timing

    def describe(self) -> str:
        return self.expression

    @property
    def zone(self) -> str:
        return self.tz.key

    def _ticks(self, after: float) -> Iterator[float]:
        """Ticks strictly after `after`, ascending (cronsim may hand back one that is not,
        around a fall-back transition: it is dropped)."""
        from cronsim import CronSim

        moments: Iterator[datetime]
        if self._wall_clock():
            start = datetime.fromtimestamp(after, self.tz).replace(tzinfo=None)
            moments = (_on_wall_clock(m, self.tz) for m in CronSim(self._expanded, start))
        else:
            moments = CronSim(self._expanded, datetime.fromtimestamp(after, self.tz))
        previous = after
        for moment in moments:
            tick = moment.timestamp()
            if tick > LATEST_TIME:
                return
            if tick > previous:
                previous = tick
                yield tick

    def _wall_clock(self) -> bool:
        """A six-field expression at a fixed minute and hour gets the daylight saving rules
        cronsim gives five-field ones (it follows real time for six fields)."""
        fields = self._expanded.split()
        return len(fields) == 6 and not fields[1].startswith("*") and not fields[2].startswith("*")

    def next_after(self, after: float) -> float | None:
        try:
            return next(self._ticks(after))
        except (StopIteration, OverflowError, ValueError):
            return None

    def due(self, after: float, until: float, limit: int) -> list[float]:
        """Forward from a window before `until` that widens until it holds `limit` ticks,
        so that a long downtime costs a few windows, not one step per missed tick."""
        window = 3600.0
        while True:
            start = max(after, until - window)
            latest: deque[float] = deque(maxlen=limit)
            try:
                for tick in self._ticks(start):
                    if tick > until:
                        break
                    latest.append(tick)
            except (OverflowError, ValueError):
                pass
            if len(latest) >= limit or start <= after:
                return list(latest)
            window *= 8


@dataclass(frozen=True, slots=True)
class EveryTiming:
    """Ticks every `seconds`, on the grid of the Unix epoch (UTC): every=timedelta(hours=1)
    fires at the top of each UTC hour, whenever the schedulers started, so restarts never
    shift it."""

    seconds: float

    @classmethod
    def parse(cls, every: float | timedelta) -> EveryTiming:
        seconds = every.total_seconds() if isinstance(every, timedelta) else every
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise ScheduleError(f"every= is a timedelta or seconds, not {every!r}")
        if not math.isfinite(seconds) or seconds < MIN_INTERVAL_SECONDS or seconds > 366 * 86400:
            raise ScheduleError(
                f"every= must be a finite interval of {MIN_INTERVAL_SECONDS:g} second(s) to "
                f"a year, not {every!r}"
            )
        return cls(float(seconds))

    def describe(self) -> str:
        return f"every {timedelta(seconds=self.seconds)}"

    @property
    def zone(self) -> str:
        return "UTC"

    def next_after(self, after: float) -> float | None:
        tick = (math.floor(after / self.seconds) + 1) * self.seconds
        if tick <= after:  # float rounding at a grid point
            tick += self.seconds
        return tick if tick <= LATEST_TIME else None

    def due(self, after: float, until: float, limit: int) -> list[float]:
        first = math.floor(after / self.seconds) + 1
        last = math.floor(until / self.seconds)
        ticks = [k * self.seconds for k in range(max(first, last - limit + 1), last + 1)]
        return [t for t in ticks if after < t <= until]


def _on_wall_clock(moment: datetime, zone: ZoneInfo) -> datetime:
    """A local wall-clock time as an instant: the first of a repeated time (fold 0); for a
    time the clocks skip, the first minute that exists after it (the transition)."""
    aware = moment.replace(tzinfo=zone, fold=0)
    for _ in range(24 * 60):
        if aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == aware.replace(
            tzinfo=None
        ):
            return aware
        aware += timedelta(minutes=1)
    return aware


def _zone(tz: str | ZoneInfo | None) -> ZoneInfo:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if tz is None:
        return ZoneInfo("UTC")
    if isinstance(tz, ZoneInfo):
        return tz
    if not isinstance(tz, str) or not tz:
        raise ScheduleError(f"tz= is an IANA zone name such as 'Europe/Paris', not {tz!r}")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            f"unknown time zone {tz!r}; use an IANA name such as 'Europe/Paris' or 'UTC'"
        ) from None


@dataclass(frozen=True)
class Schedule:
    """A task fired on a timing, with fixed arguments; `name` is unique within the app."""

    name: str
    task: Task[Any, Any]
    timing: CronTiming | EveryTiming
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    catch_up: CatchUp = CatchUp.LATEST
    max_catch_up: int = DEFAULT_MAX_CATCH_UP
    queue: str | None = None
    priority: int | None = None

    @property
    def job_queue(self) -> str:
        return self.queue or self.task.queue

    def tick_key(self, tick: float) -> str:
        """The idempotency key of the job of `tick`: `schedule:<name>:<tick, ISO 8601 UTC>`."""
        return f"{KEY_PREFIX}{self.name}:{datetime.fromtimestamp(tick, UTC).isoformat()}"

    def job_for(self, tick: float) -> NewJob:
        options = EnqueueOptions(
            queue=self.job_queue, priority=self.priority, idempotency_key=self.tick_key(tick)
        )
        job = self.task.build(self.args, self.kwargs, options)
        if job.unique_key is None:
            return job
        # A tick fires once fleet-wide already; its job does not take the task's unique key.
        return job._replace(unique_key=None, unique_states=frozenset())

    def next_fire(self, last_tick: float | None, now: float) -> float | None:
        """When this schedule fires next, given its stored last tick."""
        return self.timing.next_after(now if last_tick is None else max(last_tick, now))


def declare(
    task: Task[Any, Any],
    *,
    name: str | None,
    cron: str | None,
    every: float | timedelta | None,
    tz: str | ZoneInfo | None,
    args: Sequence[Any],
    kwargs: Mapping[str, Any] | None,
    catch_up: CatchUp | str,
    max_catch_up: int,
    queue: str | None,
    priority: int | None,
) -> Schedule:
    """A checked `Schedule`: every mistake raises `ScheduleError` here, at declaration."""
    schedule_name = task.name if name is None else name
    try:
        check_schedule_name(schedule_name, "a schedule")
    except ValueError as exc:
        raise ScheduleError(str(exc)) from None
    if (cron is None) == (every is None):
        raise ScheduleError(f"schedule {schedule_name!r}: give cron= or every=, exactly one")
    timing: CronTiming | EveryTiming
    try:
        if cron is not None:
            timing = CronTiming.parse(cron, tz)
        elif tz is not None:
            raise ScheduleError("every= runs on the UTC epoch grid; tz= is for cron=")
        else:
            assert every is not None
            timing = EveryTiming.parse(every)
    except ScheduleError as exc:
        raise ScheduleError(f"schedule {schedule_name!r}: {exc}") from None
    try:
        mode = CatchUp(catch_up)
    except ValueError:
        raise ScheduleError(
            f"schedule {schedule_name!r}: catch_up must be one of "
            f"{', '.join(repr(str(m)) for m in CatchUp)}, not {catch_up!r}"
        ) from None
    if isinstance(max_catch_up, bool) or not isinstance(max_catch_up, int) or max_catch_up < 1:
        raise ScheduleError(
            f"schedule {schedule_name!r}: max_catch_up must be a whole number of at least 1"
        )
    if queue is not None and (not isinstance(queue, str) or not queue):
        raise ScheduleError(f"schedule {schedule_name!r}: queue must be a name, not {queue!r}")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise ScheduleError(f"schedule {schedule_name!r}: priority must be an integer")
    call_args, call_kwargs = tuple(args), dict(kwargs or {})
    try:
        task.bind(call_args, call_kwargs)
        encode_payload(call_args, call_kwargs, max_bytes=task.app.max_payload_bytes)
    except StagecrewError as exc:
        raise ScheduleError(f"schedule {schedule_name!r}: {exc}") from None
    return Schedule(
        name=schedule_name,
        task=task,
        timing=timing,
        args=call_args,
        kwargs=call_kwargs,
        catch_up=mode,
        max_catch_up=max_catch_up,
        queue=queue,
        priority=priority,
    )


def plan_fire(schedule: Schedule, last_tick: float | None, now: float) -> ScheduleFire | None:
    """The request a scheduler sends at `now` for `schedule`, or None when nothing is due.

    No stored tick (the first run): record `now`, fire nothing: no back-fill. Else the due
    ticks are those in (last_tick, now]; the latest is the current one, every earlier one
    was missed, and `catch_up` decides which fire. The stored tick moves to the latest due
    tick either way.
    """
    if last_tick is None:
        return ScheduleFire(schedule.name, schedule.job_queue, None, now)
    if now <= last_tick:
        return None
    ticks = schedule.timing.due(last_tick, now, schedule.max_catch_up + 1)
    if not ticks:
        return None
    latest = ticks[-1]
    if schedule.catch_up is CatchUp.ALL:
        firing = ticks
    elif schedule.catch_up is CatchUp.SKIP and now - latest > SKIP_GRACE_SECONDS:
        firing = []
    else:
        firing = [latest]
    jobs = tuple(TickJob(tick, schedule.job_for(tick)) for tick in firing)
    return ScheduleFire(schedule.name, schedule.job_queue, last_tick, latest, jobs)


def scheduled_tick(job: Job) -> datetime | None:
    """The tick a scheduled job was made for (from its idempotency key), or None."""
    key = job.idempotency_key
    if not key or not key.startswith(KEY_PREFIX):
        return None
    for width in (25, 32):  # the ISO time without, or with, microseconds
        if len(key) > len(KEY_PREFIX) + width and key[-width - 1] == ":":
            try:
                return datetime.fromisoformat(key[-width:])
            except ValueError:
                continue
    return None
