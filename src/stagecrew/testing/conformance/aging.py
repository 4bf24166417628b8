"""The starvation guard: a waiting job's priority improves one step per aging interval waited."""

from __future__ import annotations

import math

import pytest

from ...backends.base import Backend
from ...clock import FakeClock
from .helpers import LEASE, Harness, claim, enqueue_one, must_get

EVERY = 60.0


class AgingConformance(Harness):
    def test_a_waiting_job_gains_one_priority_step_per_interval_waited(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend, priority=5)
        clock.advance(EVERY * 2 + 1)
        assert backend.age_priorities(EVERY, floor=0) == 1
        job = must_get(backend, job_id)
        assert job.priority == 3
        assert job.original_priority == 5
        assert job.enqueued_priority == 5

    def test_aging_stops_at_the_floor(self, backend: Backend, clock: FakeClock) -> None:
        job_id = enqueue_one(backend, priority=5)
        clock.advance(EVERY * 100)
        assert backend.age_priorities(EVERY, floor=1) == 1
        assert must_get(backend, job_id).priority == 1
        clock.advance(EVERY * 100)
        assert backend.age_priorities(EVERY, floor=1) == 0
        assert must_get(backend, job_id).priority == 1

    def test_a_starving_job_overtakes_a_stream_of_better_priority_jobs(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        starving = enqueue_one(backend, priority=3)
        claimed = []
        for _ in range(5):
            clock.advance(EVERY)
            enqueue_one(backend, priority=0)
            backend.age_priorities(EVERY, floor=0)
            claimed.append(claim(backend).id)
        assert starving in claimed, "the priority-3 job starved behind priority-0 jobs"
        assert claimed.index(starving) == 2  # after three intervals it is at priority 0

    def test_a_job_that_did_not_wait_an_interval_keeps_its_priority(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend, priority=5)
        clock.advance(EVERY - 1)
        assert backend.age_priorities(EVERY, floor=0) == 0
        job = must_get(backend, job_id)
        assert job.priority == 5
        assert job.original_priority is None

    def test_a_delayed_job_ages_from_its_run_at(self, backend: Backend, clock: FakeClock) -> None:
        job_id = enqueue_one(backend, priority=5, delay=EVERY * 10)
        clock.advance(EVERY * 10 + EVERY / 2)
        assert backend.age_priorities(EVERY, floor=0) == 0
        clock.advance(EVERY)
        assert backend.age_priorities(EVERY, floor=0) == 1
        assert must_get(backend, job_id).priority == 4

    def test_running_and_finished_jobs_are_not_aged(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend, priority=5)
        claim(backend, job_id)
        clock.advance(EVERY * 3)
        assert backend.age_priorities(EVERY, floor=0) == 0
        assert must_get(backend, job_id).priority == 5

    def test_aging_is_never_undone_and_counts_from_the_enqueued_priority(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend, priority=5)
        clock.advance(EVERY * 2)
        backend.age_priorities(EVERY, floor=0)
        assert must_get(backend, job_id).priority == 3
        clock.advance(EVERY)
        assert backend.age_priorities(EVERY, floor=0) == 1
        job = must_get(backend, job_id)
        assert (job.priority, job.original_priority) == (2, 5)

    def test_aging_keeps_fifo_among_jobs_of_one_priority(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        old = enqueue_one(backend, priority=2)
        clock.advance(EVERY * 2)
        fresh = enqueue_one(backend, priority=0)
        backend.age_priorities(EVERY, floor=0)
        assert [claim(backend).id for _ in range(2)] == [old, fresh]

    def test_a_pass_ages_at_most_limit_jobs(self, backend: Backend, clock: FakeClock) -> None:
        ids = [enqueue_one(backend, priority=4) for _ in range(5)]
        clock.advance(EVERY * 2)
        assert backend.age_priorities(EVERY, floor=0, limit=3) == 3
        assert backend.age_priorities(EVERY, floor=0, limit=3) == 2
        assert {must_get(backend, i).priority for i in ids} == {2}
        assert len(backend.claim(["default"], "w1", 10, LEASE)) == 5

    @pytest.mark.parametrize(
        ("every", "floor", "limit"),
        [
            (0.0, 0, 10),
            (-1.0, 0, 10),
            (math.nan, 0, 10),
            (math.inf, 0, 10),
            (1.0, 1.5, 10),
            (1.0, True, 10),
            (1.0, 0, 0),
        ],
        ids=["zero", "negative", "nan", "inf", "float-floor", "bool-floor", "no-limit"],
    )
    def test_bad_aging_arguments_are_refused_before_anything_changes(
        self, backend: Backend, clock: FakeClock, every: float, floor: int, limit: int
    ) -> None:
        job_id = enqueue_one(backend, priority=5)
        clock.advance(3600.0)
        with pytest.raises((ValueError, TypeError)):
            backend.age_priorities(every, floor=floor, limit=limit)
        assert must_get(backend, job_id).priority == 5
