"""Rescue: expired leases settled as a worker lost, by `transitions.after_lease_expired`."""

from __future__ import annotations

from ...backends.base import Ack, AckKind, Backend, RescueReport
from ...clock import FakeClock
from ...job import ErrorKind
from .helpers import LEASE, Harness, S, approx_time, claim, enqueue_one, must_get, result_text


class RescueConformance(Harness):
    def test_rescue_returns_an_expired_job_to_available_with_a_worker_lost_error(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend, max_attempts=3)
        claim(backend, job_id)
        clock.advance(LEASE + 1.0)
        assert backend.rescue() == RescueReport(requeued=1)
        job = must_get(backend, job_id)
        assert job.state is S.AVAILABLE
        assert job.attempt == 1
        assert job.lost == 1
        assert job.lease_owner is None
        assert job.lease_expires_at is None
        assert job.finished_at is None
        [error] = job.errors
        assert error.kind is ErrorKind.LOST
        assert error.attempt == 1
        assert "worker lost" in error.message
        assert error.at == approx_time(clock.now())

    def test_a_rescued_job_runs_again_with_the_lost_attempt_counted(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        assert claim(backend, job_id, worker="w1").lost == 0
        clock.advance(LEASE + 1.0)
        backend.rescue()
        again = claim(backend, job_id, worker="w2")
        assert again.attempt == 2
        assert again.lost == 1  # the worker uses it to run a job near its loss limit alone
        assert backend.ack([Ack(again.ref, AckKind.COMPLETE, result=result_text(1))]) == [True]

    def test_rescue_leaves_unexpired_leases_alone(self, backend: Backend, clock: FakeClock) -> None:
        job_id = enqueue_one(backend)
        claim(backend, job_id)
        clock.advance(LEASE - 1.0)
        assert backend.rescue() == RescueReport()
        job = must_get(backend, job_id)
        assert (job.state, job.lost, job.errors) == (S.RUNNING, 0, ())

    def test_rescue_with_nothing_running_reports_nothing(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        enqueue_one(backend)
        enqueue_one(backend, delay=5.0)
        clock.advance(3600.0)
        assert backend.rescue() == RescueReport()

    def test_rescue_of_a_job_on_its_last_attempt_makes_it_dead(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend, max_attempts=1)
        claim(backend, job_id)
        clock.advance(LEASE + 1.0)
        assert backend.rescue() == RescueReport(dead=1)
        job = must_get(backend, job_id)
        assert job.state is S.DEAD
        assert job.finished_at == approx_time(clock.now())
        assert job.lease_owner is None
        assert [e.kind for e in job.errors] == [ErrorKind.LOST]
        assert "worker lost" in job.errors[0].message

    def test_a_job_lost_max_lost_times_is_dead_even_with_attempts_left(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend, max_attempts=10)
        for expected in (RescueReport(requeued=1), RescueReport(dead=1)):
            claim(backend, job_id)
            clock.advance(LEASE + 1.0)
            assert backend.rescue(max_lost=2) == expected
        job = must_get(backend, job_id)
        assert job.state is S.DEAD
        assert job.attempt == 2
        assert job.lost == 2
        assert [(e.attempt, e.kind) for e in job.errors] == [
            (1, ErrorKind.LOST),
            (2, ErrorKind.LOST),
        ]

    def test_rescue_of_a_job_with_a_cancel_request_cancels_it(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        claim(backend, job_id)
        backend.cancel(job_id)
        clock.advance(LEASE + 1.0)
        assert backend.rescue() == RescueReport(cancelled=1)
        job = must_get(backend, job_id)
        assert job.state is S.CANCELLED
        assert job.finished_at == approx_time(clock.now())
        assert len(job.errors) == 1
        assert backend.claim(["default"], "w1", 10, LEASE) == []

    def test_rescue_reports_each_outcome(self, backend: Backend, clock: FakeClock) -> None:
        requeued = enqueue_one(backend, max_attempts=5)
        dead = enqueue_one(backend, max_attempts=1)
        cancelled = enqueue_one(backend, max_attempts=5)
        running = enqueue_one(backend, max_attempts=5)
        for job_id in (requeued, dead, cancelled):
            claim(backend, job_id)
        backend.cancel(cancelled)
        clock.advance(LEASE + 1.0)
        ref = claim(backend, running).ref
        report = backend.rescue()
        assert report == RescueReport(requeued=1, dead=1, cancelled=1)
        assert report.total == 3
        assert must_get(backend, running).state is S.RUNNING
        assert backend.heartbeat("w1", [ref], LEASE).lost == frozenset()
