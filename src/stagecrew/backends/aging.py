"""The starvation guard's rule, as every engine applies it (see `Backend.age_priorities`)."""

from __future__ import annotations

import math


def aged_priority(enqueued: int, run_at: float, now: float, every: float, floor: int) -> int:
    """The priority of a job enqueued at priority `enqueued` and due since `run_at`: one step
    better per whole `every` seconds waited, never better than `floor` (nor worse than it was)."""
    steps = math.floor((now - run_at) / every)
    if steps <= 0 or enqueued <= floor:
        return enqueued
    return max(floor, enqueued - steps)
