"""What every area of the suite shares: the store under test on a fake clock, and small steps."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from ...backends.base import Ack, AckKind, Backend, QueueStats
from ...backends.unique import DEFAULT_UNIQUE_STATES
from ...clock import FakeClock
from ...job import (
    DEFAULT_IDEMPOTENCY_WINDOW,
    AttemptError,
    ClaimedJob,
    ErrorKind,
    Job,
    JobState,
    NewJob,
)
from ...serialization import encode, encode_payload

S = JobState

BackendFactory = Callable[[FakeClock], Backend]
"""Builds a fresh, migrated, empty store whose clock is the given `FakeClock`."""

LEASE = 30.0
"""The lease, in seconds, every claim and heartbeat in the suite asks for."""


def approx_time(t: float) -> Any:
    """Times may pass through a server with microsecond precision."""
    return pytest.approx(t, abs=1e-3)


def new_job(
    task: str = "conformance.noop",
    *,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    queue: str = "default",
    priority: int = 0,
    run_at: float | None = None,
    delay: float = 0.0,
    max_attempts: int = 3,
    key: str | None = None,
    fairness_key: str | None = None,
    unique_key: str | None = None,
    unique_states: frozenset[JobState] | None = None,
    window: float | None = DEFAULT_IDEMPOTENCY_WINDOW,
    concurrency_key: str | None = None,
) -> NewJob:
    return NewJob(
        task=task,
        payload=encode_payload(list(args), kwargs or {}),
        queue=queue,
        priority=priority,
        run_at=run_at,
        delay=delay,
        max_attempts=max_attempts,
        idempotency_key=key,
        fairness_key=fairness_key,
        unique_key=unique_key,
        unique_states=(
            frozenset()
            if unique_key is None
            else (DEFAULT_UNIQUE_STATES if unique_states is None else unique_states)
        ),
        idempotency_window=window,
        concurrency_key=concurrency_key,
    )


def enqueue_one(backend: Backend, **fields: Any) -> int:
    [entry] = backend.enqueue([new_job(**fields)])
    return entry.id


def claim(
    backend: Backend,
    job_id: int | None = None,
    *,
    worker: str = "w1",
    queues: Sequence[str] = ("default",),
    lease: float = LEASE,
) -> ClaimedJob:
    """Claim exactly one job (and check it is `job_id`, when given)."""
    claimed = backend.claim(queues, worker, 1, lease)
    assert len(claimed) == 1, f"expected one job to claim from {list(queues)}, got {claimed}"
    if job_id is not None:
        assert claimed[0].id == job_id
    return claimed[0]


def attempt_error(
    claimed: ClaimedJob, at: float, message: str, kind: ErrorKind = ErrorKind.ERROR
) -> AttemptError:
    """The error an attempt of `claimed` would record (its attempt number, not its token)."""
    return AttemptError(
        attempt=claimed.attempt,
        at=at,
        kind=kind,
        type="ValueError",
        message=message,
        traceback="Traceback (most recent call last):\n  ...\nValueError: " + message,
    )


def result_text(value: Any) -> str:
    return encode(value, what="result").decode()


def must_get(backend: Backend, job_id: int) -> Job:
    job = backend.get(job_id)
    assert job is not None, f"job {job_id} is missing"
    return job


def job_in_state(
    backend: Backend, clock: FakeClock, state: JobState, *, queue: str = "default", **fields: Any
) -> int:
    """A job driven to `state` through the public operations.

    A running, succeeded or dead job is claimed from `queue`, so callers keep
    other due jobs out of that queue until this returns.
    """
    if state is S.SCHEDULED:
        fields.setdefault("delay", 3600.0)
    job_id = enqueue_one(backend, queue=queue, **fields)
    if state in (S.SCHEDULED, S.AVAILABLE):
        return job_id
    if state is S.CANCELLED:
        backend.cancel(job_id)
        return job_id
    claimed = claim(backend, job_id, queues=[queue])
    if state is S.SUCCEEDED:
        assert backend.ack([Ack(claimed.ref, AckKind.COMPLETE, result=result_text("ok"))]) == [True]
    elif state is S.DEAD:
        error = attempt_error(claimed, clock.now(), "gave up")
        assert backend.ack([Ack(claimed.ref, AckKind.DEAD_LETTER, error=error)]) == [True]
    assert must_get(backend, job_id).state is state
    return job_id


def ids_of(jobs: Sequence[Job]) -> list[int]:
    return [j.id for j in jobs]


def stats_by_queue(backend: Backend) -> dict[str, QueueStats]:
    return {s.queue: s for s in backend.stats()}


class Harness:
    """Fixtures shared by every group: a fake clock and a fresh store on it."""

    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock()

    @pytest.fixture
    def backend(self, backend_factory: BackendFactory, clock: FakeClock) -> Iterator[Backend]:
        backend = backend_factory(clock)
        try:
            yield backend
        finally:
            backend.close()
