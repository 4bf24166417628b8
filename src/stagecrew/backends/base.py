"""The one seam between stagecrew and a store: the `Backend` contract.

Every engine implements the synchronous operations below once; the base class
offers asynchronous counterparts that run them on a dedicated thread, and an
engine with a native async driver overrides those. The conformance suite in
`stagecrew.testing.conformance` is the definition of a correct engine.

Operations are named after state changes (see `stagecrew.transitions`):
enqueue, claim, heartbeat (renew leases), ack (record outcomes of
attempts), rescue (expired leases), release-worker (the claims of a worker known
to be dead), prune (retention), cancel, requeue, purge.

Fencing. Every job counts its claims (`Job.claims`): each claim adds one in
the same write that makes the job running, and nothing else changes it, not
a requeue (which resets the attempt users see), a hand-back (which gives the
attempt back) or a rescue. A claim's count is its fencing token
(`ClaimedJob.token`, `JobRef`), so (job id, token) never repeats for the life
of a job, and every write a worker makes for a claim (ack, heartbeat,
`complete_in`) applies only while the job is running with that same count.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from ..clock import LATEST_TIME, MAX_SECONDS, Clock, SystemClock, checked_seconds, checked_time
from ..errors import ConfigurationError, InvalidTimeError
from ..job import AttemptError, ClaimedJob, EnqueuedJob, Job, JobRef, JobState, NewJob

T = TypeVar("T")

DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an engine can do natively, so callers never rely on a faked feature."""

    cross_process: bool
    """Several processes can share the store (false for `memory://`)."""
    server_clock: bool
    """Due times and lease expiry are decided by the server's clock, not the caller's."""
    instant_wakeup: bool
    """`wait` returns on new work without polling (LISTEN/NOTIFY, blocking reads)."""
    transactional_enqueue: bool = False
    """Jobs can be enqueued inside the caller's own database transaction."""
    transactional_complete: bool = False
    """A task can mark its job succeeded inside its own transaction (`ctx.transaction()`)."""


class AckKind(StrEnum):
    """The outcome of one attempt, and the state it leads to."""

    COMPLETE = "complete"  # -> succeeded, with result
    RETRY = "retry"  # -> scheduled at the store's now + delay
    DEAD_LETTER = "dead_letter"  # -> dead
    CANCEL = "cancel"  # -> cancelled
    RELEASE = "release"  # -> available (or scheduled at now + delay), the attempt not counted


ACK_TARGET: dict[AckKind, JobState] = {
    AckKind.COMPLETE: JobState.SUCCEEDED,
    AckKind.RETRY: JobState.SCHEDULED,
    AckKind.DEAD_LETTER: JobState.DEAD,
    AckKind.CANCEL: JobState.CANCELLED,
    AckKind.RELEASE: JobState.AVAILABLE,
}


