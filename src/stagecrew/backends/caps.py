"""Concurrency caps at claim time: what a claimer may take, and the rule every engine applies.

A claim that carries `ClaimLimits` takes a due job only while every cap that applies to it
has a free slot, fleet-wide:

- `tasks[t]`: at most that many jobs of task `t` running at once, in any queue;
- `queues[q]`: at most that many jobs of queue `q` running at once, of any task;
- `keys[t]`: for a job of task `t` with a concurrency key, at most that many jobs with the same
  key running at once (of any task: tasks that share a named key group share its slots).

A job counts as running while it is `running` with a lease that has not expired: a dead
worker's slots come back when its leases run out, or at once when the supervisor releases
its claims, and an outcome frees its slot in the write that records it. A job whose cap is
full is not touched (no attempt counted) and does not hold back the jobs behind it: the claim
looks past it, in claim order. The caps are the claimer's: a cap no claimer sends any more
(removed from the code) limits nothing, and a job enqueued before its cap existed is capped
once claimers send it.

`select_within_caps` is the rule as code, over candidates in claim order; the memory engine
and the SQL engines apply it to what they read under their claim's lock, the Redis scripts
encode the same rule (the conformance suite holds them to it).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

from .fairness import MAX_FAIRNESS_KEY_BYTES
from .key_text import check_key_text


@dataclass(frozen=True, slots=True)
class ClaimLimits:
    """The concurrency caps a claim enforces (see the module docstring)."""

    tasks: Mapping[str, int] = field(default_factory=dict)
    queues: Mapping[str, int] = field(default_factory=dict)
    keys: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for what in ("tasks", "queues", "keys"):
            table = getattr(self, what)
            if not isinstance(table, Mapping):
                raise TypeError(f"ClaimLimits.{what} must be a mapping of names to caps")
            checked = {}
            for name, cap in table.items():
                if not isinstance(name, str) or not name:
                    raise ValueError(f"ClaimLimits.{what}: a name must be a non-empty str")
                checked[name] = check_cap(cap, f"ClaimLimits.{what}[{name!r}]")
            object.__setattr__(self, what, MappingProxyType(checked))

    def __bool__(self) -> bool:
        return bool(self.tasks or self.queues or self.keys)

    def for_queues(self, queues: Iterable[str]) -> ClaimLimits | None:
        """These limits as a claim of `queues` needs them (queue caps of other queues dropped),
        or None when none is left: the engine's claim then runs without caps."""
        wanted = set(queues)
        queue_caps = {q: cap for q, cap in self.queues.items() if q in wanted}
        if not (self.tasks or self.keys or queue_caps):
            return None
        if len(queue_caps) == len(self.queues):
            return self
        return ClaimLimits(self.tasks, queue_caps, self.keys)


def check_cap(cap: object, what: str) -> int:
    """A cap: a whole number of running jobs, at least 1."""
    if isinstance(cap, bool) or not isinstance(cap, int):
        if isinstance(cap, float) and math.isfinite(cap) and cap.is_integer():
            cap = int(cap)
        else:
            raise ValueError(f"{what} must be a whole number of jobs, at least 1, not {cap!r}")
    if cap < 1:
        raise ValueError(f"{what} must be at least 1, not {cap}")
    return cap


MAX_CONCURRENCY_KEY_BYTES = MAX_FAIRNESS_KEY_BYTES
"""The longest concurrency key stored, in bytes of UTF-8 (the key group's name included): a
fairness key's, as a keyed job is fair-queued by its concurrency key by default."""


def check_concurrency_key(key: object, where: str = "concurrency_key") -> str | None:
    """`key` if it is a usable concurrency key (or None); raise `ValueError` saying why not."""
    return check_key_text(key, where, MAX_CONCURRENCY_KEY_BYTES, "concurrency key")


class Candidate(NamedTuple):
    """A due job as the rule reads it."""

    id: int
    task: str
    queue: str
    concurrency_key: str | None


class Running(NamedTuple):
    """How many jobs hold a slot of each capped task, queue and concurrency key now."""

    tasks: Counter[str]
    queues: Counter[str]
    keys: Counter[str]

    @classmethod
    def empty(cls) -> Running:
        return cls(Counter(), Counter(), Counter())

    def copy(self) -> Running:
        return Running(Counter(self.tasks), Counter(self.queues), Counter(self.keys))

    @classmethod
    def of(cls, jobs: Iterable[Candidate], limits: ClaimLimits) -> Running:
        """Count `jobs` (the running ones with a live lease) against the caps in `limits`."""
        running = cls.empty()
        for job in jobs:
            running.take(job, limits)
        return running

    def take(self, job: Candidate, limits: ClaimLimits) -> None:
        """Count `job` as holding a slot of each of its caps."""
        if job.task in limits.tasks:
            self.tasks[job.task] += 1
        if job.queue in limits.queues:
            self.queues[job.queue] += 1
        if job.concurrency_key is not None:
            self.keys[job.concurrency_key] += 1

    def admits(self, job: Candidate, limits: ClaimLimits) -> bool:
        """Whether every cap that applies to `job` has a free slot."""
        cap = limits.tasks.get(job.task)
        if cap is not None and self.tasks[job.task] >= cap:
            return False
        cap = limits.queues.get(job.queue)
        if cap is not None and self.queues[job.queue] >= cap:
            return False
        key = job.concurrency_key
        if key is not None:
            cap = limits.keys.get(job.task)
            if cap is not None and self.keys[key] >= cap:
                return False
        return True

    def full(self, limits: ClaimLimits) -> FullCaps:
        """The caps without a free slot: what a candidate query can leave out up front (what it
        keeps, `admits` still decides)."""
        return FullCaps(
            tasks=[t for t, cap in limits.tasks.items() if self.tasks[t] >= cap],
            queues=[q for q, cap in limits.queues.items() if self.queues[q] >= cap],
            keys=[
                (task, key)
                for task, cap in limits.keys.items()
                for key, count in self.keys.items()
                if count >= cap
            ],
        )


class FullCaps(NamedTuple):
    """The tasks and queues whose caps are full, and the (task, key) pairs whose key is full
    for that task. Pairs, not keys: a key's cap is its task's, so a key full for one task may
    have room for another, and never holds back a task that caps no keys."""

    tasks: list[str]
    queues: list[str]
    keys: list[tuple[str, str]]


def select_within_caps(
    candidates: Iterable[Candidate], running: Running, limits: ClaimLimits, limit: int
) -> list[int]:
    """The ids of the first `limit` candidates (in the order given: claim order) that the caps
    admit, each taken counting against the caps of the ones after it. `running` is updated."""
    chosen: list[int] = []
    for job in candidates:
        if running.admits(job, limits):
            running.take(job, limits)
            chosen.append(job.id)
            if len(chosen) == limit:
                break
    return chosen
