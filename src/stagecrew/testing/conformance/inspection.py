"""Inspection: list_jobs, stats and next_run_at."""

from __future__ import annotations

from typing import Any

from ...backends.base import Backend, JobFilter
from ...clock import FakeClock
from .helpers import (
    Harness,
    S,
    approx_time,
    enqueue_one,
    ids_of,
    job_in_state,
    new_job,
    stats_by_queue,
)


class InspectionConformance(Harness):
    # -- list_jobs -------------------------------------------------------------
    def test_list_jobs_returns_every_job_newest_first(self, backend: Backend) -> None:
        ids = [e.id for e in backend.enqueue([new_job() for _ in range(4)])]
        assert ids_of(backend.list_jobs(JobFilter())) == ids[::-1]

    def test_list_jobs_filters_by_state_queue_task_and_id(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        a_dead = job_in_state(backend, clock, S.DEAD, queue="a", task="x")
        a_avail = job_in_state(backend, clock, S.AVAILABLE, queue="a", task="y")
        b_avail = job_in_state(backend, clock, S.AVAILABLE, queue="b", task="x")
        b_sched = job_in_state(backend, clock, S.SCHEDULED, queue="b", task="y")

        def listed(**fields: Any) -> list[int]:
            return ids_of(backend.list_jobs(JobFilter(**fields)))

        assert listed(states=frozenset({S.AVAILABLE})) == [b_avail, a_avail]
        assert listed(states=frozenset({S.DEAD, S.SCHEDULED})) == [b_sched, a_dead]
        assert listed(queues=frozenset({"a"})) == [a_avail, a_dead]
        assert listed(tasks=frozenset({"x"})) == [b_avail, a_dead]
        assert listed(ids=frozenset({a_dead, b_sched, 999_999})) == [b_sched, a_dead]
        assert listed(queues=frozenset({"b"}), tasks=frozenset({"y"})) == [b_sched]
        assert listed(queues=frozenset({"c"})) == []

    def test_list_jobs_filters_by_finished_before(self, backend: Backend, clock: FakeClock) -> None:
        early = job_in_state(backend, clock, S.SUCCEEDED)
        clock.advance(100.0)
        late = job_in_state(backend, clock, S.DEAD)
        job_in_state(backend, clock, S.AVAILABLE)
        assert ids_of(backend.list_jobs(JobFilter(finished_before=clock.now() - 50.0))) == [early]
        assert ids_of(backend.list_jobs(JobFilter(finished_before=clock.now() + 1.0))) == [
            late,
            early,
        ]

    def test_list_jobs_pages_with_limit_and_before_id(self, backend: Backend) -> None:
        ids = [e.id for e in backend.enqueue([new_job() for _ in range(5)])]
        newest_first = ids[::-1]
        pages: list[list[int]] = []
        before: int | None = None
        while page := ids_of(backend.list_jobs(JobFilter(limit=2, before_id=before))):
            pages.append(page)
            before = page[-1]
        assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:5]]
        assert ids_of(backend.list_jobs(JobFilter(before_id=ids[2]))) == [ids[1], ids[0]]

    def test_list_jobs_applies_the_limit_after_the_filters(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        a1 = enqueue_one(backend, queue="a")
        enqueue_one(backend, queue="b")
        a2 = enqueue_one(backend, queue="a")
        enqueue_one(backend, queue="b")
        assert ids_of(backend.list_jobs(JobFilter(queues=frozenset({"a"}), limit=5))) == [a2, a1]
        assert ids_of(backend.list_jobs(JobFilter(queues=frozenset({"a"}), limit=1))) == [a2]

    # -- stats -----------------------------------------------------------------
    def test_stats_of_an_empty_store_is_empty(self, backend: Backend) -> None:
        assert all(sum(s.counts.values()) == 0 for s in backend.stats())

    def test_stats_counts_jobs_per_queue_and_state(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        for state in (S.RUNNING, S.SUCCEEDED, S.AVAILABLE, S.AVAILABLE, S.SCHEDULED):
            job_in_state(backend, clock, state, queue="a")
        for state in (S.DEAD, S.CANCELLED):
            job_in_state(backend, clock, state, queue="b")
        stats = stats_by_queue(backend)
        assert {q for q, s in stats.items() if sum(s.counts.values())} == {"a", "b"}
        expected = {
            "a": {S.AVAILABLE: 2, S.SCHEDULED: 1, S.RUNNING: 1, S.SUCCEEDED: 1},
            "b": {S.DEAD: 1, S.CANCELLED: 1},
        }
        for queue, counts in expected.items():
            assert {state: stats[queue].count(state) for state in S} == {
                state: counts.get(state, 0) for state in S
            }

    def test_stats_oldest_available_age_is_measured_by_the_store_clock(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        enqueue_one(backend, queue="a")
        clock.advance(10.0)
        enqueue_one(backend, queue="a")
        enqueue_one(backend, queue="b", delay=30.0)
        clock.advance(5.0)
        stats = stats_by_queue(backend)
        assert stats["a"].oldest_available_age == approx_time(15.0)
        assert stats["b"].oldest_available_age is None
        clock.advance(45.0)  # "b"'s job has been due for 20 seconds
        stats = stats_by_queue(backend)
        assert stats["a"].oldest_available_age == approx_time(60.0)
        assert stats["b"].oldest_available_age == approx_time(20.0)

    def test_stats_oldest_available_age_ignores_running_and_finished_jobs(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_in_state(backend, clock, S.RUNNING, queue="a")
        job_in_state(backend, clock, S.SUCCEEDED, queue="a")
        clock.advance(100.0)
        assert stats_by_queue(backend)["a"].oldest_available_age is None
        enqueue_one(backend, queue="a")
        clock.advance(2.0)
        assert stats_by_queue(backend)["a"].oldest_available_age == approx_time(2.0)

    # -- next_run_at -----------------------------------------------------------
    def test_next_run_at_is_none_when_nothing_waits(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        assert backend.next_run_at() is None
        job_in_state(backend, clock, S.RUNNING)
        job_in_state(backend, clock, S.SUCCEEDED)
        job_in_state(backend, clock, S.CANCELLED)
        assert backend.next_run_at() is None

    def test_next_run_at_is_the_earliest_run_at_of_a_waiting_job(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        now = clock.now()
        enqueue_one(backend, queue="a", delay=300.0)
        enqueue_one(backend, queue="b", delay=60.0)
        enqueue_one(backend, queue="c", delay=120.0)
        assert backend.next_run_at() == approx_time(now + 60.0)
        assert backend.next_run_at(["a", "c"]) == approx_time(now + 120.0)
        assert backend.next_run_at(["d"]) is None
        enqueue_one(backend, queue="a")
        assert backend.next_run_at(["a"]) == approx_time(now)
