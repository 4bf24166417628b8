"""Admin: requeue (a re-run from the dead-letter queue), purge and prune."""

from __future__ import annotations

from ...backends.base import Ack, AckKind, Backend, JobFilter, RescueReport, Retention
from ...clock import FakeClock
from .helpers import (
    LEASE,
    Harness,
    S,
    approx_time,
    claim,
    enqueue_one,
    ids_of,
    job_in_state,
    must_get,
    result_text,
)


class AdminConformance(Harness):
    # -- requeue ---------------------------------------------------------------
    def test_requeue_makes_a_dead_job_available_with_attempt_zero_keeping_its_errors(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = job_in_state(backend, clock, S.DEAD)
        clock.advance(10.0)
        assert backend.requeue(JobFilter(ids=frozenset({job_id}))) == 1
        job = must_get(backend, job_id)
        assert job.state is S.AVAILABLE
        assert job.attempt == 0
        assert job.finished_at is None
        assert [e.message for e in job.errors] == ["gave up"]
        again = claim(backend, job_id)
        assert again.attempt == 1
        assert backend.ack([Ack(again.ref, AckKind.COMPLETE, result=result_text(1))]) == [True]
        assert must_get(backend, job_id).state is S.SUCCEEDED

    def test_requeue_of_a_job_cancelled_while_running_drops_the_cancel_request(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        ref = claim(backend, job_id).ref
        backend.cancel(job_id)
        backend.ack([Ack(ref, AckKind.CANCEL)])
        assert backend.requeue(JobFilter()) == 1
        job = must_get(backend, job_id)
        assert (job.state, job.attempt, job.cancel_requested) == (S.AVAILABLE, 0, False)
        again = claim(backend, job_id)
        assert backend.heartbeat("w1", [again.ref], LEASE).cancel_requested == frozenset()

    def test_a_requeued_job_gets_a_fresh_lost_budget(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend, max_attempts=10)
        claim(backend, job_id)
        clock.advance(LEASE + 1.0)
        assert backend.rescue(max_lost=1) == RescueReport(dead=1)
        backend.requeue(JobFilter())
        assert must_get(backend, job_id).lost == 0
        claim(backend, job_id)
        clock.advance(LEASE + 1.0)
        assert backend.rescue(max_lost=2) == RescueReport(requeued=1)

    def test_requeue_leaves_waiting_running_and_succeeded_jobs_alone(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        scheduled = job_in_state(backend, clock, S.SCHEDULED)
        succeeded = job_in_state(backend, clock, S.SUCCEEDED)
        running = job_in_state(backend, clock, S.RUNNING)
        available = job_in_state(backend, clock, S.AVAILABLE)
        before = {i: must_get(backend, i) for i in (scheduled, succeeded, running, available)}
        assert backend.requeue(JobFilter()) == 0
        for job_id, job in before.items():
            after = must_get(backend, job_id)
            assert (after.state, after.attempt, after.run_at) == (
                job.state,
                job.attempt,
                approx_time(job.run_at),
            )

    def test_requeue_touches_only_jobs_matching_the_filter(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        a = job_in_state(backend, clock, S.DEAD, queue="a")
        b = job_in_state(backend, clock, S.DEAD, queue="b")
        c = job_in_state(backend, clock, S.CANCELLED, queue="a")
        assert backend.requeue(JobFilter(queues=frozenset({"a"}), states=frozenset({S.DEAD}))) == 1
        assert [must_get(backend, i).state for i in (a, b, c)] == [
            S.AVAILABLE,
            S.DEAD,
            S.CANCELLED,
        ]
        assert backend.requeue(JobFilter()) == 2

    # -- purge -----------------------------------------------------------------
    def test_purge_deletes_only_finished_jobs(self, backend: Backend, clock: FakeClock) -> None:
        gone = [job_in_state(backend, clock, s) for s in (S.SUCCEEDED, S.DEAD, S.CANCELLED)]
        keep = [job_in_state(backend, clock, s) for s in (S.SCHEDULED, S.RUNNING, S.AVAILABLE)]
        assert backend.purge(JobFilter()) == 3
        assert all(backend.get(i) is None for i in gone)
        assert sorted(ids_of(backend.list_jobs(JobFilter()))) == sorted(keep)

    def test_purge_deletes_only_jobs_matching_the_filter(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        old_dead = job_in_state(backend, clock, S.DEAD, queue="a")
        clock.advance(100.0)
        new_dead = job_in_state(backend, clock, S.DEAD, queue="a")
        other_queue = job_in_state(backend, clock, S.DEAD, queue="b")
        succeeded = job_in_state(backend, clock, S.SUCCEEDED, queue="a")
        purged = backend.purge(
            JobFilter(
                states=frozenset({S.DEAD}),
                queues=frozenset({"a"}),
                finished_before=clock.now() - 50.0,
            )
        )
        assert purged == 1
        assert backend.get(old_dead) is None
        assert all(backend.get(i) is not None for i in (new_dead, other_queue, succeeded))

    # -- prune -----------------------------------------------------------------
    def test_prune_deletes_finished_jobs_older_than_their_states_retention(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        succeeded = job_in_state(backend, clock, S.SUCCEEDED)
        cancelled = job_in_state(backend, clock, S.CANCELLED)
        dead = job_in_state(backend, clock, S.DEAD)
        retention = Retention(succeeded=100.0, cancelled=200.0, dead=None)
        clock.advance(50.0)
        assert backend.prune(retention) == 0
        clock.advance(100.0)
        assert backend.prune(retention) == 1
        assert backend.get(succeeded) is None
        assert backend.get(cancelled) is not None
        clock.advance(100.0)
        assert backend.prune(retention) == 1
        assert backend.get(cancelled) is None
        clock.advance(365 * 86_400.0)
        assert backend.prune(retention) == 0
        assert must_get(backend, dead).state is S.DEAD

    def test_prune_never_deletes_waiting_or_running_jobs(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        keep = [job_in_state(backend, clock, s) for s in (S.SCHEDULED, S.RUNNING, S.AVAILABLE)]
        clock.advance(30 * 86_400.0)
        assert backend.prune(Retention(succeeded=0.0, cancelled=0.0, dead=0.0)) == 0
        assert sorted(ids_of(backend.list_jobs(JobFilter()))) == sorted(keep)

    def test_prune_deletes_at_most_limit_jobs_per_call(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        for _ in range(5):
            job_in_state(backend, clock, S.SUCCEEDED)
        clock.advance(10.0)
        retention = Retention(succeeded=1.0)
        assert [backend.prune(retention, limit=2) for _ in range(4)] == [2, 2, 1, 0]
        assert backend.list_jobs(JobFilter()) == []
