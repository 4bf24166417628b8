"""The one seam between stagecrew and a store: the `Backend` contract and its front layer.

`Backend`'s public operations are final and written once, here: they check input, build
the engine's operation, run it through the engine's drivers and map failures. An engine
writes each operation once, as an `Op` (see `ops.py`), and its two drivers; nothing else.
The conformance suite in `stagecrew.testing.conformance` is the definition of a correct
engine (see docs/engines.md).

Operations are named after state changes (see `stagecrew.transitions`):
enqueue, claim, heartbeat (renew leases), ack (record outcomes of
attempts: complete, retry, snooze, dead-letter, cancel, release), rescue (expired
leases), release-worker (the claims of a worker known to be dead), prune
(retention), cancel, requeue, purge; queue control (pause, resume); fire-schedule
(a schedule's tick becomes its job, by compare-and-set, see `schedules.py`), pause and
resume a schedule; durable steps, checkpoints and progress (store-step, store-state,
store-progress, read-steps; see `steps.py`); workflows (see `workflows.py` and
docs/workflows.md): enqueue-workflow (the record and every member in one atomic write, later
steps held), get-workflow, cancel-workflow, and the fan-in, which is no operation of its own:
the write that makes a member of a workflow's current step final (its ack, a cancel) reads the
step's members and advances the workflow in that same atomic write (SQLite: the ack's write
transaction; PostgreSQL: the ack opens a transaction when a batch holds a workflow member's
outcome, `Ack.in_workflow`, and locks the workflow's record before it reads the members; Redis:
the ack script itself; memory: under the engine's lock). A job that is no workflow member costs
the ack one column (or hash field) it reads anyway.

Fencing. Every job counts its claims (`Job.claims`): each claim adds one in
the same write that makes the job running, and nothing else changes it, not
a requeue (which resets the attempt users see), a hand-back (which gives the
attempt back) or a rescue. A claim's count is its fencing token
(`ClaimedJob.token`, `JobRef`), so (job id, token) never repeats for the life
of a job, and every write a worker makes for a claim (ack, heartbeat,
`complete_in`, a step, a checkpoint, progress) applies only while the job is running with
that same count.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar, final

from ..clock import Clock, SystemClock, checked_seconds
from ..errors import (
    BackendError,
    ConfigurationError,
    EnqueueError,
    InvalidTimeError,
    StagecrewError,
)
from ..job import (
    AttemptError,
    ClaimedJob,
    EnqueuedJob,
    Job,
    JobRef,
    JobState,
    NewJob,
    Progress,
)
from .caps import ClaimLimits
from .inputs import (
    EnqueueBatch,
    check_aging,
    check_job_id,
    check_lease,
    check_limit,
    check_max_lost,
    check_new_jobs,
    check_queue_name,
    check_release_arguments,
    check_worker,
    unique_queues,
    unique_refs,
)
from .job_counts import CountHistory, CountKey, check_counts
from .limit_states import LimitState, LimitStates, LimitSwap, check_limit_names, check_swaps
from .ops import Op
from .schedules import (
    ScheduleFire,
    ScheduleFired,
    ScheduleRecord,
    check_fire,
    check_schedule_name,
)
from .steps import (
    JobSteps,
    check_progress,
    check_step_name,
    check_stored_text,
    progress_text,
)
from .worker_registry import WorkerBeat, WorkerRegistry, check_beat, check_keep
from .workflows import HELD_AT, NewWorkflow, Workflow, check_new_workflow, check_workflow_id

T = TypeVar("T")

DAY = 86_400.0

FINISHED_POLL_SECONDS = 0.05
"""How often the fallback `_wait_finished` of an engine that cannot notify reads the job."""


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
    SNOOZE = "snooze"  # -> scheduled at now + delay, the attempt not counted, snoozes + 1


ACK_TARGET: dict[AckKind, JobState] = {
    AckKind.COMPLETE: JobState.SUCCEEDED,
    AckKind.RETRY: JobState.SCHEDULED,
    AckKind.DEAD_LETTER: JobState.DEAD,
    AckKind.CANCEL: JobState.CANCELLED,
    AckKind.RELEASE: JobState.AVAILABLE,
    AckKind.SNOOZE: JobState.SCHEDULED,
}


@dataclass(frozen=True, slots=True)
class Ack:
    """One attempt's outcome, applied only if that attempt's claim still holds the job.

    Build one with a named constructor (`Ack.complete`, `Ack.retry`, `Ack.dead_letter`,
    `Ack.cancel`, `Ack.release`, `Ack.snooze`): each takes the fields its outcome
    carries, and every Ack, however built, is checked here, so an engine is never
    handed a result with a retry or a delay with a success.

    Fencing: an ack for `ref` (job id, claim token) changes the job only while
    it is running that same claim. A worker that lost its lease (the job was
    rescued, handed back or re-run from the dead-letter queue, perhaps claimed
    again) gets `False` back and changes nothing.

    `delay` is in seconds and the store adds it to its own clock, never to the
    worker's (a worker whose clock is off must not retry early or late): RETRY
    runs again at the store's now + `delay` (0 if None); RELEASE with a delay is
    scheduled at now + `delay` instead of being available at once, and still
    counts neither an attempt nor a lost worker. SNOOZE runs again at now +
    `delay` (0 if None), gives its attempt back as a release does, and counts one
    more in the job's `snoozes`; like every outcome it never gives back the claim's
    token. An `error` given with any kind is appended to the job's errors; None
    leaves them alone. `result` (JSON text)
    belongs to COMPLETE only.
    """

    ref: JobRef
    kind: AckKind
    result: str | None = None
    error: AttemptError | None = None
    delay: float | None = None
    in_workflow: bool = False
    """The claim's job is a workflow member (`ClaimedJob.workflow_id`): an engine that writes
    a plain ack in autocommit (PostgreSQL) runs this batch in one transaction with the
    fan-in. The worker sets it; an ack without it still advances the workflow, but a
    PostgreSQL fan-in is then not in the ack's own transaction."""

    def __post_init__(self) -> None:
        if not isinstance(self.ref, JobRef):
            raise ValueError(f"an ack names its claim by a JobRef, not by {self.ref!r}")
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
        if self.kind not in (AckKind.RETRY, AckKind.RELEASE, AckKind.SNOOZE):
            raise ValueError(
                f"a delay is meaningful for a retry, a release or a snooze only, not a {self.kind}"
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

    @classmethod
    def snooze(cls, ref: JobRef, delay: float) -> Ack:
        """Run the job again `delay` seconds from the store's now, the attempt not counted
        (`Snooze`); the job's `snoozes` count grows by one."""
        return cls(ref, AckKind.SNOOZE, delay=delay)

    @property
    def gives_attempt_back(self) -> bool:
        """A release or a snooze: the attempt its claim counted is given back."""
        return self.kind is AckKind.RELEASE or self.kind is AckKind.SNOOZE

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
    more: bool = field(default=False, compare=False)
    """From an engine's `_rescue` only: it settled a full batch in one transaction, so more
    leases may have expired; `Backend.rescue` calls it again (and reports False)."""

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
    paused: bool = False
    """No worker claims from this queue until it is resumed (`Backend.pause_queue`)."""

    def count(self, state: JobState) -> int:
        return self.counts.get(state, 0)


DEFAULT_MAX_LOST = 3


class Backend(ABC):
    """A job store: the front layer every caller talks to, over one engine.

    The public operations are final. Each validates and normalises its input (see
    `inputs.py`), builds the engine's operation (an `Op`, see `ops.py`), runs it through
    the engine's one synchronous or one asynchronous driver, and maps what fails to the
    documented errors: `EnqueueError` from the enqueue operations, `BackendError` from the
    others, `ValueError` or `InvalidTimeError` for bad input before anything is sent.
    `_call` and `_call_async` are the one place every store call passes through.

    An engine subclass provides, and only provides: its operations (`_enqueue`, `_claim`,
    ... below, each given input the front already checked), its two drivers (`_drive`,
    `_drive_async`), the exceptions its client library raises (`_store_errors`) and how
    to describe one (`_describe_failure`).
    """

    capabilities: Capabilities
    url: str

    _store_errors: tuple[type[BaseException], ...] = ()
    """What the engine's client library raises when the store fails or refuses."""
    _keys_per_queue = False
    """True when the engine deduplicates an idempotency key within its queue only."""
    _workflow_in_one_queue = False
    """True when every member of one workflow must be in one queue (Redis: one slot)."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SystemClock()

    # -- life cycle ------------------------------------------------------
    def migrate(self) -> list[str]:
        """Create or upgrade the schema. Safe to call repeatedly and concurrently.

        Returns what this call applied, in order (the migrations' names; empty when the store
        was up to date already, or has no schema)."""
        return []

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

    def close(self) -> None:  # noqa: B027 - engines without connections need nothing here
        """Release connections and threads; the backend is not used afterwards."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # -- the engine's side of the seam -------------------------------------
    @abstractmethod
    def _drive(self, op: Op[T]) -> T:
        """Run `op` to its end on the engine's synchronous connection (see `ops.run`)."""

    @abstractmethod
    async def _drive_async(self, op: Op[T]) -> T:
        """Run `op` to its end without blocking the running event loop."""

    def _drive_in(self, connection: object, op: Op[T]) -> T:
        """Run `op` on the caller's own connection, inside the caller's transaction."""
        raise self._no_transactions()

    async def _drive_in_async(self, connection: object, op: Op[T]) -> T:
        raise self._no_transactions()

    def _describe_failure(self, operation: str, exc: BaseException) -> str:
        """The message of the error `operation` raises for one of `_store_errors`."""
        return f"{operation} failed on {self.url}: {exc}"

    @abstractmethod
    def _enqueue(self, jobs: Sequence[NewJob]) -> Op[list[EnqueuedJob]]:
        """Store `jobs` in one atomic write, one entry per job, in order.

        Given at least one job, every time finite, and no idempotency key twice; a key
        already stored gives that job's id with `created=False`.
        """

    def _enqueue_in(self, jobs: Sequence[NewJob]) -> Op[list[EnqueuedJob]]:
        """`_enqueue` as it runs on a caller's connection (`_drive_in`)."""
        return self._enqueue(jobs)

    @abstractmethod
    def _claim(
        self,
        queues: tuple[str, ...],
        worker: str,
        limit: int,
        lease_seconds: float,
        limits: ClaimLimits | None = None,
    ) -> Op[list[ClaimedJob]]:
        """Claim up to `limit` (at least 1) due jobs of `queues` (each named once), within
        `limits` (None: no cap applies; else at least one cap, see `caps`)."""

    @abstractmethod
    def _heartbeat(
        self, worker: str, refs: tuple[JobRef, ...], lease_seconds: float
    ) -> Op[HeartbeatReply]:
        """Renew the leases of `refs` (at least one, each once) that `worker` holds."""

    @abstractmethod
    def _ack(self, acks: Sequence[Ack]) -> Op[list[bool]]:
        """Apply `acks` (at least one, each checked) in order; True where the fence held."""

    @abstractmethod
    def _rescue(self, max_lost: int) -> Op[RescueReport]: ...

    @abstractmethod
    def _release_worker(self, worker: str, max_lost: int) -> Op[RescueReport]: ...

    @abstractmethod
    def _prune(self, retention: Retention, limit: int) -> Op[int]:
        """Delete up to `limit` (at least 1) finished jobs past their retention."""

    @abstractmethod
    def _age_priorities(self, every: float, floor: int, limit: int) -> Op[int]:
        """Age up to `limit` due waiting jobs (see `age_priorities`); given checked input."""

    async def _wait(self, queues: tuple[str, ...], timeout: float) -> None:
        """Return when work may be due in `queues`, or after `timeout` seconds (polling)."""
        await asyncio.sleep(timeout)

    async def _wait_and_claim(
        self,
        queues: tuple[str, ...],
        worker: str,
        limit: int,
        lease: float,
        timeout: float,
        limits: ClaimLimits | None = None,
    ) -> list[ClaimedJob]:
        """`_wait`, then `_claim`; an engine that can do both in one round trip does.

        Cancelled, it must leave no job claimed (see `wait_and_claim`).
        """
        await self._wait(queues, timeout)
        claiming = asyncio.ensure_future(
            self._drive_async(self._claim(queues, worker, limit, lease, limits))
        )
        try:
            return await asyncio.shield(claiming)
        except asyncio.CancelledError:
            await self._hand_back(await claiming)
            raise

    async def _hand_back(self, claimed: Sequence[ClaimedJob]) -> None:
        """Release jobs claimed for a caller that is gone (neither an attempt nor a lost worker
        counts), so that they need not wait for their leases to expire."""
        if claimed:
            acks = [
                dataclasses.replace(Ack.release(job.ref), in_workflow=job.workflow_id is not None)
                for job in claimed
            ]
            await self._drive_async(self._ack(acks))

    def _wait_finished(self, job_id: int, timeout: float) -> None:
        """Return when job `job_id` may be final or gone, or after `timeout` seconds.

        This default is the fallback for an engine that cannot notify: a bounded poll of
        the store, one read of the job every `FINISHED_POLL_SECONDS`. An engine that can
        notify overrides both forms: it arms its notification first (LISTEN, SUBSCRIBE, a
        `data_version` baseline, a condition), then reads the job once and returns if it is
        final or gone, and only then waits for a notification that may concern it. Arming
        before that read is what makes a job that finished between the caller's read and
        this call impossible to miss. Returning early is allowed (the caller reads the job
        again); sleeping past a finish that was notified is not.
        """
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            time.sleep(min(FINISHED_POLL_SECONDS, remaining))
            if _finished_or_gone(self._call("wait_finished", self._get(job_id))):
                return

    async def _wait_finished_async(self, job_id: int, timeout: float) -> None:
        """`_wait_finished` without blocking the running event loop (same fallback poll)."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(FINISHED_POLL_SECONDS, remaining))
            if _finished_or_gone(await self._call_async("wait_finished", self._get(job_id))):
                return

    @abstractmethod
    def _get(self, job_id: int) -> Op[Job | None]: ...

    @abstractmethod
    def _list_jobs(self, job_filter: JobFilter) -> Op[list[Job]]:
        """Jobs matching the filter (whose limit, if any, is at least 1), newest first."""

    @abstractmethod
    def _stats(self) -> Op[list[QueueStats]]: ...

    @abstractmethod
    def _cancel(self, job_id: int) -> Op[Job | None]: ...

    @abstractmethod
    def _requeue(self, job_filter: JobFilter) -> Op[int]: ...

    @abstractmethod
    def _purge(self, job_filter: JobFilter) -> Op[int]: ...

    @abstractmethod
    def _next_run_at(self, queues: tuple[str, ...] | None) -> Op[float | None]:
        """The earliest run_at of a waiting job of `queues` (every queue if None).

        The front layer (`next_run_at`) has already left paused queues out of `queues`."""

    @abstractmethod
    def _pause_queue(self, queue: str) -> Op[bool]:
        """Mark `queue` paused; True if it was not paused before."""

    @abstractmethod
    def _resume_queue(self, queue: str) -> Op[bool]:
        """Unmark `queue` and wake its workers; True if it was paused."""

    @abstractmethod
    def _paused_queues(self, queues: tuple[str, ...] | None) -> Op[list[str]]:
        """The paused queues among `queues` (every paused queue if None), in any order.

        An idle worker asks about its own queues after each empty claim, so an engine
        should not read every queue of the store to answer that.
        """

    def _stats_with_pauses(self) -> Op[list[QueueStats]]:
        """`_stats`, with each paused queue flagged, and listed even if it holds no job."""
        stats = yield from self._stats()
        paused = set((yield from self._paused_queues(None)))
        flagged = {
            s.queue: dataclasses.replace(s, paused=True) if s.queue in paused else s for s in stats
        }
        for queue in paused - flagged.keys():
            flagged[queue] = QueueStats(queue=queue, paused=True)
        return [flagged[queue] for queue in sorted(flagged)]

    @abstractmethod
    def _fire_schedule(self, fire: ScheduleFire) -> Op[ScheduleFired]:
        """In one atomic write: if the schedule's stored last tick is `fire.expected` (no
        record counts as None) and it is not paused, store `fire.advance_to` as its last
        tick, enqueue the jobs of `fire.jobs` and record the last of them; else change
        nothing. `fire` is checked (`schedules.check_fire`)."""

    @abstractmethod
    def _set_schedule_paused(
        self, name: str, queue: str, paused: bool, now: float
    ) -> Op[ScheduleRecord]:
        """Pause or resume the schedule `name`, creating its record if it has none. A resume
        stores `now` as its last tick when that is later, so that the ticks of the pause
        are passed over, not caught up."""

    @abstractmethod
    def _list_schedules(self) -> Op[list[ScheduleRecord]]:
        """Every stored schedule record, by name."""

    @abstractmethod
    def _store_step(self, ref: JobRef, name: str, text: str) -> Op[bool]:
        """If job `ref.id` is running claim `ref.token`: store `text` as step `name`'s result
        at the store's now, unless the job has that step stored already (the first is kept),
        and return True; else change nothing and return False. Given checked input."""

    @abstractmethod
    def _store_state(self, ref: JobRef, text: str) -> Op[bool]:
        """Fenced as `_store_step`: replace the job's checkpoint with `text`."""

    @abstractmethod
    def _store_progress(self, ref: JobRef, text: str) -> Op[bool]:
        """Fenced as `_store_step`: replace the job's progress (`steps.progress_text`) and its
        time (the store's now), in the jobs row, so that `get` returns it."""

    @abstractmethod
    def _read_steps(self, job_id: int) -> Op[JobSteps]:
        """The steps and checkpoint stored for job `job_id`, in one read (empty if none, or if
        no such job); steps in the order they were stored."""

    @abstractmethod
    def _enqueue_workflow(self, workflow: NewWorkflow) -> Op[list[list[int]]]:
        """In one atomic write: store the workflow's record (running, at step 0) and every
        member, step 0's waiting (due now), later steps' held (scheduled at `HELD_AT`), each
        with its workflow id, step and index. Returns the members' ids, by step. `workflow`
        is checked (`workflows.check_new_workflow`), its ids unused, no member keyed."""

    @abstractmethod
    def _get_workflow(self, workflow_id: str) -> Op[Workflow | None]:
        """The workflow's record and its members still stored, by (step, index)."""

    @abstractmethod
    def _cancel_workflow(self, workflow_id: str) -> Op[Workflow | None]:
        """In one atomic write: unless the workflow succeeded or was cancelled already, mark it
        cancelled, cancel its waiting and held members and request the cancellation of its
        running ones (as `cancel` does for one job). Returns it after the change."""

    @abstractmethod
    def _read_limits(self, names: tuple[str, ...]) -> Op[LimitStates]:
        """The live (not expired) limit records of `names` and the store's now, in one read.
        `names` are checked and distinct."""

    @abstractmethod
    def _swap_limits(self, swaps: tuple[LimitSwap, ...]) -> Op[LimitStates]:
        """In one atomic write: if every swap's name has a live record at its `expected`
        version (None: no live record, an expired one counts as none), store each swap's
        value and version, expiring at the store's now + `ttl`, and return `applied=True`
        with the records written; else write nothing and return `applied=False` with the
        live records of the swaps' names as they are. `swaps` are checked, names distinct."""

    @abstractmethod
    def _list_limits(self, prefix: str) -> Op[list[LimitState]]:
        """Every live limit record whose name starts with `prefix`."""

    @abstractmethod
    def _prune_limits(self, limit: int) -> Op[int]:
        """Delete up to `limit` expired limit records; how many were deleted."""

    @abstractmethod
    def _record_worker(self, beat: WorkerBeat) -> Op[None]:
        """In one atomic write, store `beat` as its worker's record: insert it (started_at,
        seen_at = now) or update it (its info, seen_at = now, started_at kept); alive_until =
        now + ttl; stopped_at = now if the beat says it stopped and the record was not
        stopped before. A stopped record stays stopped: its stopped_at and alive_until are
        never changed again. `beat` is checked."""

    @abstractmethod
    def _list_workers(self) -> Op[WorkerRegistry]:
        """Every worker record, sorted by id, and the store's now, in one read."""

    @abstractmethod
    def _prune_workers(self, keep: float, limit: int) -> Op[int]:
        """Delete up to `limit` worker records last seen at or before now - `keep` seconds;
        how many were deleted."""

    @abstractmethod
    def _add_counts(self, counts: tuple[tuple[CountKey, int], ...]) -> Op[None]:
        """In one atomic write, add each count to its key's bucket of the minute the store's
        now is in (`job_counts.bucket_start`), creating the buckets that do not exist.
        `counts` are checked, in key order, keys distinct."""

    @abstractmethod
    def _read_counts(self, since: float) -> Op[CountHistory]:
        """Every bucket whose minute began at or after now - `since`, sorted by start then
        key, and the store's now, in one read."""

    @abstractmethod
    def _prune_counts(self, keep: float, limit: int) -> Op[int]:
        """Delete up to `limit` buckets whose minute began before now - `keep`; how many."""

    # -- the one place every store call passes through ------------------------
    def _failure(self, operation: str, exc: BaseException) -> StagecrewError:
        error = EnqueueError if operation == "enqueue" else BackendError
        if isinstance(exc, StagecrewError):
            return error(str(exc))
        return error(self._describe_failure(operation, exc))

    def _call(self, operation: str, op: Op[T], driver: Callable[[Op[T]], T] | None = None) -> T:
        """Run `op` through the engine's synchronous driver (or `driver`), mapping failures."""
        try:
            return (driver or self._drive)(op)
        except self._store_errors as exc:
            raise self._failure(operation, exc) from exc
        except BackendError as exc:
            if operation == "enqueue" and not isinstance(exc, EnqueueError):
                raise self._failure(operation, exc) from exc
            raise

    async def _call_async(
        self,
        operation: str,
        op: Op[T],
        driver: Callable[[Op[T]], Awaitable[T]] | None = None,
    ) -> T:
        """`_call` through the engine's asynchronous driver."""
        try:
            return await (driver or self._drive_async)(op)
        except self._store_errors as exc:
            raise self._failure(operation, exc) from exc
        except BackendError as exc:
            if operation == "enqueue" and not isinstance(exc, EnqueueError):
                raise self._failure(operation, exc) from exc
            raise

    # -- producer --------------------------------------------------------
    @final
    def enqueue(self, jobs: Sequence[NewJob]) -> list[EnqueuedJob]:
        """Insert all jobs in one atomic write, deduplicating on idempotency key.

        A job whose idempotency key matches a stored job, or an earlier job of the same
        batch, is not inserted; its entry holds that job's id and `created=False`.
        Returns one entry per input job, in order. On any failure nothing is written; a
        job whose `run_at` or `delay` is not a finite time is refused with
        `InvalidTimeError` (see `inputs.check_new_jobs`).
        """
        if not jobs:
            return []
        batch = EnqueueBatch.of(jobs, keys_per_queue=self._keys_per_queue)
        return batch.expand(self._call("enqueue", self._enqueue(batch.unique)))

    @final
    async def enqueue_async(self, jobs: Sequence[NewJob]) -> list[EnqueuedJob]:
        if not jobs:
            return []
        batch = EnqueueBatch.of(jobs, keys_per_queue=self._keys_per_queue)
        return batch.expand(await self._call_async("enqueue", self._enqueue(batch.unique)))

    @final
    def enqueue_in(self, connection: object, jobs: Sequence[NewJob]) -> list[EnqueuedJob]:
        """Enqueue inside the caller's own database transaction (committed means enqueued).

        Only engines with `capabilities.transactional_enqueue` support it.
        """
        if not self.capabilities.transactional_enqueue:
            raise self._no_transactions(enqueue=True)
        if not jobs:
            return []
        batch = EnqueueBatch.of(jobs, keys_per_queue=self._keys_per_queue)
        op = self._enqueue_in(batch.unique)
        return batch.expand(self._call("enqueue", op, lambda op: self._drive_in(connection, op)))

    @final
    async def enqueue_in_async(
        self, connection: object, jobs: Sequence[NewJob]
    ) -> list[EnqueuedJob]:
        if not self.capabilities.transactional_enqueue:
            raise self._no_transactions(enqueue=True)
        if not jobs:
            return []
        batch = EnqueueBatch.of(jobs, keys_per_queue=self._keys_per_queue)
        op = self._enqueue_in(batch.unique)
        stored = await self._call_async(
            "enqueue", op, lambda op: self._drive_in_async(connection, op)
        )
        return batch.expand(stored)

    def _no_transactions(self, *, enqueue: bool = False) -> ConfigurationError:
        if enqueue:
            return ConfigurationError(
                f"the {type(self).__name__} store cannot enqueue inside your transaction; "
                "transactional enqueue needs PostgreSQL"
            )
        return ConfigurationError(
            f"the {type(self).__name__} store cannot complete a job inside your transaction; "
            "ctx.transaction() needs PostgreSQL"
        )

    def transaction(self) -> contextlib.AbstractContextManager[Any]:
        """A connection in an open transaction, for a task's writes and `complete_in`.

        Only engines with `capabilities.transactional_complete` support it.
        """
        raise self._no_transactions()

    def transaction_async(self) -> contextlib.AbstractAsyncContextManager[Any]:
        raise self._no_transactions()

    @final
    def complete_in(self, connection: object, ref: JobRef, result: str | None) -> bool:
        """Mark the claim `ref` succeeded inside the caller's transaction; False if fenced out."""
        if not self.capabilities.transactional_complete:
            raise self._no_transactions()
        op = self._ack([Ack.complete(ref, result)])
        [applied] = self._call("complete", op, lambda op: self._drive_in(connection, op))
        return applied

    @final
    async def complete_in_async(self, connection: object, ref: JobRef, result: str | None) -> bool:
        if not self.capabilities.transactional_complete:
            raise self._no_transactions()
        op = self._ack([Ack.complete(ref, result)])
        [applied] = await self._call_async(
            "complete", op, lambda op: self._drive_in_async(connection, op)
        )
        return applied

    # -- worker ----------------------------------------------------------
    @final
    def claim(
        self,
        queues: Sequence[str],
        worker: str,
        limit: int,
        lease_seconds: float,
        limits: ClaimLimits | None = None,
    ) -> list[ClaimedJob]:
        """Claim up to `limit` due jobs atomically, in (priority, order_at, id) order.

        order_at is run_at for a job without a fairness key; a keyed job's is its place in
        its queue's fair order (see `fairness`).

        Due scheduled jobs are claimable; each claimed job becomes running with
        attempt + 1 and claims + 1 (its new fencing token), owned by `worker`
        until now + `lease_seconds`. No two concurrent callers ever claim the
        same job at once, and no two claims of a job ever get the same token.

        With `limits`, a job is claimed only while every concurrency cap that applies to it
        has a free slot, fleet-wide; a job whose cap is full is passed over untouched and
        the claim goes on with the jobs behind it (see `caps`).
        """
        wanted, lease, caps = self._claim_input(queues, worker, limit, lease_seconds, limits)
        if not wanted or limit <= 0:
            return []
        op = self._claim(wanted, worker, limit, lease, caps)
        return _claim_order(self._call("claim", op))

    @final
    async def claim_async(
        self,
        queues: Sequence[str],
        worker: str,
        limit: int,
        lease_seconds: float,
        limits: ClaimLimits | None = None,
    ) -> list[ClaimedJob]:
        wanted, lease, caps = self._claim_input(queues, worker, limit, lease_seconds, limits)
        if not wanted or limit <= 0:
            return []
        op = self._claim(wanted, worker, limit, lease, caps)
        return _claim_order(await self._call_async("claim", op))

    @staticmethod
    def _claim_input(
        queues: Sequence[str],
        worker: str,
        limit: int,
        lease_seconds: float,
        limits: ClaimLimits | None,
    ) -> tuple[tuple[str, ...], float, ClaimLimits | None]:
        check_worker(worker, "claim")
        check_limit(limit, "claim")
        wanted = unique_queues(queues)
        if limits is not None and not isinstance(limits, ClaimLimits):
            raise TypeError(f"claim: limits must be ClaimLimits or None, not {limits!r}")
        caps = None if limits is None else limits.for_queues(wanted)
        return wanted, check_lease(lease_seconds, "claim"), caps

    @final
    def heartbeat(
        self, worker: str, refs: Sequence[JobRef], lease_seconds: float
    ) -> HeartbeatReply:
        """Extend the leases `worker` still holds to now + `lease_seconds`.

        A ref is held while its job is running that claim (same token) for
        `worker`; every other ref is reported lost and extends nothing.
        """
        check_worker(worker, "heartbeat")
        lease = check_lease(lease_seconds, "heartbeat")
        if not refs:
            return HeartbeatReply(frozenset(), frozenset())
        return self._call("heartbeat", self._heartbeat(worker, unique_refs(refs), lease))

    @final
    async def heartbeat_async(
        self, worker: str, refs: Sequence[JobRef], lease_seconds: float
    ) -> HeartbeatReply:
        check_worker(worker, "heartbeat")
        lease = check_lease(lease_seconds, "heartbeat")
        if not refs:
            return HeartbeatReply(frozenset(), frozenset())
        op = self._heartbeat(worker, unique_refs(refs), lease)
        return await self._call_async("heartbeat", op)

    @final
    def ack(self, acks: Sequence[Ack]) -> list[bool]:
        """Apply attempt outcomes in one write; True where the fence let it through.

        Outcomes apply in order: a batch that names one claim twice applies the first
        and reports the second fenced out, as two separate calls would.
        """
        if not acks:
            return []
        _check_acks(acks)
        return self._call("ack", self._ack(acks))

    @final
    async def ack_async(self, acks: Sequence[Ack]) -> list[bool]:
        if not acks:
            return []
        _check_acks(acks)
        return await self._call_async("ack", self._ack(acks))

    @final
    def rescue(self, max_lost: int = DEFAULT_MAX_LOST) -> RescueReport:
        """Return running jobs whose lease expired to available (or dead/cancelled).

        Each rescue records a "worker lost" error on the job (`records.WORKER_LOST`); see
        `transitions.after_lease_expired` for the target state. A workflow member that ends
        dead or cancelled runs the fan-in in the same atomic write, as an ack does.
        """
        check_max_lost(max_lost)
        total = RescueReport()
        while True:
            report = self._call("rescue", self._rescue(max_lost))
            total = _added(total, report)
            if not report.more:
                return total

    @final
    async def rescue_async(self, max_lost: int = DEFAULT_MAX_LOST) -> RescueReport:
        check_max_lost(max_lost)
        total = RescueReport()
        while True:
            report = await self._call_async("rescue", self._rescue(max_lost))
            total = _added(total, report)
            if not report.more:
                return total

    @final
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
        check_release_arguments(worker, max_lost)
        return self._call("release_worker", self._release_worker(worker, max_lost))

    @final
    async def release_worker_async(
        self, worker: str, max_lost: int = DEFAULT_MAX_LOST
    ) -> RescueReport:
        check_release_arguments(worker, max_lost)
        return await self._call_async("release_worker", self._release_worker(worker, max_lost))

    @final
    def prune(self, retention: Retention, limit: int = 1000) -> int:
        """Delete up to `limit` finished jobs older than the retention allows."""
        if _check_prune(retention, limit) <= 0:
            return 0
        return self._call("prune", self._prune(retention, limit))

    @final
    async def prune_async(self, retention: Retention, limit: int = 1000) -> int:
        if _check_prune(retention, limit) <= 0:
            return 0
        return await self._call_async("prune", self._prune(retention, limit))

    @final
    def age_priorities(self, every: float, floor: int = 0, limit: int = 1000) -> int:
        """The starvation guard: improve the priority of jobs that waited long; how many changed.

        A due waiting job (available, or scheduled with its run_at passed) whose priority is
        worse (higher) than `floor` gets priority max(floor, p - n), p the priority it was
        enqueued with and n the whole number of `every` seconds since its run_at, when that
        is better than its priority now; `Job.original_priority` keeps p. Aging is never
        undone: a retried job keeps its aged priority. Up to `limit` jobs change per call.
        `every` is finite seconds above 0, `floor` an int, `limit` at least 1 (`ValueError`
        otherwise, before anything changes).
        """
        return self._call("age_priorities", self._age_priorities(*check_aging(every, floor, limit)))

    @final
    async def age_priorities_async(self, every: float, floor: int = 0, limit: int = 1000) -> int:
        op = self._age_priorities(*check_aging(every, floor, limit))
        return await self._call_async("age_priorities", op)

    @final
    async def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Return when new work may exist in `queues`, or after `timeout` seconds."""
        seconds = checked_seconds(max(float(timeout), 0.0), "wait: timeout")
        with self._failures_mapped("wait"):
            await self._wait(unique_queues(queues), seconds)

    @final
    async def wait_and_claim(
        self,
        queues: Sequence[str],
        worker: str,
        limit: int,
        lease_seconds: float,
        timeout: float,
        limits: ClaimLimits | None = None,
    ) -> list[ClaimedJob]:
        """An idle worker's call: `wait` for work in `queues`, then `claim_async` it.

        Claims as soon as work may exist (as `wait` returns: on work that became due since
        the caller last claimed too), in one round trip on an engine that can, else returns
        [] after `timeout` seconds; [] too when another worker took the work first. The claim is
        `claim`'s: order, limit, lease and fencing token alike. Cancelled, it leaves no job
        claimed: a claim that completed meanwhile is handed back (as `Ack.release`: neither
        an attempt nor a lost worker is counted).
        """
        wanted, lease, caps = self._claim_input(queues, worker, limit, lease_seconds, limits)
        seconds = checked_seconds(max(float(timeout), 0.0), "wait_and_claim: timeout")
        if limit <= 0:
            return []
        if not wanted:
            await asyncio.sleep(seconds)
            return []
        with self._failures_mapped("claim"):
            claimed = await self._wait_and_claim(wanted, worker, limit, lease, seconds, caps)
        return _claim_order(claimed)

    # -- inspection and admin --------------------------------------------
    @final
    def get(self, job_id: int) -> Job | None:
        return self._call("get", self._get(check_job_id(job_id, "get")))

    @final
    async def get_async(self, job_id: int) -> Job | None:
        return await self._call_async("get", self._get(check_job_id(job_id, "get")))

    @final
    def wait_finished(self, job_id: int, timeout: float) -> None:
        """Return when job `job_id` may have reached a final state (succeeded, dead,
        cancelled) or is gone, or after `timeout` seconds.

        Returns at once for a job that is final or gone when called. A return says
        "read the job again", never "it is final": spurious returns are allowed, missed
        ones are not (see `_wait_finished`). For `JobHandle.result`, which waits on the
        engine's notification instead of a sleep loop. `timeout` is finite seconds, 0 or
        more (`InvalidTimeError` otherwise).
        """
        seconds = checked_seconds(timeout, "wait_finished: timeout")
        check_job_id(job_id, "wait_finished")
        with self._failures_mapped("wait_finished"):
            self._wait_finished(job_id, seconds)

    @final
    async def wait_finished_async(self, job_id: int, timeout: float) -> None:
        seconds = checked_seconds(timeout, "wait_finished: timeout")
        check_job_id(job_id, "wait_finished")
        with self._failures_mapped("wait_finished"):
            await self._wait_finished_async(job_id, seconds)

    @contextlib.contextmanager
    def _failures_mapped(self, operation: str) -> Iterator[None]:
        """`_call`'s mapping of failures, around a hook that is not an `Op` (a wait)."""
        try:
            yield
        except self._store_errors as exc:
            raise self._failure(operation, exc) from exc

    @final
    def list_jobs(self, job_filter: JobFilter) -> list[Job]:
        """Jobs matching the filter, newest (highest id) first."""
        if job_filter.limit is not None and job_filter.limit <= 0:
            return []
        return self._call("list_jobs", self._list_jobs(job_filter))

    @final
    async def list_jobs_async(self, job_filter: JobFilter) -> list[Job]:
        if job_filter.limit is not None and job_filter.limit <= 0:
            return []
        return await self._call_async("list_jobs", self._list_jobs(job_filter))

    @final
    def stats(self) -> list[QueueStats]:
        """Counts per queue and state, the age of each queue's oldest due job, and whether
        the queue is paused (a paused queue is listed even while it holds no job)."""
        return self._call("stats", self._stats_with_pauses())

    @final
    async def stats_async(self) -> list[QueueStats]:
        return await self._call_async("stats", self._stats_with_pauses())

    # -- queue control ---------------------------------------------------
    @final
    def pause_queue(self, queue: str) -> bool:
        """Stop every worker claiming from `queue`, at its next claim; True if it was running.

        A paused queue keeps accepting jobs; they wait, and running jobs finish as usual.
        The claim itself checks the pause, in the same atomic step, so no claim that
        starts after this returns takes a job of `queue`. Pausing a paused queue changes
        nothing (False). Raises `ValueError` for a name no engine can store.
        """
        name = check_queue_name(queue, "pause_queue")
        return self._call("pause_queue", self._pause_queue(name))

    @final
    async def pause_queue_async(self, queue: str) -> bool:
        name = check_queue_name(queue, "pause_queue")
        return await self._call_async("pause_queue", self._pause_queue(name))

    @final
    def resume_queue(self, queue: str) -> bool:
        """Let workers claim from `queue` again, waking those that wait; True if it was paused."""
        name = check_queue_name(queue, "resume_queue")
        return self._call("resume_queue", self._resume_queue(name))

    @final
    async def resume_queue_async(self, queue: str) -> bool:
        name = check_queue_name(queue, "resume_queue")
        return await self._call_async("resume_queue", self._resume_queue(name))

    @final
    def paused_queues(self, queues: Sequence[str] | None = None) -> list[str]:
        """The names of the paused queues, sorted; with `queues`, only those among them."""
        wanted = None if queues is None else unique_queues(queues)
        return sorted(self._call("paused_queues", self._paused_queues(wanted)))

    @final
    async def paused_queues_async(self, queues: Sequence[str] | None = None) -> list[str]:
        wanted = None if queues is None else unique_queues(queues)
        return sorted(await self._call_async("paused_queues", self._paused_queues(wanted)))

    @final
    def cancel(self, job_id: int) -> Job | None:
        """Cancel a waiting job now, or request cancellation of a running one.

        Finished jobs are left as they are. Returns the job after the change,
        or None if it does not exist.
        """
        return self._call("cancel", self._cancel(check_job_id(job_id, "cancel")))

    @final
    async def cancel_async(self, job_id: int) -> Job | None:
        return await self._call_async("cancel", self._cancel(check_job_id(job_id, "cancel")))

    @final
    def requeue(self, job_filter: JobFilter) -> int:
        """Make matching dead or cancelled jobs available again, with attempt 0.

        Their claims count is kept: the next claim gets a token no earlier
        claim had, so a stale worker's outcome can never land on it.
        `job_filter.limit` is ignored: every match is requeued.
        """
        return self._call("requeue", self._requeue(job_filter))

    @final
    async def requeue_async(self, job_filter: JobFilter) -> int:
        return await self._call_async("requeue", self._requeue(job_filter))

    @final
    def purge(self, job_filter: JobFilter) -> int:
        """Delete matching finished jobs (never waiting or running ones); the limit is ignored."""
        return self._call("purge", self._purge(job_filter))

    @final
    async def purge_async(self, job_filter: JobFilter) -> int:
        return await self._call_async("purge", self._purge(job_filter))

    @final
    def next_run_at(self, queues: Sequence[str] | None = None) -> float | None:
        """The earliest `run_at` of a waiting job a claim could take, or None if nothing waits.

        Held workflow members (`workflows.HELD_AT`) are left out: no time makes them due.
        Jobs of paused queues are left out: they are not due for any worker, and an idle
        worker that waited for them would wake at once, again and again.
        """
        wanted = None if queues is None else unique_queues(queues)
        if wanted == ():
            return None
        return self._call("next_run_at", self._next_claimable(wanted))

    @final
    async def next_run_at_async(self, queues: Sequence[str] | None = None) -> float | None:
        wanted = None if queues is None else unique_queues(queues)
        if wanted == ():
            return None
        return await self._call_async("next_run_at", self._next_claimable(wanted))

    def _next_claimable(self, queues: tuple[str, ...] | None) -> Op[float | None]:
        paused = set((yield from self._paused_queues(queues)))
        if paused:
            if queues is None:
                queues = tuple(s.queue for s in (yield from self._stats()))
            queues = tuple(q for q in queues if q not in paused)
            if not queues:
                return None
        due = yield from self._next_run_at(queues)
        # Held workflow members are not due at any time: their step's fan-in releases them.
        return None if due is not None and due >= HELD_AT else due

    # -- steps, checkpoints and progress (see steps.py and docs/steps.md) -----
    @final
    def store_step(self, ref: JobRef, name: str, value: str) -> bool:
        """Store `value` (JSON text) as the result of step `name` of the claim `ref`.

        Fenced: True only while the job is running that claim; a stale claim (rescued,
        handed back, re-run, or finished) gets False and changes nothing. A step the job
        stored already keeps its first value. Raises `ValueError` or `TypeError` for a bad
        name or for text that is not JSON or larger than `steps.MAX_STEP_BYTES`, before
        anything is written.
        """
        op = self._store_step(*_check_step_write(ref, name, value))
        return self._call("store_step", op)

    @final
    async def store_step_async(self, ref: JobRef, name: str, value: str) -> bool:
        op = self._store_step(*_check_step_write(ref, name, value))
        return await self._call_async("store_step", op)

    @final
    def store_state(self, ref: JobRef, value: str) -> bool:
        """Replace the job's checkpoint with `value` (JSON text); fenced as `store_step`."""
        checked = _check_ref(ref, "store_state")
        text = check_stored_text(value, "store_state", "a checkpoint")
        return self._call("store_state", self._store_state(checked, text))

    @final
    async def store_state_async(self, ref: JobRef, value: str) -> bool:
        checked = _check_ref(ref, "store_state")
        text = check_stored_text(value, "store_state", "a checkpoint")
        return await self._call_async("store_state", self._store_state(checked, text))

    @final
    def store_progress(self, ref: JobRef, progress: Progress) -> bool:
        """Replace the job's progress (what `get` returns as `Job.progress`); fenced as
        `store_step`. The store stamps it with its own time."""
        op = self._store_progress(*_check_progress_write(ref, progress))
        return self._call("store_progress", op)

    @final
    async def store_progress_async(self, ref: JobRef, progress: Progress) -> bool:
        op = self._store_progress(*_check_progress_write(ref, progress))
        return await self._call_async("store_progress", op)

    @final
    def read_steps(self, job_id: int) -> JobSteps:
        """The steps and checkpoint job `job_id` stored, in one read (empty for no job)."""
        return self._call("read_steps", self._read_steps(check_job_id(job_id, "read_steps")))

    @final
    async def read_steps_async(self, job_id: int) -> JobSteps:
        op = self._read_steps(check_job_id(job_id, "read_steps"))
        return await self._call_async("read_steps", op)

    # -- schedules (see schedules.py and docs/schedules.md) -----------------
    @final
    def fire_schedule(self, fire: ScheduleFire) -> ScheduleFired:
        """Advance a schedule's last tick by compare-and-set and enqueue its ticks' jobs, in
        one atomic write: of any number of callers that read the same last tick, one
        succeeds and the others change nothing (`applied=False`). A paused schedule
        refuses every request. Bad input (ticks out of order, a job for another queue, a
        time that is not finite) raises before anything is written."""
        return self._call("fire_schedule", self._fire_schedule(check_fire(fire)))

    @final
    async def fire_schedule_async(self, fire: ScheduleFire) -> ScheduleFired:
        return await self._call_async("fire_schedule", self._fire_schedule(check_fire(fire)))

    @final
    def pause_schedule(self, name: str, queue: str) -> ScheduleRecord:
        """Stop the schedule `name` (whose jobs go to `queue`) from firing, fleet-wide."""
        return self._call("pause_schedule", self._paused_op(name, queue, True))

    @final
    async def pause_schedule_async(self, name: str, queue: str) -> ScheduleRecord:
        return await self._call_async("pause_schedule", self._paused_op(name, queue, True))

    @final
    def resume_schedule(self, name: str, queue: str) -> ScheduleRecord:
        """Let the schedule `name` fire again from now on: the ticks of the pause are skipped."""
        return self._call("resume_schedule", self._paused_op(name, queue, False))

    @final
    async def resume_schedule_async(self, name: str, queue: str) -> ScheduleRecord:
        return await self._call_async("resume_schedule", self._paused_op(name, queue, False))

    def _paused_op(self, name: str, queue: str, paused: bool) -> Op[ScheduleRecord]:
        operation = "pause_schedule" if paused else "resume_schedule"
        check_schedule_name(name, operation)
        check_queue_name(queue, operation)
        return self._set_schedule_paused(name, queue, paused, self.clock.now())

    @final
    def list_schedules(self) -> list[ScheduleRecord]:
        """Every schedule the store has a record of, sorted by name."""
        return sorted(self._call("list_schedules", self._list_schedules()), key=_by_name)

    @final
    async def list_schedules_async(self) -> list[ScheduleRecord]:
        records = await self._call_async("list_schedules", self._list_schedules())
        return sorted(records, key=_by_name)

    # -- limit states (see limit_states.py and docs/limits.md) ---------------
    @final
    def read_limits(self, names: Sequence[str]) -> LimitStates:
        """The live records of the named limits, and the store's now."""
        return self._call("read_limits", self._read_limits(check_limit_names(names, "read_limits")))

    @final
    async def read_limits_async(self, names: Sequence[str]) -> LimitStates:
        op = self._read_limits(check_limit_names(names, "read_limits"))
        return await self._call_async("read_limits", op)

    @final
    def swap_limits(self, swaps: Sequence[LimitSwap]) -> LimitStates:
        """Write every swap's record if each is still at its expected version, else none of
        them (`applied=False`, with the records as they are). Bad input (a name twice, a ttl
        that is not finite, a value that is not JSON or not UTF-8) raises before anything
        is written."""
        return self._call("swap_limits", self._swap_limits(check_swaps(swaps)))

    @final
    async def swap_limits_async(self, swaps: Sequence[LimitSwap]) -> LimitStates:
        return await self._call_async("swap_limits", self._swap_limits(check_swaps(swaps)))

    @final
    def list_limits(self, prefix: str = "") -> list[LimitState]:
        """The live limit records whose names start with `prefix`, sorted by name."""
        return sorted(self._call("list_limits", self._limits_listed(prefix)), key=_by_name)

    @final
    async def list_limits_async(self, prefix: str = "") -> list[LimitState]:
        records = await self._call_async("list_limits", self._limits_listed(prefix))
        return sorted(records, key=_by_name)

    def _limits_listed(self, prefix: str) -> Op[list[LimitState]]:
        if not isinstance(prefix, str):
            raise TypeError(f"list_limits takes a str prefix, not {prefix!r}")
        try:
            prefix.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"list_limits: prefix {prefix!r} is not valid UTF-8") from None
        return self._list_limits(prefix)

    @final
    def prune_limits(self, limit: int = 1000) -> int:
        """Delete up to `limit` expired limit records; how many were deleted."""
        return self._call("prune_limits", self._prune_limits(check_limit(limit, "prune_limits")))

    @final
    async def prune_limits_async(self, limit: int = 1000) -> int:
        op = self._prune_limits(check_limit(limit, "prune_limits"))
        return await self._call_async("prune_limits", op)

    # -- the worker registry (see worker_registry.py) ---------------------------
    @final
    def record_worker(self, beat: WorkerBeat) -> None:
        """Write a worker's record of itself (its heartbeat in the registry); the store
        stamps the times."""
        self._call("record_worker", self._record_worker(check_beat(beat)))

    @final
    async def record_worker_async(self, beat: WorkerBeat) -> None:
        await self._call_async("record_worker", self._record_worker(check_beat(beat)))

    @final
    def list_workers(self) -> WorkerRegistry:
        """Every worker record the store keeps (alive, stopped, lost), and its now."""
        return self._call("list_workers", self._list_workers())

    @final
    async def list_workers_async(self) -> WorkerRegistry:
        return await self._call_async("list_workers", self._list_workers())

    @final
    def prune_workers(self, keep: float, limit: int = 1000) -> int:
        """Delete up to `limit` records of workers last seen `keep` or more seconds ago."""
        return self._call("prune_workers", self._workers_pruned(keep, limit))

    @final
    async def prune_workers_async(self, keep: float, limit: int = 1000) -> int:
        return await self._call_async("prune_workers", self._workers_pruned(keep, limit))

    def _workers_pruned(self, keep: float, limit: int) -> Op[int]:
        checked = check_keep(keep, "prune_workers")
        return self._prune_workers(checked, check_limit(limit, "prune_workers"))

    # -- the history of finished attempts (see job_counts.py) --------------------
    @final
    def add_counts(self, counts: Mapping[CountKey, int]) -> None:
        """Add counts of finished attempts to the store's bucket of the current minute."""
        checked = check_counts(counts)
        if checked:
            self._call("add_counts", self._add_counts(checked))

    @final
    async def add_counts_async(self, counts: Mapping[CountKey, int]) -> None:
        checked = check_counts(counts)
        if checked:
            await self._call_async("add_counts", self._add_counts(checked))

    @final
    def read_counts(self, since: float = 3600.0) -> CountHistory:
        """The buckets of the minutes that began in the last `since` seconds."""
        return self._call("read_counts", self._read_counts(check_keep(since, "read_counts")))

    @final
    async def read_counts_async(self, since: float = 3600.0) -> CountHistory:
        op = self._read_counts(check_keep(since, "read_counts"))
        return await self._call_async("read_counts", op)

    @final
    def prune_counts(self, keep: float, limit: int = 1000) -> int:
        """Delete up to `limit` buckets whose minute began more than `keep` seconds ago."""
        return self._call("prune_counts", self._counts_pruned(keep, limit))

    @final
    async def prune_counts_async(self, keep: float, limit: int = 1000) -> int:
        return await self._call_async("prune_counts", self._counts_pruned(keep, limit))

    def _counts_pruned(self, keep: float, limit: int) -> Op[int]:
        checked = check_keep(keep, "prune_counts")
        return self._prune_counts(checked, check_limit(limit, "prune_counts"))

    # -- workflows (see workflows.py and docs/workflows.md) -------------------
    @final
    def enqueue_workflow(self, workflow: NewWorkflow) -> list[list[int]]:
        """Store a workflow and all its members in one atomic write; their ids by step.

        Members are checked as `enqueue` checks jobs (finite times, sizes), and must carry no
        idempotency or fairness key; on any failure nothing is written (`EnqueueError` from
        the store, `ValueError` / `TypeError` for bad input before anything is sent)."""
        op = self._enqueue_workflow(self._workflow_input(workflow))
        return self._call("enqueue", op)

    @final
    async def enqueue_workflow_async(self, workflow: NewWorkflow) -> list[list[int]]:
        op = self._enqueue_workflow(self._workflow_input(workflow))
        return await self._call_async("enqueue", op)

    def _workflow_input(self, workflow: NewWorkflow) -> NewWorkflow:
        check_new_workflow(workflow)
        members = [job for jobs in workflow.steps for job in jobs]
        check_new_jobs(members)
        queues = {job.queue for job in members}
        if self._workflow_in_one_queue and len(queues) > 1:
            raise ValueError(
                f"on {type(self).__name__} every member of one workflow goes to one queue, "
                f"not to {sorted(queues)}: the fan-in is one script on one queue's keys (see "
                "docs/workflows.md); give the members one queue"
            )
        return workflow

    @final
    def get_workflow(self, workflow_id: str) -> Workflow | None:
        """The workflow's record and its stored members, or None if there is none."""
        op = self._get_workflow(check_workflow_id(workflow_id, "get_workflow"))
        return self._call("get_workflow", op)

    @final
    async def get_workflow_async(self, workflow_id: str) -> Workflow | None:
        op = self._get_workflow(check_workflow_id(workflow_id, "get_workflow"))
        return await self._call_async("get_workflow", op)

    @final
    def cancel_workflow(self, workflow_id: str) -> Workflow | None:
        """Cancel a workflow: its waiting and held members are cancelled and its running ones
        asked to stop, in one atomic write; it never advances again. A workflow that
        succeeded or was cancelled is left as it is. None if there is no such workflow."""
        op = self._cancel_workflow(check_workflow_id(workflow_id, "cancel_workflow"))
        return self._call("cancel_workflow", op)

    @final
    async def cancel_workflow_async(self, workflow_id: str) -> Workflow | None:
        op = self._cancel_workflow(check_workflow_id(workflow_id, "cancel_workflow"))
        return await self._call_async("cancel_workflow", op)


