"""The verdict on a poison suspect whose own process died: the loss counted as a rescue would.

The Acks are applied on the memory engine, to show they need no new store operation.
"""

from __future__ import annotations

import pytest

from stagecrew import ErrorKind, FakeClock, JobState
from stagecrew.backends.base import AckKind
from stagecrew.backends.memory import MemoryBackend
from stagecrew.job import ClaimedJob, NewJob
from stagecrew.worker.executor import StopReason
from stagecrew.worker.isolated import crash_verdict, stopped_ack

MAX_LOST = 3


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
def backend(clock: FakeClock) -> MemoryBackend:
    return MemoryBackend(clock=clock)


def _claim(backend: MemoryBackend, *, lost: int, max_attempts: int = 20) -> ClaimedJob:
    """A job that `lost` workers lost before, claimed again."""
    backend.enqueue([NewJob("crash", '{"args":[],"kwargs":{}}', max_attempts=max_attempts)])
    for _ in range(lost):
        backend.claim(["default"], "gone", 1, 1.0)
        assert isinstance(backend.clock, FakeClock)
        backend.clock.advance(2)
        backend.rescue(max_lost=100)
    (job,) = backend.claim(["default"], "me", 1, 30.0)
    assert job.lost == lost
    return job


def test_a_suspect_whose_own_process_died_goes_dead_as_worker_lost(
    backend: MemoryBackend,
) -> None:
    job = _claim(backend, lost=MAX_LOST - 1)
    ack = crash_verdict(job, MAX_LOST, 1.0, how="was killed by SIGKILL")
    assert ack.kind is AckKind.DEAD_LETTER
    assert backend.ack([ack]) == [True]
    stored = backend.get(job.id)
    assert stored is not None and stored.state is JobState.DEAD
    assert len(stored.errors) == MAX_LOST
    verdict = stored.errors[-1]
    assert (verdict.kind, verdict.type, verdict.attempt) == (ErrorKind.LOST, "WorkerLost", 3)
    assert "killed by SIGKILL" in verdict.message and "worker lost" in verdict.message


def test_a_crash_below_the_limit_counts_the_attempt_and_runs_again(
    backend: MemoryBackend,
) -> None:
    job = _claim(backend, lost=0)
    ack = crash_verdict(job, MAX_LOST, 1.0, how="exited with code 1 without an outcome")
    assert ack.kind is AckKind.RETRY and ack.error is not None
    assert ack.error.kind is ErrorKind.LOST
    assert backend.ack([ack]) == [True]
    (again,) = backend.claim(["default"], "me", 1, 30.0)
    assert again.attempt == 2


def test_a_crash_on_the_last_attempt_goes_dead(backend: MemoryBackend) -> None:
    job = _claim(backend, lost=0, max_attempts=1)
    assert crash_verdict(job, MAX_LOST, 1.0, how="died").kind is AckKind.DEAD_LETTER


def test_a_crash_while_a_cancellation_was_pending_ends_cancelled(backend: MemoryBackend) -> None:
    job = _claim(backend, lost=MAX_LOST - 1)
    ack = crash_verdict(job, MAX_LOST, 1.0, how="died", cancel_requested=True)
    assert ack.kind is AckKind.CANCEL
    assert ack.error is not None and ack.error.kind is ErrorKind.CANCELLED


def test_a_stopped_child_gives_the_outcome_of_its_stop_reason(backend: MemoryBackend) -> None:
    job = _claim(backend, lost=MAX_LOST - 1)
    cancelled = stopped_ack(job, StopReason.CANCEL, 1.0)
    assert cancelled is not None and cancelled.kind is AckKind.CANCEL
    released = stopped_ack(job, StopReason.SHUTDOWN, 1.0)
    assert released is not None and released.kind is AckKind.RELEASE
    assert stopped_ack(job, StopReason.LOST, 1.0) is None
