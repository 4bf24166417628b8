"""Release-worker: a dead worker's claims settled at once, as a rescue would."""

from __future__ import annotations

import asyncio
import time
from typing import cast

import pytest

from ...backends.base import Ack, AckKind, Backend, RescueReport
from ...clock import FakeClock
from ...job import ErrorKind
from .helpers import (
    LEASE,
    Harness,
    S,
    approx_time,
    claim,
    enqueue_one,
    job_in_state,
    must_get,
    result_text,
)


class ReleaseWorkerConformance(Harness):
    """`release_worker`: a supervisor that saw its child die frees that worker's claims at once."""

    def test_release_worker_settles_its_running_jobs_at_once_as_a_rescue_would(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        first = enqueue_one(backend, max_attempts=3)
        second = enqueue_one(backend, max_attempts=3)
        claim(backend, first, worker="dead-1")
        claim(backend, second, worker="dead-1")
        clock.advance(1.0)  # well within the lease: no expiry is needed
        assert backend.release_worker("dead-1", max_lost=3) == RescueReport(requeued=2)
        for job_id in (first, second):
            job = must_get(backend, job_id)
            assert job.state is S.AVAILABLE
            assert (job.attempt, job.lost) == (1, 1)
            assert job.lease_owner is None
            assert job.lease_expires_at is None
            assert job.finished_at is None
            [error] = job.errors
            assert (error.kind, error.type, error.attempt) == (ErrorKind.LOST, "WorkerLost", 1)
            assert "dead-1" in error.message
            assert "worker lost" in error.message
            assert error.at == approx_time(clock.now())

    def test_a_released_job_can_be_claimed_again_at_once(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        claim(backend, job_id, worker="dead-1")
        backend.release_worker("dead-1", max_lost=3)
        again = claim(backend, job_id, worker="w2")
        assert (again.attempt, again.lost) == (2, 1)
        assert backend.ack([Ack(again.ref, AckKind.COMPLETE, result=result_text(1))]) == [True]
        assert must_get(backend, job_id).state is S.SUCCEEDED

    def test_release_worker_leaves_the_jobs_of_other_workers_alone(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        mine = enqueue_one(backend)
        other = enqueue_one(backend)
        claim(backend, mine, worker="dead-1")
        other_ref = claim(backend, other, worker="dead-10").ref  # a name that starts alike
        expiry = must_get(backend, other).lease_expires_at
        assert backend.release_worker("dead-1", max_lost=3) == RescueReport(requeued=1)
        job = must_get(backend, other)
        assert (job.state, job.lost, job.errors) == (S.RUNNING, 0, ())
        assert job.lease_owner == "dead-10"
        assert job.lease_expires_at == approx_time(cast(float, expiry))
        assert backend.heartbeat("dead-10", [other_ref], LEASE).lost == frozenset()
        assert backend.ack([Ack(other_ref, AckKind.COMPLETE, result=result_text(2))]) == [True]

    def test_release_worker_leaves_waiting_and_finished_jobs_alone(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        done = job_in_state(backend, clock, S.SUCCEEDED)
        dead = job_in_state(backend, clock, S.DEAD)
        cancelled = job_in_state(backend, clock, S.CANCELLED)
        waiting = job_in_state(backend, clock, S.AVAILABLE)
        later = job_in_state(backend, clock, S.SCHEDULED)
        before = {i: must_get(backend, i) for i in (done, dead, cancelled, waiting, later)}
        assert backend.release_worker("w1", max_lost=3) == RescueReport()
        assert {i: must_get(backend, i) for i in before} == before

    def test_release_worker_of_a_worker_that_holds_nothing_reports_nothing(
        self, backend: Backend
    ) -> None:
        assert backend.release_worker("nobody", max_lost=3) == RescueReport()

    def test_each_release_counts_a_lost_worker_and_the_job_goes_dead_at_max_lost(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend, max_attempts=10)
        for n, expected in enumerate((RescueReport(requeued=1), RescueReport(dead=1)), 1):
            claim(backend, job_id, worker=f"dead-{n}")
            assert backend.release_worker(f"dead-{n}", max_lost=2) == expected
        job = must_get(backend, job_id)
        assert (job.state, job.attempt, job.lost) == (S.DEAD, 2, 2)
        assert job.finished_at == approx_time(clock.now())
        assert job.lease_owner is None
        assert [(e.attempt, e.kind) for e in job.errors] == [
            (1, ErrorKind.LOST),
            (2, ErrorKind.LOST),
        ]
        assert backend.claim(["default"], "w3", 10, LEASE) == []

    def test_release_worker_of_a_job_on_its_last_attempt_makes_it_dead(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend, max_attempts=1)
        claim(backend, job_id, worker="dead-1")
        assert backend.release_worker("dead-1", max_lost=3) == RescueReport(dead=1)
        job = must_get(backend, job_id)
        assert job.state is S.DEAD
        assert [e.kind for e in job.errors] == [ErrorKind.LOST]

    def test_release_worker_of_a_job_with_a_cancel_request_cancels_it(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        claim(backend, job_id, worker="dead-1")
        backend.cancel(job_id)
        assert backend.release_worker("dead-1", max_lost=3) == RescueReport(cancelled=1)
        job = must_get(backend, job_id)
        assert job.state is S.CANCELLED
        assert job.finished_at == approx_time(clock.now())
        assert [e.kind for e in job.errors] == [ErrorKind.CANCELLED]
        assert backend.claim(["default"], "w2", 10, LEASE) == []

    def test_release_worker_reports_each_outcome_across_queues(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        requeued = enqueue_one(backend, queue="a", max_attempts=5)
        dead = enqueue_one(backend, queue="b", max_attempts=1)
        cancelled = enqueue_one(backend, queue="c", max_attempts=5)
        for job_id, queue in ((requeued, "a"), (dead, "b"), (cancelled, "c")):
            claim(backend, job_id, worker="dead-1", queues=[queue])
        backend.cancel(cancelled)
        report = backend.release_worker("dead-1", max_lost=3)
        assert report == RescueReport(requeued=1, dead=1, cancelled=1)
        assert [must_get(backend, i).state for i in (requeued, dead, cancelled)] == [
            S.AVAILABLE,
            S.DEAD,
            S.CANCELLED,
        ]

    def test_the_late_writes_of_a_released_worker_change_nothing(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        stale = claim(backend, job_id, worker="dead-1")
        backend.release_worker("dead-1", max_lost=3)
        assert backend.heartbeat("dead-1", [stale.ref], LEASE).lost == {job_id}
        done = Ack(stale.ref, AckKind.COMPLETE, result=result_text("late"))
        assert backend.ack([done]) == [False]
        assert must_get(backend, job_id).state is S.AVAILABLE
        assert backend.release_worker("dead-1", max_lost=3) == RescueReport()
        assert must_get(backend, job_id).lost == 1

    @pytest.mark.parametrize(("worker", "max_lost"), [("", 3), ("w1", 0)])
    def test_release_worker_refuses_an_empty_worker_or_a_max_lost_below_one(
        self, backend: Backend, worker: str, max_lost: int
    ) -> None:
        job_id = enqueue_one(backend)
        claim(backend, job_id, worker="w1")
        with pytest.raises(ValueError):
            backend.release_worker(worker, max_lost)
        job = must_get(backend, job_id)
        assert (job.state, job.lost, job.errors) == (S.RUNNING, 0, ())

    def test_release_worker_wakes_a_waiting_worker(self, backend: Backend) -> None:
        timeout = 10.0
        enqueue_one(backend)
        claim(backend, worker="dead-1")

        async def scenario() -> float:
            waiter = asyncio.create_task(backend.wait(["default"], timeout))
            await asyncio.sleep(0.1)  # let the waiter start listening
            released = time.monotonic()
            report = await asyncio.to_thread(backend.release_worker, "dead-1", 3)
            assert report == RescueReport(requeued=1)
            await waiter
            return time.monotonic() - released

        assert asyncio.run(scenario()) < timeout / 2
        assert len(backend.claim(["default"], "w2", 10, LEASE)) == 1
