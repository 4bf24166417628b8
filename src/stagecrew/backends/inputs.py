"""What the front layer checks and normalises before any engine sees an operation's input.

Every rule here holds alike on every engine because no engine applies it: a batch without
jobs never reaches a store, a queue named twice is claimed from once, an idempotency key
repeated within one batch is stored once, and a non-finite time is refused before anything
is written.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..clock import LATEST_TIME, MAX_SECONDS, checked_seconds, checked_time
from ..job import EnqueuedJob, JobRef, NewJob
from .caps import check_concurrency_key
from .fairness import check_fairness_key
from .unique import check_unique_key, check_unique_states


def check_release_arguments(worker: str, max_lost: int) -> None:
    """What `Backend.release_worker` refuses, checked before any engine writes."""
    if not isinstance(worker, str) or not worker:
        raise ValueError(f"release_worker needs a worker id, got {worker!r}")
    check_max_lost(max_lost)


def check_max_lost(max_lost: int) -> None:
    if isinstance(max_lost, bool) or not isinstance(max_lost, int) or max_lost < 1:
        raise ValueError(f"max_lost must be an integer of at least 1, got {max_lost!r}")


def check_worker(worker: str, operation: str) -> None:
    if not isinstance(worker, str) or not worker:
        raise ValueError(f"{operation} needs a worker id, got {worker!r}")


def check_lease(lease_seconds: float, operation: str) -> float:
    return checked_seconds(lease_seconds, f"{operation}: lease_seconds")


def check_new_jobs(jobs: Sequence[NewJob]) -> None:
    """Refuse, before anything is written, a batch with a job whose time is not finite.

    A `NewJob` that bypassed the producer (a NaN or infinite `run_at` or `delay`) is
    refused alike on every engine, with `InvalidTimeError`, instead of becoming a job that
    is never due, due at once, or half written. The chained comparisons are false for
    NaN, so one test per field suffices.
    """
    for index, job in enumerate(jobs):
        if not isinstance(job, NewJob):
            raise TypeError(f"job {index} of the batch is a {type(job).__name__}, not a NewJob")
        run_at = job.run_at
        if not 0.0 <= job.delay <= MAX_SECONDS:
            checked_seconds(job.delay, f"job {index} of the batch: delay")
        if run_at is not None and not 0.0 <= run_at <= LATEST_TIME:
            checked_time(run_at, f"job {index} of the batch: run_at")
        if job.fairness_key is not None:
            check_fairness_key(job.fairness_key, f"job {index} of the batch: fairness_key")
        if job.concurrency_key is not None:
            check_concurrency_key(job.concurrency_key, f"job {index} of the batch: concurrency_key")
        window = job.idempotency_window
        if window is not None and (type(window) is not float or not 0.0 <= window <= MAX_SECONDS):
            checked_seconds(window, f"job {index} of the batch: idempotency_window")
        if job.unique_key is not None or job.unique_states:
            _check_unique(job, index)


def _check_unique(job: NewJob, index: int) -> None:
    where = f"job {index} of the batch"
    if job.unique_key is None:
        raise ValueError(f"{where}: unique_states were given without a unique_key")
    check_unique_key(job.unique_key, f"{where}: unique_key")
    if not isinstance(job.unique_states, frozenset):
        raise ValueError(f"{where}: unique_states must be a frozenset of JobState")
    check_unique_states(job.unique_states, f"{where}: unique_states")


def check_queue_name(queue: str, operation: str) -> str:
    """A queue name every engine can store and look up: non-empty text, valid UTF-8, no NUL."""
    if not isinstance(queue, str) or not queue:
        raise ValueError(f"{operation} needs a queue name, got {queue!r}")
    if "\x00" in queue:
        raise ValueError(f"{operation}: a queue name cannot hold a NUL character, got {queue!r}")
    try:
        queue.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{operation}: the queue name {queue!r} is not valid UTF-8") from None
    return queue


def unique_queues(queues: Iterable[str]) -> tuple[str, ...]:
    """Each queue once, in the order first named."""
    if isinstance(queues, str):
        raise TypeError(f"queues must be a sequence of names, not the string {queues!r}")
    return tuple(dict.fromkeys(queues))


def unique_refs(refs: Iterable[JobRef]) -> tuple[JobRef, ...]:
    unique = tuple(dict.fromkeys(refs))
    for ref in unique:
        if not isinstance(ref, JobRef):
            raise TypeError(f"a heartbeat names claims by JobRef, not by {ref!r}")
    return unique


def check_job_id(job_id: int, operation: str) -> int:
    if isinstance(job_id, bool) or not isinstance(job_id, int):
        raise TypeError(f"{operation} needs a job id (an int), not {job_id!r}")
    return job_id


def check_aging(every: float, floor: int, limit: int) -> tuple[float, int, int]:
    """What `Backend.age_priorities` refuses, checked before any engine changes a job."""
    if isinstance(every, bool) or not isinstance(every, int | float):
        raise ValueError(f"age_priorities: every must be seconds, not {every!r}")
    if not 0.0 < every < MAX_SECONDS:  # false for NaN
        raise ValueError(f"age_priorities: every must be finite seconds above 0, not {every!r}")
    if isinstance(floor, bool) or not isinstance(floor, int):
        raise ValueError(f"age_priorities: floor must be an integer priority, not {floor!r}")
    if abs(floor) >= 2**31:
        raise ValueError(f"age_priorities: floor {floor} is out of the priority range")
    check_limit(limit, "age_priorities")
    if limit < 1:
        raise ValueError(f"age_priorities: limit must be at least 1, not {limit}")
    return float(every), floor, limit


def check_limit(limit: int, operation: str) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise ValueError(f"{operation}: limit must be an integer, got {limit!r}")
    return limit


@dataclass(frozen=True, slots=True)
class EnqueueBatch:
    """A batch as an engine receives it, with the repeats whose answer is known taken out.

    A batch gives each job what enqueuing its jobs one by one, in order, would give. A job
    whose key an earlier job of the batch certainly holds once that job is stored is not sent
    to the engine; it gets that job's id with `created=False`. The earlier job certainly holds
    the key when it has no key of the other kind: it is then either a new job (scheduled or
    available, states in which every job holds its unique key) or the stored job that holds
    the key already. A job repeating a unique key is taken out only when it has no
    idempotency key of its own either, since that key is looked up first. Every other
    repeat goes to the engine, which decides the batch's jobs in order (one with an
    idempotency key and a unique key may meet a stored job that holds only one of them).
    """

    unique: tuple[NewJob, ...]
    """The jobs the engine stores (or finds stored, by key), in batch order."""
    positions: tuple[int, ...]
    """For each job of the original batch, the index in `unique` of the job it maps to."""
    repeats: frozenset[int]
    """Indexes (in the original batch) of jobs whose key an earlier job of the batch holds."""

    @classmethod
    def of(cls, jobs: Sequence[NewJob], *, keys_per_queue: bool = False) -> EnqueueBatch:
        """`keys_per_queue`: the engine deduplicates a key within its queue only (Redis
        Cluster's layout), so one key in two queues names two jobs here too."""
        check_new_jobs(jobs)
        if not any(
            job.idempotency_key is not None or job.unique_key is not None for job in jobs
        ):  # the common case
            return cls(tuple(jobs), tuple(range(len(jobs))), frozenset())
        unique: list[NewJob] = []
        positions: list[int] = []
        repeats: set[int] = set()
        first: dict[tuple[str, str, str], int] = {}
        for index, job in enumerate(jobs):
            scope = job.queue if keys_per_queue else ""
            by_key = by_unique = None
            if job.idempotency_key is not None:
                by_key = ("idempotency", scope, job.idempotency_key)
            if job.unique_key is not None:
                by_unique = ("unique", scope, job.unique_key)
            earlier = first.get(by_key) if by_key is not None else None
            if earlier is None and by_unique is not None and by_key is None:
                earlier = first.get(by_unique)
            if earlier is not None:
                positions.append(earlier)
                repeats.add(index)
                continue
            # only a job with one key surely holds it once stored (see above)
            if by_key is not None and by_unique is None:
                first.setdefault(by_key, len(unique))
            if by_unique is not None and by_key is None:
                first.setdefault(by_unique, len(unique))
            positions.append(len(unique))
            unique.append(job)
        return cls(tuple(unique), tuple(positions), frozenset(repeats))

    def expand(self, stored: Sequence[EnqueuedJob]) -> list[EnqueuedJob]:
        """One entry per job of the original batch, from the engine's entries for `unique`."""
        if len(stored) != len(self.unique):
            raise AssertionError(
                f"the engine answered {len(stored)} entries for {len(self.unique)} jobs"
            )
        if not self.repeats:
            return list(stored)
        return [
            EnqueuedJob(stored[p].id, created=False) if i in self.repeats else stored[p]
            for i, p in enumerate(self.positions)
        ]