def _added(total: RescueReport, report: RescueReport) -> RescueReport:
    return RescueReport(
        total.requeued + report.requeued,
        total.dead + report.dead,
        total.cancelled + report.cancelled,
    )


def _by_name(record: ScheduleRecord | LimitState) -> str:
    return record.name


def _claim_order(claimed: list[ClaimedJob]) -> list[ClaimedJob]:
    """Claimed jobs in the order the contract promises, whatever order the engine found them."""
    claimed.sort(
        key=lambda job: (
            job.priority,
            job.run_at if job.order_at is None else job.order_at,
            job.id,
        )
    )
    return claimed


def _finished_or_gone(job: Job | None) -> bool:
    return job is None or job.state.is_final


def _check_prune(retention: Retention, limit: int) -> int:
    if not isinstance(retention, Retention):
        raise TypeError(f"prune needs a Retention, not {retention!r}")
    return check_limit(limit, "prune")


def _check_ref(ref: JobRef, operation: str) -> JobRef:
    if not isinstance(ref, JobRef):
        raise TypeError(f"{operation} names its claim by a JobRef, not by {ref!r}")
    return ref


def _check_step_write(ref: JobRef, name: str, value: str) -> tuple[JobRef, str, str]:
    checked = _check_ref(ref, "store_step")
    step = check_step_name(name, "store_step")
    return checked, step, check_stored_text(value, "store_step", f"step {name!r}'s result")


def _check_progress_write(ref: JobRef, progress: Progress) -> tuple[JobRef, str]:
    checked = _check_ref(ref, "store_progress")
    if not isinstance(progress, Progress):
        raise TypeError(f"store_progress takes a Progress, not {progress!r}")
    valid = check_progress(progress.done, progress.total, progress.message)
    return checked, progress_text(valid)


def _check_acks(acks: Sequence[Ack]) -> None:
    for index, ack in enumerate(acks):
        if not isinstance(ack, Ack):
            raise TypeError(f"outcome {index} of the batch is a {type(ack).__name__}, not an Ack")


class ThreadDriven(Backend):
    """An engine whose client blocks: its asynchronous driver runs `_drive` on a thread.

    One thread per backend, so an engine whose connections are per thread (SQLite) keeps
    one connection for every asynchronous call.
    """

    def __init__(self, clock: Clock | None = None) -> None:
        super().__init__(clock)
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()

    async def _drive_async(self, op: Op[T]) -> T:
        if self._executor is None:
            with self._executor_lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(
                        max_workers=1, thread_name_prefix="stagecrew-store"
                    )
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._drive, op)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
