"""The records of the schedule operations, and what the front layer checks in them.

A schedule's stored state is one record per schedule name (`ScheduleRecord`): the time up
to which its ticks are done (`last_tick`), the last job a tick produced, and whether it is
paused. `Backend.fire_schedule` moves `last_tick` forward by compare-and-set and enqueues
the ticks' jobs in the same atomic write, so that any number of schedulers racing for one
tick make one job between them (see docs/schedules.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..clock import checked_time
from ..job import EnqueuedJob, NewJob
from .inputs import check_new_jobs, check_queue_name


@dataclass(frozen=True, slots=True)
class TickJob:
    """The job one tick of a schedule produces; `tick` is the tick's time (epoch seconds)."""

    tick: float
    job: NewJob


@dataclass(frozen=True, slots=True)
class ScheduleFire:
    """One scheduler's request: "the schedule is done up to `advance_to`; enqueue `jobs`".

    Applied only if the stored `last_tick` is still `expected` (None: the schedule has no
    stored tick yet) and the schedule is not paused; otherwise nothing is written. The
    caller read `expected` from the store, so a request computed from a state another
    scheduler has changed since is refused, whichever of them the store saw first.
    """

    name: str
    queue: str
    """The queue of the schedule's jobs; on Redis the schedule's record lives in its slot."""
    expected: float | None
    advance_to: float
    jobs: tuple[TickJob, ...] = ()
    """One job per tick fired, ticks increasing, each after `expected` and at most
    `advance_to`; empty to move past ticks without a job (a first run, `catch_up="skip"`)."""


@dataclass(frozen=True, slots=True)
class ScheduleFired:
    """What `fire_schedule` did."""

    applied: bool
    """True when the compare-and-set held and the jobs were enqueued."""
    enqueued: tuple[EnqueuedJob, ...]
    """One entry per tick job when applied (`created=False` if its idempotency key was
    stored already); empty when refused."""
    last_tick: float | None
    """The stored `last_tick` after the call: `advance_to` when applied, else what refused."""
    paused: bool


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """A schedule's state in the store."""

    name: str
    queue: str
    last_tick: float | None
    """Ticks at or before this time are done: fired, or passed over. None before the first run."""
    last_job_id: int | None
    """The job the last fired tick produced."""
    last_job_tick: float | None
    """The tick of that job."""
    last_fired_at: float | None
    """When (by the store's clock) the last job was enqueued."""
    paused: bool


def check_schedule_name(name: str, operation: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{operation} needs a schedule name, got {name!r}")
    if len(name) > 200 or any(ord(c) < 32 for c in name):
        raise ValueError(
            f"{operation}: a schedule name is at most 200 characters without control "
            f"characters, got {name!r}"
        )
    return name


def check_fire(fire: ScheduleFire) -> ScheduleFire:
    """Refuse, before anything is written, a request whose ticks are not in order."""
    if not isinstance(fire, ScheduleFire):
        raise TypeError(f"fire_schedule needs a ScheduleFire, not {fire!r}")
    check_schedule_name(fire.name, "fire_schedule")
    check_queue_name(fire.queue, "fire_schedule")
    advance_to = checked_time(fire.advance_to, "fire_schedule: advance_to")
    expected = fire.expected
    if expected is not None:
        expected = checked_time(expected, "fire_schedule: expected")
        if not expected < advance_to:
            raise ValueError(
                f"fire_schedule: advance_to ({advance_to!r}) must be later than the "
                f"expected last tick ({expected!r})"
            )
    previous = -math.inf if expected is None else expected
    for index, tick_job in enumerate(fire.jobs):
        if not isinstance(tick_job, TickJob):
            raise TypeError(f"tick {index} of fire_schedule is a {type(tick_job).__name__}")
        tick = checked_time(tick_job.tick, f"fire_schedule: tick {index}")
        if not previous < tick <= advance_to:
            raise ValueError(
                f"fire_schedule: tick {index} ({tick!r}) must be later than the one before "
                f"it (or the expected last tick) and at most advance_to ({advance_to!r})"
            )
        if tick_job.job.queue != fire.queue:
            raise ValueError(
                f"fire_schedule: tick {index}'s job is for queue {tick_job.job.queue!r}, "
                f"not the schedule's queue {fire.queue!r}"
            )
        previous = tick
    check_new_jobs(jobs_of(fire.jobs))
    return fire


def jobs_of(tick_jobs: Sequence[TickJob]) -> list[NewJob]:
    return [tick_job.job for tick_job in tick_jobs]


def refused(last_tick: float | None, paused: bool) -> ScheduleFired:
    return ScheduleFired(False, (), last_tick, paused)


def cas_holds(stored: ScheduleRecord | None, fire: ScheduleFire) -> bool:
    """The compare-and-set every engine applies: the tick read is still stored, not paused."""
    if stored is None:
        return fire.expected is None
    return not stored.paused and stored.last_tick == fire.expected
