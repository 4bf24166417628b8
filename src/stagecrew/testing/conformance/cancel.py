"""Cancel: a waiting job at once, a running one by request, a finished one never."""

from __future__ import annotations

from typing import cast

import pytest

from ...backends.base import Backend
from ...clock import FakeClock
from ...job import JobState
from .helpers import LEASE, Harness, S, approx_time, claim, enqueue_one, job_in_state, must_get


class CancelConformance(Harness):
    @pytest.mark.parametrize("state", [S.AVAILABLE, S.SCHEDULED])
    def test_cancel_of_a_waiting_job_cancels_it_now_and_it_is_never_claimed(
        self, backend: Backend, clock: FakeClock, state: JobState
    ) -> None:
        job_id = job_in_state(backend, clock, state)
        clock.advance(5.0)
        job = backend.cancel(job_id)
        assert job is not None
        assert job.state is S.CANCELLED
        assert job.finished_at == approx_time(clock.now())
        assert must_get(backend, job_id).state is S.CANCELLED
        clock.advance(7200.0)
        assert backend.claim(["default"], "w1", 10, LEASE) == []
        assert backend.next_run_at() is None

    def test_cancel_of_a_running_job_requests_cancellation_and_heartbeat_reports_it(
        self, backend: Backend
    ) -> None:
        job_id = enqueue_one(backend)
        ref = claim(backend, job_id).ref
        job = backend.cancel(job_id)
        assert job is not None
        assert job.state is S.RUNNING
        assert job.cancel_requested is True
        assert job.finished_at is None
        assert must_get(backend, job_id).cancel_requested is True
        assert backend.heartbeat("w1", [ref], LEASE).cancel_requested == {job_id}

    def test_cancelling_a_running_job_twice_keeps_one_request(self, backend: Backend) -> None:
        job_id = enqueue_one(backend)
        claim(backend, job_id)
        backend.cancel(job_id)
        job = backend.cancel(job_id)
        assert job is not None
        assert (job.state, job.cancel_requested) == (S.RUNNING, True)

    @pytest.mark.parametrize("state", [S.SUCCEEDED, S.DEAD, S.CANCELLED])
    def test_cancel_of_a_finished_job_leaves_it_as_it_is(
        self, backend: Backend, clock: FakeClock, state: JobState
    ) -> None:
        job_id = job_in_state(backend, clock, state)
        before = must_get(backend, job_id)
        clock.advance(5.0)
        job = backend.cancel(job_id)
        assert job is not None
        assert job.state is state
        assert job.finished_at == approx_time(cast(float, before.finished_at))
        after = must_get(backend, job_id)
        assert after.state is state
        assert after.finished_at == approx_time(cast(float, before.finished_at))

    def test_cancel_and_get_of_an_unknown_job_return_none(self, backend: Backend) -> None:
        assert backend.cancel(999_999) is None
        assert backend.get(999_999) is None
