"""The job record and its states, as every engine stores them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple

from .clock import checked_seconds, to_datetime
from .errors import JobCancelledError


class JobState(StrEnum):
    """Where a job is in its life. Transitions are listed in `stagecrew.transitions`."""

    SCHEDULED = "scheduled"
    """Waiting for `run_at`: a delayed job, or a failed attempt waiting to retry."""
    AVAILABLE = "available"
    """Due and waiting for a worker."""
    RUNNING = "running"
    """Claimed by a worker that holds a lease on it until `lease_expires_at`."""
    SUCCEEDED = "succeeded"
    """The function returned; `result` holds its return value."""
    DEAD = "dead"
    """The dead-letter queue: attempts exhausted, a non-retryable error, or unrunnable."""
    CANCELLED = "cancelled"
    """Cancelled before it ran, or stopped at a checkpoint while running."""

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED})
WAITING_STATES = frozenset({JobState.SCHEDULED, JobState.AVAILABLE})


class ErrorKind(StrEnum):
    """Why an attempt did not succeed."""

    ERROR = "error"
    """The function raised."""
    TIMEOUT = "timeout"
    """The function ran longer than the task's timeout."""
    LOST = "lost"
    """The worker died or lost its lease while running the attempt."""
    UNRUNNABLE = "unrunnable"
    """The job could not be started: unknown task, arguments that do not bind, bad payload."""
    CANCELLED = "cancelled"
    """Cancelled on request."""


def storable_text(text: str) -> str:
    """`text` with what some engine refuses to store written as escapes, readable as before.

    A lone surrogate (what `os.fsdecode` makes of a byte of a file name that is not
    UTF-8) cannot be encoded as UTF-8, so no engine can store it; a NUL is refused by
    PostgreSQL text and cut short by C strings. They become `\\udcff` and `\\x00`:
    the text shows what was there, and every engine takes it.
    """
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


