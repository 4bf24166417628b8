"""The starvation guard's pass: improves the priority of jobs that waited long.

See docs/fairness.md, "Priorities and aging".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from ..backends.base import Backend
from ..clock import checked_seconds

log = logging.getLogger("stagecrew.maintenance")

BATCH = 1000
MAX_BATCHES_PER_RUN = 10


@dataclass(frozen=True, slots=True)
class PriorityAging:
    """`App(priority_aging=...)`: a waiting job gains one priority step (1 lower) per `every`
    waited since it was due, down to `floor` at best, so a stream of better-priority jobs
    cannot starve it for ever. Off unless given: `App(priority_aging=PriorityAging())`."""

    every: float | timedelta = 300.0
    """Seconds (or a timedelta) of waiting per step; five minutes by default."""
    floor: int = 0
    """The best priority aging can give a job (jobs at or below it are never changed)."""

    def __post_init__(self) -> None:
        every = self.every.total_seconds() if isinstance(self.every, timedelta) else self.every
        object.__setattr__(
            self, "every", checked_seconds(every, "PriorityAging(every=...)", positive=True)
        )
        if isinstance(self.floor, bool) or not isinstance(self.floor, int):
            raise ValueError(f"PriorityAging(floor=...) must be an int, not {self.floor!r}")

    @property
    def seconds(self) -> float:
        every = self.every  # a float once built (see __post_init__)
        return every.total_seconds() if isinstance(every, timedelta) else every

    @property
    def pass_interval(self) -> float:
        """How often a worker runs the pass: a tenth of a step, between 1 s and 60 s."""
        return min(max(self.seconds / 10, 1.0), 60.0)


async def age_waiting(backend: Backend, aging: PriorityAging) -> int:
    """One pass, in batches, until a batch changes fewer jobs than it could."""
    total = 0
    for _ in range(MAX_BATCHES_PER_RUN):
        changed = await backend.age_priorities_async(aging.seconds, aging.floor, BATCH)
        total += changed
        if changed < BATCH:
            break
    if total:
        log.info("aged %d waiting jobs one or more priority steps (starvation guard)", total)
    return total