@dataclass(frozen=True, slots=True)
class Ack:
    """One attempt's outcome, applied only if that attempt's claim still holds the job.

    Build one with a named constructor (`Ack.complete`, `Ack.retry`, `Ack.dead_letter`,
    `Ack.cancel`, `Ack.release`): each takes the fields its outcome carries, and every
    Ack, however built, is checked here, so an engine is never handed a result with a
    retry or a delay with a success.

    Fencing: an ack for `ref` (job id, claim token) changes the job only while
    it is running that same claim. A worker that lost its lease (the job was
    rescued, handed back or re-run from the dead-letter queue, perhaps claimed
    again) gets `False` back and changes nothing.

    `delay` is in seconds and the store adds it to its own clock, never to the
    worker's (a worker whose clock is off must not retry early or late): RETRY
    runs again at the store's now + `delay` (0 if None); RELEASE with a delay is
    scheduled at now + `delay` instead of being available at once, and still
    counts neither an attempt nor a lost worker. An `error` given with any kind
    is appended to the job's errors; None leaves them alone. `result` (JSON text)
    belongs to COMPLETE only.
    """

    ref: JobRef
    kind: AckKind
    result: str | None = None
    error: AttemptError | None = None
    delay: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, AckKind):
            raise ValueError(f"an ack's kind must be an AckKind, not {self.kind!r}")
        if self.result is not None:
            if self.kind is not AckKind.COMPLETE:
                raise ValueError(f"a result belongs to a complete ack, not to a {self.kind}")
            if not isinstance(self.result, str):
                raise ValueError(f"an ack's result must be JSON text, not {self.result!r}")
        if self.error is not None and not isinstance(self.error, AttemptError):
            raise ValueError(f"an ack's error must be an AttemptError, not {self.error!r}")
        delay = self.delay
        if delay is None:
            return
        if self.kind not in (AckKind.RETRY, AckKind.RELEASE):
            raise ValueError(
                f"a delay is meaningful for a retry or a release only, not a {self.kind}"
            )
        if isinstance(delay, bool) or not isinstance(delay, int | float):
            raise ValueError(f"an ack's delay must be a number of seconds, not {delay!r}")
        if not math.isfinite(delay) or delay < 0:
            raise ValueError(f"an ack's delay must be finite and >= 0 seconds, not {delay!r}")

    # -- the named constructors: one per outcome ----------------------------------
    @classmethod
    def complete(cls, ref: JobRef, result: str | None = "null") -> Ack:
        """The function returned; `result` is its JSON text ("null" for None)."""
        return cls(ref, AckKind.COMPLETE, result=result)

    @classmethod
    def retry(cls, ref: JobRef, error: AttemptError, delay: float = 0.0) -> Ack:
        """A failed attempt with attempts left: run again `delay` seconds from the store's now."""
        return cls(ref, AckKind.RETRY, error=error, delay=delay)

    @classmethod
    def dead_letter(cls, ref: JobRef, error: AttemptError) -> Ack:
        """Attempts exhausted, not retryable, or not runnable: into the dead-letter queue."""
        return cls(ref, AckKind.DEAD_LETTER, error=error)

    @classmethod
    def cancel(cls, ref: JobRef, error: AttemptError | None = None) -> Ack:
        """The job stops for good as cancelled (a task's or an operator's request)."""
        return cls(ref, AckKind.CANCEL, error=error)

    @classmethod
    def release(
        cls, ref: JobRef, *, delay: float | None = None, error: AttemptError | None = None
    ) -> Ack:
        """Hand the job back without counting the attempt: available now, or after `delay`."""
        return cls(ref, AckKind.RELEASE, error=error, delay=delay)

    @property
    def target(self) -> JobState:
        """The state this outcome leads to, before a pending cancel is taken into account."""
        if self.kind is AckKind.RELEASE and self.delay is not None:
            return JobState.SCHEDULED
        return ACK_TARGET[self.kind]

    @property
    def run_in(self) -> float | None:
        """Seconds from the store's now until the job is due again, for an outcome that
        schedules it (a retry, a delayed release); None for every other outcome."""
        if self.target is not JobState.SCHEDULED:
            return None
        return float(self.delay or 0.0)


@dataclass(frozen=True, slots=True)
class HeartbeatReply:
    lost: frozenset[int]
    """Jobs this worker no longer holds (lease expired and rescued, or taken over)."""
    cancel_requested: frozenset[int]
    """Jobs still held whose cancellation was requested: stop them at a checkpoint."""


@dataclass(frozen=True, slots=True)
class RescueReport:
    requeued: int = 0
    dead: int = 0
    cancelled: int = 0

    @property
    def total(self) -> int:
        return self.requeued + self.dead + self.cancelled


@dataclass(frozen=True, slots=True)
class Retention:
    """How long finished jobs are kept; None keeps them until purged."""

    succeeded: float | None = 7 * DAY
    cancelled: float | None = 7 * DAY
    dead: float | None = None

    def __post_init__(self) -> None:
        for name in ("succeeded", "cancelled", "dead"):
            horizon = getattr(self, name)
            if horizon is not None:
                checked_seconds(horizon, f"Retention({name}=...)")

    def horizon(self, state: JobState) -> float | None:
        return {
            JobState.SUCCEEDED: self.succeeded,
            JobState.CANCELLED: self.cancelled,
            JobState.DEAD: self.dead,
        }.get(state)


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Selects jobs for list, requeue and purge. Empty fields match everything."""

    states: frozenset[JobState] = frozenset()
    queues: frozenset[str] = frozenset()
    tasks: frozenset[str] = frozenset()
    ids: frozenset[int] = frozenset()
    finished_before: float | None = None
    limit: int | None = None
    before_id: int | None = None
    """Keyset pagination: only jobs with a smaller id (results are newest first)."""

    def __post_init__(self) -> None:
        # A NaN bound would match every finished job on some engines and none on others.
        if self.finished_before is not None and not math.isfinite(self.finished_before):
            raise InvalidTimeError(
                f"finished_before must be a finite time, got {self.finished_before!r}"
            )


@dataclass(frozen=True, slots=True)
class QueueStats:
    queue: str
    counts: dict[JobState, int] = field(default_factory=dict)
    oldest_available_age: float | None = None
    """Seconds the longest-waiting due job has waited, by the store's clock."""

    def count(self, state: JobState) -> int:
        return self.counts.get(state, 0)


DEFAULT_MAX_LOST = 3


