"""The exceptions a stagecrew user can meet, and what to do about each."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .job import AttemptError


class StagecrewError(Exception):
    """Base class of every error stagecrew raises on purpose."""


class ConfigurationError(StagecrewError):
    """The app, a task or a URL is set up in a way that cannot work."""


class ScheduleError(ConfigurationError):
    """A schedule declaration that cannot work (`app.periodic`, `app.schedule`): a bad cron
    expression, an unknown time zone, a bad interval, a duplicate name, or arguments that do
    not fit the task. Raised when the schedule is declared; fix what the message names."""


class InvalidTimeError(ConfigurationError, ValueError):
    """A time or a duration is not a finite number in range: NaN, infinite, negative, or too far.

    Raised before anything is written or started (an enqueue's `delay` or `run_at`,
    `Retry(in_=...)`, a task's `timeout`, backoff settings, retention, worker options, store
    URL options). Pass a finite number of seconds (or a timezone-aware datetime for `run_at`);
    "never" is spelled None where an option allows it, never `float("inf")`.
    """


class UnknownTaskError(StagecrewError):
    """A job names a task that is not registered on this app."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"no task named {name!r} is registered on this app; "
            "check the name, or import the module that defines it before enqueueing"
        )
        self.name = name


class SerializationError(StagecrewError):
    """A value cannot be stored as JSON (arguments, results) or decoded back."""


class PayloadTooLargeError(SerializationError):
    """An encoded job payload is larger than the app's `max_payload_bytes`."""


class CorruptJobError(StagecrewError):
    """A stored job record is damaged: a field is missing, undecodable or of the wrong type.

    Seen only as the reason of a dead-lettered job: the worker never runs such a job. Find
    out what wrote to the store behind stagecrew's back.
    """


class SignatureError(StagecrewError):
    """A job's payload signature is missing or does not verify with any of the app's keys.

    Seen as the reason of a dead-lettered job when `App(signing_key=...)` is set:
    the job was not enqueued by a producer holding the key, or was changed since.
    """


class InvalidArgumentsError(StagecrewError):
    """Arguments do not bind to the task function's signature."""


class EnqueueError(StagecrewError):
    """The store refused or could not be reached; nothing was written."""


class BackendError(StagecrewError):
    """The store failed during an operation other than enqueue."""


class JobNotFoundError(StagecrewError):
    """No job with that id exists (it may have been pruned)."""


class JobFailedError(StagecrewError):
    """Raised by `JobHandle.result()` when the job ended in the dead-letter state.

    `job_id` names the job, `error` is its last attempt's error (an `AttemptError`: kind,
    type, message, traceback; None for a job dead-lettered without one). Re-run it with
    `stagecrew dlq requeue` once the cause is fixed.
    """

    def __init__(
        self, message: str, *, job_id: int | None = None, error: AttemptError | None = None
    ) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.error = error


class JobCancelledError(StagecrewError):
    """The one cancellation exception: a job was, or is to be, cancelled.

    Raise it from a task to stop the job for good (it becomes cancelled, not dead);
    `ctx.checkpoint()` raises it once the job's cancellation was requested; and
    `JobHandle.result()` raises it for a job that ended cancelled.

    `job_id` names the job it is about when stagecrew raises it. A task that lets the
    error about another job escape (the `result()` of a job it waited for) fails, as
    with any other error; only an error about its own job (or about no job in
    particular, as a task raises it) cancels the job that raised it.
    """

    def __init__(self, reason: str = "", *, job_id: int | None = None) -> None:
        super().__init__(reason or "cancelled by the task")
        self.reason = reason
        self.job_id = job_id


class WorkflowNotFoundError(StagecrewError):
    """No workflow with that id exists (it is pruned with its last member job)."""


class WorkflowFailedError(StagecrewError):
    """Raised by `WorkflowHandle.result()` when the workflow failed: a member died or was
    cancelled (see docs/workflows.md). Re-run the dead member (`stagecrew dlq retry`) to
    resume it; `stagecrew workflows show ID` names the member."""


class WorkflowCancelledError(StagecrewError):
    """Raised by `WorkflowHandle.result()` when the workflow was cancelled."""


class TransitionError(StagecrewError, ValueError):
    """A job was asked to move between two states that `stagecrew.transitions` does not allow."""


class SchemaOutOfDateError(StagecrewError):
    """The store's schema is older than this version of stagecrew expects."""


class LeaseLostError(StagecrewError):
    """The attempt no longer holds its job: the lease expired and another attempt owns it.

    Raised out of `ctx.transaction()` when the job's success could not be
    recorded; the transaction was rolled back, so none of its writes happened.
    """


class StepError(StagecrewError, ValueError):
    """A durable step used in a way that cannot work: a step name used twice in one attempt,
    or `ctx.step` called from an async task (use `await ctx.step_async(...)` there).
    See docs/steps.md."""
