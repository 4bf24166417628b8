"""Ack: each outcome of an attempt, its target state, its error, and the fence."""

from __future__ import annotations

from typing import cast

import pytest

from ...backends.base import ACK_TARGET, Ack, AckKind, Backend
from ...clock import FakeClock
from ...job import ErrorKind, JobRef
from .helpers import (
    LEASE,
    Harness,
    S,
    approx_time,
    attempt_error,
    claim,
    enqueue_one,
    must_get,
    new_job,
    result_text,
)


class AckConformance(Harness):
    def test_ack_complete_stores_the_result_and_finishes_the_job(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        claimed = claim(backend, job_id)
        clock.advance(3.0)
        result = result_text({"sent": 3, "ids": [1, 2]})
        assert backend.ack([Ack(claimed.ref, AckKind.COMPLETE, result=result)]) == [True]
        job = must_get(backend, job_id)
        assert job.state is S.SUCCEEDED
        assert job.result == {"sent": 3, "ids": [1, 2]}
        assert job.finished_at == approx_time(clock.now())
        assert job.attempt == 1
        assert job.lease_owner is None
        assert job.lease_expires_at is None
        assert job.errors == ()

    def test_ack_retry_schedules_the_job_at_the_store_now_plus_its_delay_and_appends_the_error(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        claimed = claim(backend, job_id)
        error = attempt_error(claimed, clock.now(), "boom")
        assert backend.ack([Ack(claimed.ref, AckKind.RETRY, error=error, delay=120.0)]) == [True]
        job = must_get(backend, job_id)
        assert job.state is S.SCHEDULED
        assert job.run_at == approx_time(clock.now() + 120.0)
        assert job.attempt == 1
        assert job.finished_at is None
        assert job.lease_owner is None
        assert [(e.attempt, e.kind, e.type, e.message, e.traceback) for e in job.errors] == [
            (1, ErrorKind.ERROR, "ValueError", "boom", error.traceback)
        ]
        assert job.errors[0].at == approx_time(error.at)

    def test_a_retried_job_is_claimed_again_after_its_delay_with_the_next_attempt(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        first = claim(backend, job_id)
        error = attempt_error(first, clock.now(), "boom")
        backend.ack([Ack(first.ref, AckKind.RETRY, error=error, delay=60.0)])
        clock.advance(59.5)
        assert backend.claim(["default"], "w1", 10, LEASE) == []
        clock.advance(0.5)
        second = claim(backend, job_id)
        assert second.attempt == 2
        assert must_get(backend, job_id).attempt == 2

    def test_ack_dead_letter_makes_the_job_dead_keeping_every_attempts_error_in_order(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend, max_attempts=3)
        for n in (1, 2):
            claimed = claim(backend, job_id)
            ref = claimed.ref
            error = attempt_error(claimed, clock.now(), f"failure {n}")
            backend.ack([Ack(ref, AckKind.RETRY, error=error, delay=1.0)])
            clock.advance(1.0)
        claimed = claim(backend, job_id)
        ref = claimed.ref
        assert claimed.attempt == 3
        last = attempt_error(claimed, clock.now(), "failure 3")
        assert backend.ack([Ack(ref, AckKind.DEAD_LETTER, error=last)]) == [True]
        job = must_get(backend, job_id)
        assert job.state is S.DEAD
        assert job.finished_at == approx_time(clock.now())
        assert job.lease_owner is None
        assert [(e.attempt, e.message) for e in job.errors] == [
            (1, "failure 1"),
            (2, "failure 2"),
            (3, "failure 3"),
        ]

    def test_ack_cancel_makes_the_job_cancelled_and_records_the_reason(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        claimed = claim(backend, job_id)
        ref = claimed.ref
        reason = attempt_error(claimed, clock.now(), "stopped by the task", ErrorKind.CANCELLED)
        assert backend.ack([Ack(ref, AckKind.CANCEL, error=reason)]) == [True]
        job = must_get(backend, job_id)
        assert job.state is S.CANCELLED
        assert job.finished_at == approx_time(clock.now())
        assert [(e.kind, e.message) for e in job.errors] == [
            (ErrorKind.CANCELLED, "stopped by the task")
        ]

    def test_a_cancel_requested_job_stops_at_a_checkpoint_with_ack_cancel(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        claimed = claim(backend, job_id)
        ref = claimed.ref
        backend.cancel(job_id)
        reason = attempt_error(claimed, clock.now(), "cancel requested", ErrorKind.CANCELLED)
        assert backend.ack([Ack(ref, AckKind.CANCEL, error=reason)]) == [True]
        assert must_get(backend, job_id).state is S.CANCELLED

    @pytest.mark.parametrize("kind", [AckKind.RETRY, AckKind.RELEASE])
    def test_a_job_whose_cancel_is_pending_is_cancelled_instead_of_going_back_to_the_queue(
        self, backend: Backend, clock: FakeClock, kind: AckKind
    ) -> None:
        job_id = enqueue_one(backend, max_attempts=5)
        claimed = claim(backend, job_id)
        ref = claimed.ref
        backend.cancel(job_id)
        error = attempt_error(claimed, clock.now(), "boom") if kind is AckKind.RETRY else None
        ack = Ack(ref, kind, error=error, delay=0.0 if error else None)
        assert backend.ack([ack]) == [True]
        job = must_get(backend, job_id)
        assert job.state is S.CANCELLED
        assert job.finished_at == approx_time(clock.now())
        assert backend.claim(["default"], "w2", 10, LEASE) == []

    def test_ack_release_makes_the_job_available_without_counting_the_attempt(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        first = claim(backend, job_id)
        error = attempt_error(first, clock.now(), "boom")
        backend.ack([Ack(first.ref, AckKind.RETRY, error=error, delay=0.0)])
        second = claim(backend, job_id)
        assert second.attempt == 2
        assert backend.ack([Ack(second.ref, AckKind.RELEASE)]) == [True]
        job = must_get(backend, job_id)
        assert job.state is S.AVAILABLE
        assert job.attempt == 1
        assert job.lease_owner is None
        assert job.finished_at is None
        assert [e.message for e in job.errors] == ["boom"]
        again = claim(backend, job_id, worker="w2")
        assert again.attempt == second.attempt

    def test_a_release_with_a_delay_schedules_the_job_counting_neither_an_attempt_nor_a_lost_worker(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend, max_attempts=1)
        claimed = claim(backend, job_id)
        reason = attempt_error(claimed, clock.now(), "no worker here knows this task")
        assert backend.ack([Ack(claimed.ref, AckKind.RELEASE, error=reason, delay=45.0)]) == [True]
        job = must_get(backend, job_id)
        assert job.state is S.SCHEDULED
        assert job.run_at == approx_time(clock.now() + 45.0)
        assert (job.attempt, job.lost, job.lease_owner, job.finished_at) == (0, 0, None, None)
        assert [(e.attempt, e.message) for e in job.errors] == [
            (1, "no worker here knows this task")
        ]
        clock.advance(44.5)
        assert backend.claim(["default"], "w2", 10, LEASE) == []
        clock.advance(0.5)
        again = claim(backend, job_id, worker="w2")
        assert again.attempt == 1  # its one attempt is still there to run
        assert backend.ack([Ack(again.ref, AckKind.COMPLETE, result=result_text(1))]) == [True]
        assert must_get(backend, job_id).state is S.SUCCEEDED

    def test_a_release_with_a_delay_of_a_job_whose_cancel_is_pending_cancels_it(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        ref = claim(backend, job_id).ref
        backend.cancel(job_id)
        assert backend.ack([Ack(ref, AckKind.RELEASE, delay=45.0)]) == [True]
        job = must_get(backend, job_id)
        assert job.state is S.CANCELLED
        assert job.finished_at == approx_time(clock.now())
        clock.advance(60.0)
        assert backend.claim(["default"], "w2", 10, LEASE) == []

    @pytest.mark.parametrize("kind", list(AckKind))
    def test_an_error_given_with_any_outcome_is_appended_to_the_jobs_errors(
        self, backend: Backend, clock: FakeClock, kind: AckKind
    ) -> None:
        job_id = enqueue_one(backend, max_attempts=5)
        claimed = claim(backend, job_id)
        ref = claimed.ref
        error = attempt_error(claimed, clock.now(), f"recorded with {kind}")
        result = result_text("done") if kind is AckKind.COMPLETE else None
        assert backend.ack([Ack(ref, kind, result=result, error=error)]) == [True]
        job = must_get(backend, job_id)
        assert [(e.attempt, e.message, e.traceback) for e in job.errors] == [
            (1, f"recorded with {kind}", error.traceback)
        ]
        assert job.state is ACK_TARGET[kind]

    def test_an_outcome_without_an_error_leaves_the_errors_alone(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend, max_attempts=5)
        first = claim(backend, job_id)
        error = attempt_error(first, clock.now(), "boom")
        backend.ack([Ack(first.ref, AckKind.RETRY, error=error, delay=0.0)])
        for kind in (AckKind.RELEASE, AckKind.RETRY):
            ref = claim(backend, job_id).ref
            assert backend.ack([Ack(ref, kind, delay=None)]) == [True]
        assert [e.message for e in must_get(backend, job_id).errors] == ["boom"]

    def test_stale_ack_after_rescue_and_reclaim_changes_nothing(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        stale = claim(backend, job_id, worker="w1")
        clock.advance(LEASE + 1.0)
        assert backend.rescue().requeued == 1
        fresh = claim(backend, job_id, worker="w2")
        assert fresh.attempt == stale.attempt + 1

        old = result_text("from the stale worker")
        assert backend.ack([Ack(stale.ref, AckKind.COMPLETE, result=old)]) == [False]
        job = must_get(backend, job_id)
        assert (job.state, job.attempt, job.lease_owner) == (S.RUNNING, 2, "w2")
        assert job.result is None

        new = result_text("from the new worker")
        assert backend.ack([Ack(fresh.ref, AckKind.COMPLETE, result=new)]) == [True]
        error = attempt_error(stale, clock.now(), "late failure")
        for kind in AckKind:
            delay = 0.0 if kind in (AckKind.RETRY, AckKind.RELEASE) else None
            result = old if kind is AckKind.COMPLETE else None
            ack = Ack(stale.ref, kind, result=result, error=error, delay=delay)
            assert backend.ack([ack]) == [False]
        job = must_get(backend, job_id)
        assert job.state is S.SUCCEEDED
        assert job.attempt == 2
        assert job.result == "from the new worker"
        assert [e.kind for e in job.errors] == [ErrorKind.LOST]

    def test_ack_for_a_job_that_is_no_longer_running_returns_false(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        claimed = claim(backend, job_id)
        ref = claimed.ref
        assert backend.ack([Ack(ref, AckKind.COMPLETE, result=result_text("first"))]) == [True]
        finished_at = must_get(backend, job_id).finished_at
        clock.advance(5.0)
        assert backend.ack([Ack(ref, AckKind.COMPLETE, result=result_text("second"))]) == [False]
        error = attempt_error(claimed, clock.now(), "late")
        assert backend.ack([Ack(ref, AckKind.DEAD_LETTER, error=error)]) == [False]
        job = must_get(backend, job_id)
        assert job.state is S.SUCCEEDED
        assert job.result == "first"
        assert job.finished_at == approx_time(cast(float, finished_at))
        assert job.errors == ()

    def test_a_batch_naming_one_claim_twice_applies_the_first_outcome_only(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        first_id, second_id, other_id = (enqueue_one(backend) for _ in range(3))
        first, second, other = (claim(backend, i) for i in (first_id, second_id, other_id))
        error = attempt_error(second, clock.now(), "boom")
        applied = backend.ack(
            [
                Ack.complete(first.ref, result_text("kept")),
                Ack.retry(second.ref, error, 60.0),
                Ack.dead_letter(first.ref, attempt_error(first, clock.now(), "late")),
                Ack.complete(other.ref, result_text(3)),
                Ack.complete(second.ref, result_text("too late")),
            ]
        )
        assert applied == [True, True, False, True, False]
        kept = must_get(backend, first_id)
        assert (kept.state, kept.result, kept.errors) == (S.SUCCEEDED, "kept", ())
        retried = must_get(backend, second_id)
        assert (retried.state, retried.result) == (S.SCHEDULED, None)
        assert [e.message for e in retried.errors] == ["boom"]
        assert must_get(backend, other_id).state is S.SUCCEEDED

    def test_ack_for_a_rescued_job_not_yet_claimed_again_returns_false(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        ref = claim(backend, job_id).ref
        clock.advance(LEASE + 1.0)
        backend.rescue()
        assert backend.ack([Ack(ref, AckKind.COMPLETE, result=result_text(1))]) == [False]
        job = must_get(backend, job_id)
        assert job.state is S.AVAILABLE
        assert job.result is None

    def test_ack_for_a_waiting_or_unknown_job_returns_false(self, backend: Backend) -> None:
        job_id = enqueue_one(backend)
        acks = [
            Ack(JobRef(job_id, 0), AckKind.COMPLETE, result=result_text(1)),
            Ack(JobRef(job_id, 1), AckKind.COMPLETE, result=result_text(1)),
            Ack(JobRef(999_999, 1), AckKind.COMPLETE, result=result_text(1)),
        ]
        assert backend.ack(acks) == [False, False, False]
        assert must_get(backend, job_id).state is S.AVAILABLE

    def test_ack_applies_a_mixed_batch_and_reports_each_ack(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        ids = [e.id for e in backend.enqueue([new_job() for _ in range(5)])]
        claimed = {j.id: j for j in backend.claim(["default"], "w1", 5, LEASE)}
        refs = {job_id: j.ref for job_id, j in claimed.items()}
        assert sorted(refs) == ids
        now = clock.now()
        done, retried, wrong_attempt, dead, released = ids
        acks = [
            Ack(refs[done], AckKind.COMPLETE, result=result_text("done")),
            Ack(
                refs[retried],
                AckKind.RETRY,
                error=attempt_error(claimed[retried], now, "again"),
                delay=30.0,
            ),
            Ack(JobRef(wrong_attempt, 7), AckKind.COMPLETE, result=result_text("stale")),
            Ack(refs[dead], AckKind.DEAD_LETTER, error=attempt_error(claimed[dead], now, "bad")),
            Ack(refs[released], AckKind.RELEASE),
        ]
        assert backend.ack(acks) == [True, True, False, True, True]
        assert [must_get(backend, i).state for i in ids] == [
            S.SUCCEEDED,
            S.SCHEDULED,
            S.RUNNING,
            S.DEAD,
            S.AVAILABLE,
        ]

    def test_ack_of_an_empty_batch_returns_an_empty_list(self, backend: Backend) -> None:
        assert backend.ack([]) == []
