"""Snooze: an attempt put off for later, its attempt given back, its claim fenced as any outcome."""

from __future__ import annotations

from ...backends.base import Ack, Backend, JobFilter, RescueReport
from ...clock import FakeClock
from .helpers import (
    LEASE,
    Harness,
    S,
    approx_time,
    attempt_error,
    claim,
    enqueue_one,
    must_get,
    result_text,
)


class SnoozeConformance(Harness):
    def test_a_snooze_schedules_the_job_later_giving_its_attempt_back_and_counting_one_snooze(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend, max_attempts=3)
        first = claim(backend, job_id)
        assert first.snoozes == 0
        assert backend.ack([Ack.snooze(first.ref, 60.0)]) == [True]
        job = must_get(backend, job_id)
        assert (job.state, job.attempt, job.snoozes, job.claims) == (S.SCHEDULED, 0, 1, 1)
        assert job.run_at == approx_time(clock.now() + 60.0)
        assert (job.lease_owner, job.lease_expires_at, job.finished_at) == (None, None, None)
        assert job.errors == ()
        clock.advance(59.5)
        assert backend.claim(["default"], "w2", 10, LEASE) == []
        clock.advance(0.5)
        again = claim(backend, job_id, worker="w2")
        assert (again.attempt, again.token, again.snoozes) == (1, 2, 1)

    def test_snoozes_never_bring_a_job_closer_to_its_max_attempts(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend, max_attempts=1)
        for snoozed in range(5):
            claimed = claim(backend, job_id)
            assert (claimed.attempt, claimed.snoozes) == (1, snoozed)
            assert backend.ack([Ack.snooze(claimed.ref, 1.0)]) == [True]
            clock.advance(1.0)
        last = claim(backend, job_id)
        assert backend.ack([Ack.complete(last.ref, result_text("done"))]) == [True]
        job = must_get(backend, job_id)
        assert (job.state, job.attempt, job.snoozes, job.claims) == (S.SUCCEEDED, 1, 5, 6)

    def test_a_snooze_of_zero_seconds_makes_the_job_due_at_once(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        assert backend.ack([Ack.snooze(claim(backend, job_id).ref, 0.0)]) == [True]
        assert claim(backend, job_id, worker="w2").token == 2

    def test_a_stale_snooze_is_refused_and_changes_nothing(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend, max_attempts=3)
        stale = claim(backend, job_id, worker="w1")
        clock.advance(LEASE + 1.0)
        assert backend.rescue() == RescueReport(requeued=1)
        fresh = claim(backend, job_id, worker="w2")
        assert backend.ack([Ack.snooze(stale.ref, 5.0)]) == [False]
        job = must_get(backend, job_id)
        assert (job.state, job.lease_owner, job.attempt, job.snoozes) == (S.RUNNING, "w2", 2, 0)
        assert backend.ack([Ack.snooze(fresh.ref, 5.0)]) == [True]
        assert backend.ack([Ack.snooze(fresh.ref, 5.0)]) == [False]  # its claim is over
        assert must_get(backend, job_id).snoozes == 1

    def test_a_snooze_of_a_job_whose_cancel_is_pending_cancels_it(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        ref = claim(backend, job_id).ref
        backend.cancel(job_id)
        assert backend.ack([Ack.snooze(ref, 30.0)]) == [True]
        job = must_get(backend, job_id)
        assert job.state is S.CANCELLED
        assert job.finished_at == approx_time(clock.now())
        clock.advance(60.0)
        assert backend.claim(["default"], "w2", 10, LEASE) == []

    def test_a_snooze_in_a_batch_applies_alongside_the_other_outcomes(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        first, second = enqueue_one(backend), enqueue_one(backend)
        claimed = backend.claim(["default"], "w1", 2, LEASE)
        by_id = {c.id: c for c in claimed}
        acks = [Ack.complete(by_id[first].ref), Ack.snooze(by_id[second].ref, 10.0)]
        assert backend.ack(acks) == [True, True]
        assert must_get(backend, first).state is S.SUCCEEDED
        snoozed = must_get(backend, second)
        assert (snoozed.state, snoozed.attempt, snoozed.snoozes) == (S.SCHEDULED, 0, 1)

    def test_a_requeue_from_the_dead_letter_queue_starts_the_snooze_count_again(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend, max_attempts=1)
        assert backend.ack([Ack.snooze(claim(backend, job_id).ref, 0.0)]) == [True]
        claimed = claim(backend, job_id)
        error = attempt_error(claimed, clock.now(), "snoozed too often")
        assert backend.ack([Ack.dead_letter(claimed.ref, error)]) == [True]
        assert must_get(backend, job_id).snoozes == 1
        assert backend.requeue(JobFilter(ids=frozenset({job_id}))) == 1
        job = must_get(backend, job_id)
        assert (job.state, job.attempt, job.snoozes, job.claims) == (S.AVAILABLE, 0, 0, 2)
        assert claim(backend, job_id).snoozes == 0

    def test_list_jobs_shows_each_jobs_snoozes(self, backend: Backend, clock: FakeClock) -> None:
        job_id = enqueue_one(backend)
        assert backend.ack([Ack.snooze(claim(backend, job_id).ref, 5.0)]) == [True]
        [listed] = backend.list_jobs(JobFilter(ids=frozenset({job_id})))
        assert listed.snoozes == 1