@dataclass(frozen=True, slots=True)
class AttemptError:
    """What went wrong in one attempt; every attempt's error is kept on the job.

    Its text fields are made storable (`storable_text`) when it is built, so an
    exception whose message holds text no engine takes still leaves a readable
    error, and its outcome can always be written.
    """

    attempt: int
    at: float
    kind: ErrorKind
    type: str
    message: str
    traceback: str = ""

    def __post_init__(self) -> None:
        for name in ("type", "message", "traceback"):
            text = getattr(self, name)
            storable = storable_text(text)
            if storable is not text:
                object.__setattr__(self, name, storable)

    def to_json(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "at": self.at,
            "kind": str(self.kind),
            "type": self.type,
            "message": self.message,
            "traceback": self.traceback,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AttemptError:
        return cls(
            attempt=int(data.get("attempt", 0)),
            at=float(data.get("at", 0.0)),
            kind=ErrorKind(data.get("kind", "error")),
            type=str(data.get("type", "")),
            message=str(data.get("message", "")),
            traceback=str(data.get("traceback", "")),
        )

    @property
    def at_datetime(self) -> datetime | None:
        return to_datetime(self.at)


DEFAULT_IDEMPOTENCY_WINDOW = 86_400.0
"""Seconds an idempotency key keeps naming its job after the job finished (one day)."""


class NewJob(NamedTuple):
    """A job as handed to `Backend.enqueue`: validated and already encoded.

    `run_at` None means `delay` seconds from now by the store's clock (so a
    server-clock engine never trusts the producer's clock for a relative delay).
    `payload` is the JSON text produced by `serialization.encode_payload`.
    A named tuple, as `ClaimedJob` is: one is built for every job enqueued.
    """

    task: str
    payload: str
    queue: str = "default"
    priority: int = 0
    run_at: float | None = None
    delay: float = 0.0
    max_attempts: int = 20
    idempotency_key: str | None = None
    fairness_key: str | None = None
    """The tenant this job is fair-queued for (see docs/fairness.md); None: plain FIFO."""
    unique_key: str | None = None
    """At most one job holding this key is stored: the enqueue of a job whose key a stored job
    holds makes none (see docs/uniqueness.md). None: not unique."""
    unique_states: frozenset[JobState] = frozenset()
    """The states in which this job holds its unique key (they include scheduled, available
    and running); empty without a unique key."""
    idempotency_window: float | None = DEFAULT_IDEMPOTENCY_WINDOW
    """Seconds after a stored job with this job's idempotency key finished for which the key
    still names that job (None: as long as that job is stored); see docs/uniqueness.md."""
    concurrency_key: str | None = None
    """The key whose running jobs a per-key concurrency cap counts (see docs/limits.md);
    None: no per-key cap applies."""


@dataclass(frozen=True, slots=True)
class EnqueuedJob:
    """What `Backend.enqueue` returns per job: its id, and False if it was deduplicated."""

    id: int
    created: bool


class ClaimedJob(NamedTuple):
    """What a worker gets from `Backend.claim`: enough to run one attempt.

    A named tuple rather than a frozen dataclass: every claimed job is built once per
    attempt, and a frozen dataclass's `__init__` sets each field through
    `object.__setattr__`, which cost more than the rest of a claim's parsing. It is just
    as immutable.
    """

    id: int
    task: str
    queue: str
    payload: str
    attempt: int
    """The attempt this claim runs, as users see it (reset to 0 by a re-run from the DLQ)."""
    token: int
    """This claim's fencing token: the job's `claims` count after this claim.

    It only ever grows (no re-run, hand-back or rescue gives it back), so
    (job id, token) names one claim for the life of the job.
    """
    max_attempts: int
    priority: int
    enqueued_at: float
    run_at: float
    started_at: float
    lease_expires_at: float
    snoozes: int = 0
    """How many times the task snoozed the job before this claim (see `Snooze`)."""
    order_at: float | None = None
    """The job's place in its queue's claim order (priority, order_at, id); None means run_at.

    It differs from run_at for a job with a fairness key only (see `backends.fairness`).
    """
    lost: int = 0
    """How many workers died or lost their lease while running this job before (see the rescuer).

    A job one loss away from `App.max_worker_losses` runs in a process of its own,
    so that the "worker lost" verdict falls only on a job that took down a process
    by itself, never on the jobs that happened to share a process with it.
    """
    workflow_id: str | None = None
    """The workflow this job is a member of (see docs/workflows.md), or None."""
    workflow_input: str | None = None
    """JSON text of what the workflow's previous step returned, for a member of a later step:
    the executor passes it as the first positional argument. None for every other job."""
    defect: str | None = None
    """Why the stored record is damaged (a field missing, undecodable or of the wrong type).

    The engine still claims such a job, so it cannot block the queue, and fills the damaged
    fields with placeholders; the worker dead-letters it without running it.
    """

    @property
    def ref(self) -> JobRef:
        return JobRef(self.id, self.token)


class JobRef(NamedTuple):
    """One claim of one job, as every write a worker makes for that claim names it.

    The store applies such a write (ack, heartbeat, `complete_in`) only while
    the job is running and its `claims` count still equals `token`: a worker
    whose claim was rescued, handed back or re-run meanwhile changes nothing.
    A named tuple, as `ClaimedJob` is, since one is made for every write.
    """

    id: int
    token: int


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a running job says it got (`ctx.progress(done, total, message)`).

    `at` is when the store wrote it (None on a value not yet stored). `fraction` is
    done / total when a total is known and above 0.
    """

    done: float
    total: float | None = None
    message: str | None = None
    at: float | None = None

    @property
    def fraction(self) -> float | None:
        if self.total is None or self.total <= 0:
            return None
        return min(self.done / self.total, 1.0)

    def to_json(self) -> dict[str, Any]:
        return {"done": self.done, "total": self.total, "message": self.message, "at": self.at}


@dataclass(frozen=True, slots=True)
class Job:
    """A snapshot of a stored job, as the inspection API returns it."""

    id: int
    task: str
    queue: str
    state: JobState
    payload: str
    priority: int
    run_at: float
    attempt: int
    max_attempts: int
    enqueued_at: float
    started_at: float | None = None
    finished_at: float | None = None
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    idempotency_key: str | None = None
    cancel_requested: bool = False
    lost: int = 0
    result_json: str | None = None
    """The stored result, as the JSON text the task's return value was encoded to (None
    until the job succeeded, and for a job completed in a transaction, see docs/postgres.md).
    `result` is the decoded value."""
    errors: tuple[AttemptError, ...] = field(default_factory=tuple)
    claims: int = 0
    """How many times the job was claimed, ever: the fencing token of its latest claim."""
    snoozes: int = 0
    """How many times the task snoozed the job (`raise Snooze(...)`): each gave its attempt back."""
    fairness_key: str | None = None
    """The tenant the job is fair-queued for, or None (see docs/fairness.md)."""
    original_priority: int | None = None
    """The priority the job was enqueued with, once the starvation guard improved `priority`
    (see docs/fairness.md, "Priorities and aging"); None while it was never aged."""
    progress: Progress | None = None
    """The last progress the job stored (`ctx.progress`), or None (see docs/steps.md)."""
    unique_key: str | None = None
    """The job's unique key, or None (see docs/uniqueness.md)."""
    unique_states: frozenset[JobState] = frozenset()
    """The states in which the job holds its unique key; empty without one."""
    workflow_id: str | None = None
    """The workflow this job is a member of (docs/workflows.md), or None."""
    workflow_step: int | None = None
    """The member's step in its workflow (0 first), or None."""
    workflow_index: int | None = None
    """The member's place within its step (0 for a single task; a group's position), or None."""
    concurrency_key: str | None = None
    """The key a per-key concurrency cap counts the job under, or None (docs/limits.md)."""

    @property
    def enqueued_priority(self) -> int:
        """The priority the job was enqueued with, aged or not."""
        return self.priority if self.original_priority is None else self.original_priority

    @property
    def args(self) -> list[Any]:
        from .serialization import decode_payload

        return decode_payload(self.payload)[0]

    @property
    def kwargs(self) -> dict[str, Any]:
        from .serialization import decode_payload

        return decode_payload(self.payload)[1]

    @property
    def result(self) -> Any:
        """The task's return value, decoded from `result_json` (None while there is none).

        Raises `SerializationError` if the stored text is not JSON (a damaged record).
        `JobHandle.result()` waits for the job to finish and returns the same value."""
        from .serialization import decode

        text = self.result_json
        return None if text is None else decode(text, what="job result")

    @property
    def result_value(self) -> Any:
        """The former name of `result` (the decoded value), kept working."""
        return self.result

    @property
    def last_error(self) -> AttemptError | None:
        return self.errors[-1] if self.errors else None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready view, used by the CLI's `--json` output."""
        return {
            "id": self.id,
            "task": self.task,
            "queue": self.queue,
            "state": str(self.state),
            "payload": self.payload,
            "priority": self.priority,
            "run_at": self.run_at,
            "attempt": self.attempt,
            "max_attempts": self.max_attempts,
            "enqueued_at": self.enqueued_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "lease_owner": self.lease_owner,
            "lease_expires_at": self.lease_expires_at,
            "idempotency_key": self.idempotency_key,
            "cancel_requested": self.cancel_requested,
            "lost": self.lost,
            "claims": self.claims,
            "snoozes": self.snoozes,
            "fairness_key": self.fairness_key,
            "original_priority": self.original_priority,
            "progress": None if self.progress is None else self.progress.to_json(),
            "unique_key": self.unique_key,
            "unique_states": [st.value for st in JobState if st in self.unique_states],
            "workflow_id": self.workflow_id,
            "workflow_step": self.workflow_step,
            "workflow_index": self.workflow_index,
            "concurrency_key": self.concurrency_key,
            "result_json": self.result_json,
            "errors": [e.to_json() for e in self.errors],
        }


