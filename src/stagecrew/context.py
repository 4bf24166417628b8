"""`Context`: what a running job can know about itself and do about its attempt."""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError, JobCancelledError

if TYPE_CHECKING:
    from .worker.job_transaction import JobTransaction

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

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts

    def _cancel(self) -> None:
        self._cancelled = True
