"""Fair queues: the ordering time of a job with a fairness key (virtual-time fair queuing).

Claims take due jobs in (priority, order_at, id) order. A job without a fairness key has
order_at = run_at: first in, first out, as ever. A job with a key that is due when it is
enqueued gets

    order_at = max(V, last[queue, key]) + FAIR_STEP

where V is the order_at of the head of its queue's due jobs at its priority (the store's
now when nothing is due), and last[queue, key] the order_at given to that key's previous
job in the queue. A key that floods a queue spaces its own jobs FAIR_STEP apart from
wherever it started; a key arriving later starts just behind the current head, so its jobs
interleave one for one with the flood's, instead of waiting behind all of it. The claim
pays nothing for this: it still reads one index in order. Only keyed enqueues do the
extra reads and writes.

A keyed job that is delayed (due later than its enqueue) and every job that waits again
(a retry, a hand-back, a rescue, a re-run from the dead-letter queue) is ordered by its
run_at, like a keyless job. See docs/fairness.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..job import NewJob
from .key_text import check_key_text

FAIR_STEP = 1e-6
"""Seconds of ordering time between two jobs of one key (one microsecond: the Redis engine
orders by whole microseconds)."""

MAX_FAIRNESS_KEY_BYTES = 200
"""The longest fairness key, in bytes of UTF-8."""

STALE_AFTER = 86_400.0
"""Seconds after which a key's last ordering time is forgotten (pruned): a key that has not
enqueued for a day starts from the head of its queue again, as a new key does."""


def check_fairness_key(key: object, where: str = "fairness_key") -> str | None:
    """`key` if it is a usable fairness key (or None); raise `ValueError` saying why not."""
    return check_key_text(key, where, MAX_FAIRNESS_KEY_BYTES, "fairness key")


@dataclass(frozen=True, slots=True)
class FairOrder:
    """What a keyed batch needs from the store, and what it writes back."""

    order_ats: list[float | None]
    """Per job of the batch, its order_at; None where the engine stores run_at (no key, or
    not due at enqueue)."""
    lasts: dict[tuple[str, str], float]
    """The new last[queue, key] of each key of the batch."""


def heads_wanted(jobs: Sequence[NewJob]) -> set[tuple[str, int]]:
    """The (queue, priority) whose due head a keyed batch reads."""
    return {(job.queue, job.priority) for job in jobs if job.fairness_key is not None}


def keys_wanted(jobs: Sequence[NewJob]) -> set[tuple[str, str]]:
    """The (queue, fairness key) whose last ordering time a keyed batch reads."""
    return {(job.queue, job.fairness_key) for job in jobs if job.fairness_key is not None}


MICROS = round(1 / FAIR_STEP)


def micros(seconds: float) -> int:
    """`seconds` in whole steps (microseconds), as the Redis engine orders them too."""
    return math.floor(seconds * MICROS + 0.5)


def is_due_at_enqueue(job: NewJob, now: float) -> bool:
    if job.run_at is None:
        return job.delay <= 0
    return job.run_at <= now


def fair_order(
    jobs: Sequence[NewJob],
    now: float,
    heads: Mapping[tuple[str, int], float | None],
    lasts: Mapping[tuple[str, str], float | None],
) -> FairOrder:
    """The order_at of each job of a batch, in batch order (a pure function of what the
    store holds: the due `heads` per (queue, priority), the `lasts` per (queue, key))."""
    count: dict[tuple[str, str, int], int] = {}
    base: dict[tuple[str, str, int], int] = {}
    order_ats: list[float | None] = []
    new_lasts: dict[tuple[str, str], float] = {}
    for job in jobs:
        key = job.fairness_key
        if key is None or not is_due_at_enqueue(job, now):
            order_ats.append(None)
            continue
        slot = (job.queue, key)
        start = (job.queue, key, job.priority)
        if start not in base:
            head = heads.get((job.queue, job.priority))
            virtual = micros(now if head is None else head)
            last = new_lasts.get(slot, lasts.get(slot))
            base[start] = virtual if last is None else max(virtual, micros(last))
            count[start] = 0
        count[start] += 1
        # in whole microseconds: two keys' steps from one head tie exactly (the id decides)
        order_at = (base[start] + count[start]) / MICROS
        order_ats.append(order_at)
        new_lasts[slot] = max(order_at, new_lasts.get(slot, order_at))
    return FairOrder(order_ats, new_lasts)