def check_release_arguments(worker: str, max_lost: int) -> None:
    """What `Backend.release_worker` refuses, checked before any engine writes."""
    if not isinstance(worker, str) or not worker:
        raise ValueError(f"release_worker needs a worker id, got {worker!r}")
    if isinstance(max_lost, bool) or not isinstance(max_lost, int) or max_lost < 1:
        raise ValueError(f"max_lost must be an integer of at least 1, got {max_lost!r}")


def check_new_jobs(jobs: Sequence[NewJob]) -> None:
    """Refuse, before anything is written, a batch with a job whose time is not finite.

    Every engine calls this first in `enqueue`, so a `NewJob` that bypassed the producer
    (a NaN or infinite `run_at` or `delay`) is refused alike everywhere, with
    `InvalidTimeError`, instead of becoming a job that is never due, due at once, or half
    written. The chained comparisons are false for NaN, so one test per field suffices.
    """
    for index, job in enumerate(jobs):
        run_at = job.run_at
        if not 0.0 <= job.delay <= MAX_SECONDS:
            checked_seconds(job.delay, f"job {index} of the batch: delay")
        if run_at is not None and not 0.0 <= run_at <= LATEST_TIME:
            checked_time(run_at, f"job {index} of the batch: run_at")


class Backend(ABC):
    """A job store. Subclasses implement the synchronous operations."""

    capabilities: Capabilities
    url: str

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()

    # -- life cycle ------------------------------------------------------
    def migrate(self) -> None:  # noqa: B027 - engines without a schema need nothing here
        """Create or upgrade the schema. Safe to call repeatedly and concurrently."""

    def prepare(self) -> None:
        """Called once before first use.

        Embedded engines create or upgrade their schema here. Server engines
        only check it, raising `SchemaOutOfDateError` that names
        `stagecrew migrate`, so that upgrades stay an explicit step.
        """
        self.migrate()

    def preflight(self) -> list[str]:
        """Checks a worker runs at start: returns warnings to log.

        Raises `ConfigurationError` when the deployment would lose jobs (for
        example a Redis eviction policy that may evict job keys).
        """
        return []

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    # -- producer --------------------------------------------------------
    @abstractmethod
    def enqueue(self, jobs: Sequence[NewJob]) -> list[EnqueuedJob]:
        """Insert all jobs in one atomic write, deduplicating on idempotency key.

        A job whose idempotency key matches a stored job is not inserted; its
        entry holds the stored job's id and `created=False`. Returns one entry
        per input job, in order. On any failure nothing is written; a job whose `run_at`
        or `delay` is not a finite time is refused with `InvalidTimeError` (see
        `check_new_jobs`).
        """

    def enqueue_in(self, connection: object, jobs: Sequence[NewJob]) -> list[EnqueuedJob]:
        """Enqueue inside the caller's own database transaction (committed means enqueued).

        Only engines with `capabilities.transactional_enqueue` support it.
        """
        raise ConfigurationError(
            f"the {type(self).__name__} store cannot enqueue inside your transaction; "
            "transactional enqueue needs PostgreSQL"
        )

    async def enqueue_in_async(
        self, connection: object, jobs: Sequence[NewJob]
    ) -> list[EnqueuedJob]:
        return self.enqueue_in(connection, jobs)

    def _no_transactional_complete(self) -> ConfigurationError:
        return ConfigurationError(
            f"the {type(self).__name__} store cannot complete a job inside your transaction; "
            "ctx.transaction() needs PostgreSQL"
        )

    def transaction(self) -> contextlib.AbstractContextManager[Any]:
        """A connection in an open transaction, for a task's writes and `complete_in`.

        Only engines with `capabilities.transactional_complete` support it.
        """
        raise self._no_transactional_complete()

    def transaction_async(self) -> contextlib.AbstractAsyncContextManager[Any]:
        raise self._no_transactional_complete()

    def complete_in(self, connection: object, ref: JobRef, result: str | None) -> bool:
        """Mark the claim `ref` succeeded inside the caller's transaction; False if fenced out."""
        raise self._no_transactional_complete()

    async def complete_in_async(self, connection: object, ref: JobRef, result: str | None) -> bool:
        raise self._no_transactional_complete()

    # -- worker ----------------------------------------------------------
    @abstractmethod
    def claim(
        self, queues: Sequence[str], worker: str, limit: int, lease_seconds: float
    ) -> list[ClaimedJob]:
        """Claim up to `limit` due jobs atomically, in (priority, run_at, id) order.

        Due scheduled jobs are claimable; each claimed job becomes running with
        attempt + 1 and claims + 1 (its new fencing token), owned by `worker`
        until now + `lease_seconds`. No two concurrent callers ever claim the
        same job at once, and no two claims of a job ever get the same token.
        """

    @abstractmethod
    def heartbeat(
        self, worker: str, refs: Sequence[JobRef], lease_seconds: float
    ) -> HeartbeatReply:
        """Extend the leases `worker` still holds to now + `lease_seconds`.

        A ref is held while its job is running that claim (same token) for
        `worker`; every other ref is reported lost and extends nothing.
        """

    @abstractmethod
    def ack(self, acks: Sequence[Ack]) -> list[bool]:
        """Apply attempt outcomes in one write; True where the fence let it through."""

    @abstractmethod
    def rescue(self, max_lost: int = DEFAULT_MAX_LOST) -> RescueReport:
        """Return running jobs whose lease expired to available (or dead/cancelled).

        Each rescue records a "worker lost" error on the job; see
        `transitions.after_lease_expired` for the target state.
        """

    @abstractmethod
    def release_worker(self, worker: str, max_lost: int = DEFAULT_MAX_LOST) -> RescueReport:
        """Settle every job `worker` still holds running, at once, as `rescue` settles one.

        For a worker known to be dead (its supervisor saw the process exit), so
        its jobs need not wait out their leases. Each job gets the same "worker
        lost" error and lost-worker count as a rescue, and
        `transitions.after_lease_expired` decides its state; queues that get a
        job back are woken. Jobs of other workers, and jobs no longer running,
        are left alone. Raises `ValueError` for an empty `worker` or a
        `max_lost` below 1, before anything is written.
        """

    @abstractmethod
    def prune(self, retention: Retention, limit: int = 1000) -> int:
        """Delete up to `limit` finished jobs older than the retention allows."""

    async def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Return when new work may exist in `queues`, or after `timeout` seconds."""
        await asyncio.sleep(timeout)

    # -- inspection and admin --------------------------------------------
    @abstractmethod
    def get(self, job_id: int) -> Job | None: ...

    @abstractmethod
    def list_jobs(self, job_filter: JobFilter) -> list[Job]:
        """Jobs matching the filter, newest (highest id) first."""

    @abstractmethod
    def stats(self) -> list[QueueStats]:
        """Counts per queue and state, and the age of each queue's oldest due job."""

    @abstractmethod
    def cancel(self, job_id: int) -> Job | None:
        """Cancel a waiting job now, or request cancellation of a running one.

        Finished jobs are left as they are. Returns the job after the change,
        or None if it does not exist.
        """

    @abstractmethod
    def requeue(self, job_filter: JobFilter) -> int:
        """Make matching dead or cancelled jobs available again, with attempt 0.

        Their claims count is kept: the next claim gets a token no earlier
        claim had, so a stale worker's outcome can never land on it.
        """

    @abstractmethod
    def purge(self, job_filter: JobFilter) -> int:
        """Delete matching finished jobs (never waiting or running ones)."""

    @abstractmethod
    def next_run_at(self, queues: Sequence[str] | None = None) -> float | None:
        """The earliest `run_at` of a waiting job, or None if nothing waits."""

    # -- asynchronous counterparts -----------------------------------------
    async def _offload(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a synchronous operation on this backend's own thread."""
        if self._executor is None:
            with self._executor_lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(
                        max_workers=1, thread_name_prefix="stagecrew-store"
                    )
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def enqueue_async(self, jobs: Sequence[NewJob]) -> list[EnqueuedJob]:
        return await self._offload(self.enqueue, jobs)

    async def claim_async(
        self, queues: Sequence[str], worker: str, limit: int, lease_seconds: float
    ) -> list[ClaimedJob]:
        return await self._offload(self.claim, queues, worker, limit, lease_seconds)

    async def heartbeat_async(
        self, worker: str, refs: Sequence[JobRef], lease_seconds: float
    ) -> HeartbeatReply:
        return await self._offload(self.heartbeat, worker, refs, lease_seconds)

    async def ack_async(self, acks: Sequence[Ack]) -> list[bool]:
        return await self._offload(self.ack, acks)

    async def rescue_async(self, max_lost: int = DEFAULT_MAX_LOST) -> RescueReport:
        return await self._offload(self.rescue, max_lost)

    async def release_worker_async(
        self, worker: str, max_lost: int = DEFAULT_MAX_LOST
    ) -> RescueReport:
        return await self._offload(self.release_worker, worker, max_lost)

    async def prune_async(self, retention: Retention, limit: int = 1000) -> int:
        return await self._offload(self.prune, retention, limit)

    async def get_async(self, job_id: int) -> Job | None:
        return await self._offload(self.get, job_id)

    async def next_run_at_async(self, queues: Sequence[str] | None = None) -> float | None:
        return await self._offload(self.next_run_at, queues)

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.close()
