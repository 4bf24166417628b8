"""`JobHandle`: what enqueue returns; a light reference to one stored job."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from .errors import JobCancelledError, JobFailedError, JobNotFoundError
from .job import Job, JobState, Progress

if TYPE_CHECKING:
    from .app import App

RECHECK_SECONDS = 30.0
"""The longest `result` waits on the store's notification before it reads the job again."""


class JobHandle:
    """A reference to one stored job: its id, and the calls that read and wait for it.

    Enqueue returns one; `app.jobs.handle(job_id)` re-attaches one to a job enqueued
    elsewhere (another process, an earlier request), with the same calls. A handle holds
    no state of the job: each call reads the store.
    """

    def __init__(self, app: App, job_id: int, *, created: bool = True) -> None:
        self.app = app
        self.id = job_id
        self.created = created
        """False when the enqueue made no job: an idempotency key or a unique key matched an
        existing job, whose id this is; False too for a handle re-attached by id."""

    def __repr__(self) -> str:
        return f"<JobHandle {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JobHandle) and other.id == self.id and other.app is self.app

    def __hash__(self) -> int:
        return hash(self.id)

    def get(self) -> Job:
        """The job as stored now."""
        return self.app.jobs.get(self.id)

    async def get_async(self) -> Job:
        return await self.app.jobs.get_async(self.id)

    def state(self) -> JobState:
        return self.get().state

    async def state_async(self) -> JobState:
        return (await self.get_async()).state

    def progress(self) -> Progress | None:
        """The job's last stored progress (`ctx.progress`), or None if it stored none."""
        return self.get().progress

    async def progress_async(self) -> Progress | None:
        return (await self.get_async()).progress

    def cancel(self) -> Job:
        return self.app.jobs.cancel(self.id)

    async def cancel_async(self) -> Job:
        return await self.app.jobs.cancel_async(self.id)

    def result(self, timeout: float | None = None, poll_interval: float = 0.05) -> Any:
        """Wait for the job to finish and return its result, decoded (`Job.result`).

        Raises `JobFailedError` (carrying the last attempt's error) if it went to the
        dead-letter queue,
        `JobCancelledError` if it was cancelled, `JobNotFoundError` if it no longer
        exists, `TimeoutError` after `timeout` seconds of real time (None: no limit).

        Waiting uses the store's notification of finished jobs
        (`Backend.wait_finished`), not a sleep loop: it returns as soon as the job
        finishes. `poll_interval` is accepted for compatibility and ignored.
        """
        deadline = _Deadline.start(self.id, timeout)
        while True:
            job = self.get()
            if job.state.is_final:
                return _outcome(job)
            self.app.backend.wait_finished(self.id, deadline.next_wait(job))

    async def result_async(self, timeout: float | None = None) -> Any:
        """`result` without blocking the event loop: same result, errors and timeout."""
        deadline = _Deadline.start(self.id, timeout)
        while True:
            job = await self.get_async()
            if job.state.is_final:
                return _outcome(job)
            await self.app.backend.wait_finished_async(self.id, deadline.next_wait(job))


class _Deadline:
    """When `result` gives up, in real (monotonic) time."""

    def __init__(self, job_id: int, timeout: float | None, at: float) -> None:
        self.job_id = job_id
        self.timeout = timeout
        self.at = at

    @classmethod
    def start(cls, job_id: int, timeout: float | None) -> _Deadline:
        if timeout is None:
            return cls(job_id, timeout, math.inf)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise TypeError(f"timeout must be a number of seconds or None, not {timeout!r}")
        if math.isnan(timeout):
            raise ValueError("timeout must be a number of seconds or None, not nan")
        return cls(job_id, timeout, time.monotonic() + timeout)

    def next_wait(self, job: Job) -> float:
        """Seconds to wait before reading `job` again; `TimeoutError` once time is up."""
        remaining = self.at - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"job {self.job_id} is still {job.state} after {self.timeout}s")
        return min(remaining, RECHECK_SECONDS)


def _outcome(job: Job) -> Any:
    """A final job's result, or the error that says why it has none."""
    if job.state is JobState.SUCCEEDED:
        return job.result
    if job.state is JobState.DEAD:
        last = job.last_error
        detail = f": {last.type}: {last.message}" if last else ""
        raise JobFailedError(
            f"job {job.id} ({job.task}) is dead{detail}", job_id=job.id, error=last
        )
    raise JobCancelledError(f"job {job.id} ({job.task}) was cancelled", job_id=job.id)


def require(job: Job | None, job_id: int) -> Job:
    if job is None:
        raise JobNotFoundError(f"no job with id {job_id} (it may have been pruned)")
    return job
