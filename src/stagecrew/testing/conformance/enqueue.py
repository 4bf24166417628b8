"""Enqueue: ids, stored fields, due times, idempotency keys, all-or-nothing batches."""

from __future__ import annotations

import math
from typing import Any, cast

import pytest

from ...backends.base import Backend, JobFilter
from ...clock import FakeClock
from ...job import NewJob
from .helpers import Harness, S, approx_time, enqueue_one, ids_of, job_in_state, must_get, new_job


class _PoisonError(Exception):
    pass


class _PoisonJob:
    """Stands in for a `NewJob` and fails as soon as the engine reads any field."""

    def __getattr__(self, name: str) -> Any:
        raise _PoisonError(f"poisoned field {name!r}")


class EnqueueConformance(Harness):
    def test_enqueue_returns_one_created_entry_per_job_with_increasing_ids(
        self, backend: Backend
    ) -> None:
        entries = backend.enqueue([new_job("a"), new_job("b"), new_job("c")])
        assert len(entries) == 3
        assert all(e.created for e in entries)
        ids = [e.id for e in entries]
        assert ids == sorted(set(ids))
        assert [must_get(backend, i).task for i in ids] == ["a", "b", "c"]
        [later] = backend.enqueue([new_job("d")])
        assert later.id > ids[-1]

    def test_enqueue_of_an_empty_batch_writes_nothing(self, backend: Backend) -> None:
        assert backend.enqueue([]) == []
        assert backend.list_jobs(JobFilter()) == []

    def test_enqueued_job_is_stored_available_with_every_field(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(
            backend,
            task="mail.send",
            args=[1, "two", [3.5, None]],
            kwargs={"to": "a@example.com", "flag": True},
            queue="email",
            priority=-5,
            max_attempts=7,
            key="mail-1",
        )
        job = must_get(backend, job_id)
        assert job.id == job_id
        assert job.task == "mail.send"
        assert job.queue == "email"
        assert job.state is S.AVAILABLE
        assert job.args == [1, "two", [3.5, None]]
        assert job.kwargs == {"to": "a@example.com", "flag": True}
        assert job.priority == -5
        assert job.max_attempts == 7
        assert job.idempotency_key == "mail-1"
        assert job.attempt == 0
        assert job.claims == 0
        assert job.enqueued_at == approx_time(clock.now())
        assert job.run_at == approx_time(clock.now())
        assert job.started_at is None
        assert job.finished_at is None
        assert job.lease_owner is None
        assert job.lease_expires_at is None
        assert job.cancel_requested is False
        assert job.lost == 0
        assert job.result is None
        assert job.errors == ()

    def test_enqueue_with_a_delay_schedules_the_job_by_the_store_clock(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job = must_get(backend, enqueue_one(backend, delay=60.0))
        assert job.state is S.SCHEDULED
        assert job.run_at == approx_time(clock.now() + 60.0)

    def test_enqueue_with_run_at_in_the_future_schedules_the_job(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        when = clock.now() + 3600.0
        job = must_get(backend, enqueue_one(backend, run_at=when))
        assert job.state is S.SCHEDULED
        assert job.run_at == approx_time(when)

    def test_enqueue_with_run_at_in_the_past_makes_the_job_available_keeping_run_at(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        when = clock.now() - 3600.0
        job = must_get(backend, enqueue_one(backend, run_at=when))
        assert job.state is S.AVAILABLE
        assert job.run_at == approx_time(when)

    def test_idempotency_key_of_a_stored_job_returns_its_id_without_inserting(
        self, backend: Backend
    ) -> None:
        [first] = backend.enqueue([new_job("a", key="k")])
        [again] = backend.enqueue([new_job("b", key="k")])
        assert first.created is True
        assert again.id == first.id
        assert again.created is False
        assert ids_of(backend.list_jobs(JobFilter())) == [first.id]
        assert must_get(backend, first.id).task == "a"

    def test_duplicate_idempotency_key_within_one_batch_is_inserted_once(
        self, backend: Backend
    ) -> None:
        entries = backend.enqueue(
            [new_job("a", key="k"), new_job("b"), new_job("c", key="k"), new_job("d", key="j")]
        )
        assert [e.created for e in entries] == [True, True, False, True]
        assert entries[2].id == entries[0].id
        assert len({e.id for e in entries}) == 3
        assert len(backend.list_jobs(JobFilter())) == 3

    def test_idempotency_key_dedupes_against_finished_jobs_too(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = job_in_state(backend, clock, S.SUCCEEDED, key="k")
        [again] = backend.enqueue([new_job(key="k")])
        assert (again.id, again.created) == (job_id, False)

    def test_idempotency_key_is_free_again_once_its_job_is_purged(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = job_in_state(backend, clock, S.SUCCEEDED, key="k")
        assert backend.purge(JobFilter(ids=frozenset({job_id}))) == 1
        [again] = backend.enqueue([new_job(key="k")])
        assert again.created is True
        assert again.id != job_id

    def test_batch_that_fails_part_way_writes_nothing(self, backend: Backend) -> None:
        batch = [new_job("a", key="k1"), new_job("b"), cast(NewJob, _PoisonJob())]
        with pytest.raises(Exception) as raised:  # whatever the engine raises, nothing is written
            backend.enqueue(batch)
        assert not isinstance(raised.value, AssertionError)
        assert backend.list_jobs(JobFilter()) == []
        [retry] = backend.enqueue([new_job("a", key="k1")])
        assert retry.created is True

    @pytest.mark.parametrize(
        "times",
        [
            pytest.param({"run_at": math.nan}, id="run_at-nan"),
            pytest.param({"run_at": math.inf}, id="run_at-inf"),
            pytest.param({"run_at": -math.inf}, id="run_at-minus-inf"),
            pytest.param({"delay": math.nan}, id="delay-nan"),
            pytest.param({"delay": math.inf}, id="delay-inf"),
            pytest.param({"delay": -1.0}, id="delay-negative"),
        ],
    )
    def test_enqueue_refuses_a_job_whose_time_is_not_finite_and_writes_nothing(
        self, backend: Backend, times: dict[str, Any]
    ) -> None:
        """Such a job was never due (PostgreSQL), due at once, or half written (Redis)."""
        with pytest.raises(ValueError, match="finite"):
            backend.enqueue([new_job("a", key="good"), new_job("b", key="bad", **times)])
        with pytest.raises(ValueError, match="finite"):
            backend.enqueue([new_job("c", key="alone", **times)])
        assert backend.list_jobs(JobFilter()) == []
        assert backend.next_run_at() is None
        assert sum(sum(s.counts.values()) for s in backend.stats()) == 0
        # no idempotency entry was left behind: every key enqueues a new job now
        entries = backend.enqueue([new_job(key=key) for key in ("good", "bad", "alone")])
        assert [e.created for e in entries] == [True, True, True]
        assert len(backend.list_jobs(JobFilter())) == 3
