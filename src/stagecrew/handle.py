"""`JobHandle`: what enqueue returns; a light reference to one stored job."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .errors import JobCancelledError, JobFailedError, JobNotFoundError
from .job import Job, JobState

if TYPE_CHECKING:
    from .app import App


class JobHandle:
    def __init__(self, app: App, job_id: int, *, created: bool = True) -> None:
        self.app = app
        self.id = job_id
        self.created = created
        """False when an idempotency key matched an existing job, whose id this is."""

    def __repr__(self) -> str:
        return f"<JobHandle {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JobHandle) and other.id == self.id and other.app is self.app

    def __hash__(self) -> int:
        return hash(self.id)

    def get(self) -> Job:
        """The job as stored now."""
        return self.app.jobs.get(self.id)

    def state(self) -> JobState:
        return self.get().state

    def cancel(self) -> Job:
        return self.app.jobs.cancel(self.id)

    def result(self, timeout: float | None = None, poll_interval: float = 0.05) -> Any:
        """Wait for the job to finish and return its result.

        Raises `JobFailedError` if it went to the dead-letter queue,
        `JobCancelledError` if it was cancelled, `TimeoutError` after `timeout`
        seconds of real time.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get()
            if job.state is JobState.SUCCEEDED:
                return job.result_value
            if job.state is JobState.DEAD:
                last = job.last_error
                detail = f": {last.type}: {last.message}" if last else ""
                raise JobFailedError(f"job {self.id} ({job.task}) is dead{detail}")
            if job.state is JobState.CANCELLED:
                raise JobCancelledError(f"job {self.id} ({job.task}) was cancelled")
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {self.id} is still {job.state} after {timeout}s")
            time.sleep(poll_interval)


def require(job: Job | None, job_id: int) -> Job:
    if job is None:
        raise JobNotFoundError(f"no job with id {job_id} (it may have been pruned)")
    return job
