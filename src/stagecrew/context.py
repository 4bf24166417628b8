"""`Context`: what a running job can know about itself and do about its attempt."""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError, JobCancelledError

if TYPE_CHECKING:
    from .worker.job_transaction import JobTransaction
    from .worker.steps import AttemptSteps

job_logger = logging.getLogger("stagecrew.job")


class JobLogAdapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Adds job id, task and attempt to every line a job logs through `ctx.log`."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = self.extra or {}
        kwargs["extra"] = {**extra, **kwargs.get("extra", {})}
        return f"[job {extra['job_id']} {extra['task']} attempt {extra['attempt']}] {msg}", kwargs


JobCancelled = JobCancelledError
"""Another name of `JobCancelledError`, kept so code written against it keeps working."""


class Context:
    """Passed to a task that declares a parameter annotated `Context`."""

    def __init__(
        self,
        *,
        job_id: int,
        task: str,
        queue: str,
        attempt: int,
        max_attempts: int,
        enqueued_at: float,
        transaction: Callable[[Context], JobTransaction] | None = None,
        steps: AttemptSteps | None = None,
    ) -> None:
        self.job_id = job_id
        self.task = task
        self.queue = queue
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.enqueued_at = enqueued_at
        self._cancelled = False
        self._log: JobLogAdapter | None = None
        self._transaction = transaction
        self._steps = steps

    @property
    def log(self) -> JobLogAdapter:
        """A logger whose lines carry this job's id, task and attempt."""
        if self._log is None:
            self._log = JobLogAdapter(
                job_logger, {"job_id": self.job_id, "task": self.task, "attempt": self.attempt}
            )
        return self._log

    @property
    def cancelled(self) -> bool:
        """True once cancellation was requested or the attempt timed out.

        A sync task should look at this between units of work and return early:
        its result is discarded either way.
        """
        return self._cancelled

    def checkpoint(self) -> None:
        """Raise `JobCancelledError` if the job should stop now."""
        if self._cancelled:
            raise JobCancelledError(f"job {self.job_id} was cancelled", job_id=self.job_id)

    def transaction(self) -> JobTransaction:
        """A database transaction that also marks this job succeeded when it commits.

        Use it once, as the last thing the task does (PostgreSQL only)::

            with ctx.transaction() as conn:          # async: async with
                conn.execute("INSERT INTO payments ...")

        The job's success and the block's writes commit together or not at
        all, so writes kept inside the block happen once even though the job
        may run more than once. The block raising rolls everything back and
        the attempt fails as usual; a lost lease rolls it back and raises
        `LeaseLostError`. The job's stored result is None. See
        docs/postgres.md for exactly what is and is not guaranteed.
        """
        if self._transaction is None:
            raise ConfigurationError("ctx.transaction() is only available inside a running job")
        return self._transaction(self)

    # -- durable steps, checkpoint and progress (docs/steps.md) -----------------------
    def _attempt_steps(self) -> AttemptSteps:
        if self._steps is None:
            raise ConfigurationError("steps, checkpoints and progress need a running job")
        return self._steps

    def step(self, name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run `fn(*args, **kwargs)` once for this job and store its JSON result.

        A later attempt of the job (after an exception, a timeout, a lost lease or a killed
        worker) returns the stored result, decoded, without calling `fn`; the first run
        returns the stored form too (a tuple comes back as a list). A step that raises is
        not stored. Each name is used once per attempt (`StepError` otherwise). A result
        that is not JSON or over 1 MiB raises `SerializationError` and is not stored. If
        this attempt lost its claim, nothing is stored and `LeaseLostError` is raised. For
        sync tasks; an async task uses `await ctx.step_async(...)`.
        """
        return self._attempt_steps().step(name, fn, *args, **kwargs)

    async def step_async(
        self, name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> Any:
        """`step` for an async task: `fn` may be a coroutine function (awaited) or a plain
        function (called on the event loop, so keep it short)."""
        return await self._attempt_steps().step_async(name, fn, *args, **kwargs)

    @property
    def state(self) -> Any:
        """The last checkpoint stored for this job (`checkpoint_state`), decoded; None at first.

        The first read of an attempt costs one store round trip (on the event loop in an
        async task: prefer `await ctx.state_async()` there)."""
        return self._attempt_steps().state

    async def state_async(self) -> Any:
        """`state`, read without blocking the event loop."""
        return await self._attempt_steps().state_async()

    def checkpoint_state(self, value: Any) -> None:
        """Keep `value` (JSON) as this job's checkpoint, for its later attempts (`ctx.state`).

        Written at most once a second; the last value is always written when the attempt
        ends, before its outcome. A value that is not JSON or over 1 MiB raises
        `SerializationError` at once. After a refused write (this attempt lost its
        claim) the next call raises `LeaseLostError`. Once the attempt has ended (a sync
        task still running past its timeout, or after `ctx.transaction()` committed) the
        value is not stored, and no error is raised.
        """
        self._attempt_steps().checkpoint_state(value)

    def progress(self, done: float, total: float | None = None, message: str | None = None) -> None:
        """Report how far the job got (`Job.progress`, `handle.progress()`, `jobs show`).

        Written at most once a second per job; the last value is always written when the
        attempt ends, before its outcome (not stored once it has ended, as for
        `checkpoint_state`). `done` and `total` are finite numbers >= 0, `message` at most
        500 characters (`ValueError` or `TypeError` otherwise)."""
        self._attempt_steps().progress(done, total, message)

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts

    def _cancel(self) -> None:
        self._cancelled = True