class Retry(Exception):
    """Raise from a task to retry it after `in_` seconds (or at the task's backoff).

    The attempt counts towards `max_attempts`.
    """

    def __init__(self, in_: float | None = None, *, reason: str = "") -> None:
        super().__init__(reason or "retry requested")
        self.in_ = None if in_ is None else checked_seconds(in_, "Retry(in_=...)")
        self.reason = reason


class Snooze(Exception):
    """Raise from a task to run the job again `seconds` from now WITHOUT counting the attempt.

    For a job that is fine but early ("the file is not uploaded yet"). Unlike `Retry`, the
    attempt is given back, so snoozing never brings the job closer to `max_attempts`; each
    snooze counts in `Job.snoozes` instead, and a job that snoozes more than its task's
    `max_snoozes` times goes to the dead-letter queue. `seconds` must be finite and 0 or
    more (`InvalidTimeError` otherwise, which fails the attempt like any exception).
    """

    def __init__(self, seconds: float, *, reason: str = "") -> None:
        self.seconds = checked_seconds(seconds, "Snooze(seconds)")
        super().__init__(reason or f"snoozed for {self.seconds:g}s")
        self.reason = reason


class RateLimited(Snooze):
    """Raise from a task when a remote API answers "too many requests" (HTTP 429).

    The job runs again `retry_after` seconds from now, its attempt given back, as for a
    `Snooze` (it counts in `Job.snoozes`, bounded by the task's `max_snoozes`). If the task
    has a `rate_limit`, the limit also pauses every worker's jobs of it (of that key, for a
    per-key limit) for `retry_after` seconds and then slows to `slowdown` times its rate
    for `cooldown` seconds (see docs/limits.md).
    """

    def __init__(self, retry_after: float = 1.0, *, reason: str = "") -> None:
        self.retry_after = checked_seconds(retry_after, "RateLimited(retry_after)")
        super().__init__(
            self.retry_after, reason=reason or f"rate limited: retry after {self.retry_after:g}s"
        )


Cancel = JobCancelledError
"""Another name of `JobCancelledError`, kept so code written against it keeps working."""
