"""The store's history of finished attempts: counts per minute, queue, task and outcome.

Workers count the outcomes the store applied (succeeded, retried, dead, ...) and add their
counts to the store every few seconds (`add_counts`); the store adds them to the bucket of
the minute its own clock is in, so every worker's counts for one minute land in one bucket
whatever its clock says. `read_counts(since)` returns the buckets of the last `since`
seconds: the fleet-wide throughput and error rate of the last hour, for `stagecrew top`,
alerts and dashboards, without a metrics server. The pruner deletes buckets older than
`COUNTS_KEEP`. A count is soft data: a worker that dies loses the counts of its last few
seconds, never a job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

BUCKET_SECONDS = 60.0
COUNTS_KEEP = 2 * 3600.0
"""Seconds a minute's bucket is kept after its minute began."""
MAX_COUNT_KEYS = 1000
"""Most (queue, task, outcome) keys one `add_counts` call may carry."""
MAX_COUNT = 2**53
MAX_NAME_BYTES = 500
"""A queue, task or outcome name in a count's key is at most this long (UTF-8): the three
together stay within what every engine's key index takes."""


class CountKey(NamedTuple):
    queue: str
    task: str
    outcome: str


class CountBucket(NamedTuple):
    """One minute's count of one key."""

    start: float
    """The minute's start (epoch seconds, by the store's clock; a multiple of 60)."""
    key: CountKey
    n: int
    """How many attempts of the key ended so in that minute."""


@dataclass(frozen=True, slots=True)
class CountHistory:
    """What `read_counts` returns: the buckets asked for, and the store's now."""

    now: float
    buckets: tuple[CountBucket, ...]
    """Sorted by start, then key."""

    def totals(self, since: float, queue: str | None = None) -> dict[str, int]:
        """Counts by outcome over the buckets that began at or after `since`."""
        totals: dict[str, int] = {}
        for bucket in self.buckets:
            if bucket.start >= since and (queue is None or bucket.key.queue == queue):
                outcome = bucket.key.outcome
                totals[outcome] = totals.get(outcome, 0) + bucket.n
        return totals


def bucket_start(now: float) -> float:
    return (now // BUCKET_SECONDS) * BUCKET_SECONDS


def check_counts(counts: Mapping[CountKey, int]) -> tuple[tuple[CountKey, int], ...]:
    """The counts to add, in key order (so two writers lock rows in one order), refused
    before anything is written if the store could not keep one as given."""
    operation = "add_counts"
    if not isinstance(counts, Mapping):
        raise TypeError(f"{operation} takes a mapping of CountKey to int, not {counts!r}")
    if len(counts) > MAX_COUNT_KEYS:
        raise ValueError(f"{operation}: at most {MAX_COUNT_KEYS} keys per call, not {len(counts)}")
    checked = []
    for key, count in counts.items():
        if not isinstance(key, CountKey):
            raise TypeError(f"{operation}: keys are CountKey(queue, task, outcome), not {key!r}")
        for what, name in (("queue", key.queue), ("task", key.task), ("outcome", key.outcome)):
            _check_name(name, operation, what)
        if isinstance(count, bool) or not isinstance(count, int) or not 0 < count < MAX_COUNT:
            raise ValueError(f"{operation}: a count is an int in [1, 2**53), not {count!r}")
        checked.append((CountKey(key.queue, key.task, key.outcome), count))
    return tuple(sorted(checked))


def _check_name(name: object, operation: str, what: str) -> None:
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ValueError(f"{operation}: a {what} name is non-empty text without NUL, not {name!r}")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"{operation}: the {what} name {name!r} is not valid UTF-8") from None
    if size > MAX_NAME_BYTES:
        raise ValueError(
            f"{operation}: a {what} name is at most {MAX_NAME_BYTES} bytes, not {size}"
        )
