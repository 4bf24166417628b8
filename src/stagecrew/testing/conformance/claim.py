"""Claim: which due jobs a claim takes, in what order, and never twice at once."""

from __future__ import annotations

import threading

from ...backends.base import Backend
from ...clock import FakeClock
from ...job import JobRef
from ...serialization import decode
from .helpers import LEASE, Harness, S, approx_time, claim, enqueue_one, must_get, new_job


class ClaimConformance(Harness):
    def test_claim_takes_a_due_job_as_running_with_attempt_one_and_a_lease(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend, task="t", args=[1], queue="q", priority=3, max_attempts=4)
        clock.advance(5.0)
        [claimed] = backend.claim(["q"], "worker-1", 10, LEASE)
        now = clock.now()
        assert claimed.id == job_id
        assert claimed.task == "t"
        assert claimed.queue == "q"
        assert decode(claimed.payload) == {"args": [1], "kwargs": {}}
        assert claimed.attempt == 1
        assert claimed.max_attempts == 4
        assert claimed.priority == 3
        assert claimed.enqueued_at == approx_time(now - 5.0)
        assert claimed.run_at == approx_time(now - 5.0)
        assert claimed.started_at == approx_time(now)
        assert claimed.lease_expires_at == approx_time(now + LEASE)
        assert claimed.token == 1
        assert claimed.ref == JobRef(job_id, 1)
        job = must_get(backend, job_id)
        assert job.state is S.RUNNING
        assert job.attempt == 1
        assert job.claims == 1
        assert job.lease_owner == "worker-1"
        assert job.lease_expires_at == approx_time(now + LEASE)
        assert job.started_at == approx_time(now)

    def test_claim_from_an_empty_store_returns_nothing(self, backend: Backend) -> None:
        assert backend.claim(["default"], "w1", 10, LEASE) == []

    def test_delayed_job_is_not_claimed_before_its_run_at(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend, delay=60.0)
        assert backend.claim(["default"], "w1", 10, LEASE) == []
        clock.advance(59.5)
        assert backend.claim(["default"], "w1", 10, LEASE) == []
        assert must_get(backend, job_id).state is S.SCHEDULED

    def test_delayed_job_is_claimed_once_the_clock_reaches_its_run_at(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend, delay=60.0)
        clock.advance(60.0)
        claimed = claim(backend, job_id)
        assert claimed.attempt == 1
        assert must_get(backend, job_id).state is S.RUNNING

    def test_claim_takes_jobs_in_priority_then_run_at_then_id_order(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        now = clock.now()
        low = enqueue_one(backend, priority=1, run_at=now - 100.0)
        late_a = enqueue_one(backend, priority=0, run_at=now - 10.0)
        early = enqueue_one(backend, priority=0, run_at=now - 20.0)
        late_b = enqueue_one(backend, priority=0, run_at=now - 10.0)
        urgent = enqueue_one(backend, priority=-1, run_at=now)
        order = [claim(backend).id for _ in range(5)]
        assert order == [urgent, early, late_a, late_b, low]

    def test_a_scheduled_job_that_became_due_is_ordered_by_its_run_at(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        delayed = enqueue_one(backend, delay=10.0)
        clock.advance(20.0)
        fresh = enqueue_one(backend)
        assert [claim(backend).id, claim(backend).id] == [delayed, fresh]

    def test_claim_takes_at_most_limit_jobs(self, backend: Backend) -> None:
        backend.enqueue([new_job() for _ in range(5)])
        sizes = [len(backend.claim(["default"], "w1", 2, LEASE)) for _ in range(4)]
        assert sizes == [2, 2, 1, 0]

    def test_claim_takes_only_from_the_requested_queues(self, backend: Backend) -> None:
        a = enqueue_one(backend, queue="a")
        b = enqueue_one(backend, queue="b")
        c = enqueue_one(backend, queue="c")
        claimed = backend.claim(["a", "b"], "w1", 10, LEASE)
        assert sorted(j.id for j in claimed) == [a, b]
        assert must_get(backend, c).state is S.AVAILABLE
        assert backend.claim(["a", "b"], "w1", 10, LEASE) == []

    def test_a_claimed_job_is_not_claimed_again_while_its_lease_holds(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        claim(backend, job_id, worker="w1")
        clock.advance(LEASE - 1.0)
        assert backend.claim(["default"], "w2", 10, LEASE) == []
        assert backend.rescue().total == 0
        assert must_get(backend, job_id).lease_owner == "w1"

    def test_concurrent_claims_never_take_the_same_job(self, backend: Backend) -> None:
        total = 60
        backend.enqueue([new_job() for _ in range(total)])
        claimed: list[int] = []
        failures: list[BaseException] = []
        lock = threading.Lock()

        def drain(worker: str) -> None:
            try:
                while batch := backend.claim(["default"], worker, 3, LEASE):
                    with lock:
                        claimed.extend(j.id for j in batch)
            except BaseException as exc:  # reported below, on the test's thread
                failures.append(exc)

        threads = [threading.Thread(target=drain, args=(f"w{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert not failures, failures
        assert len(claimed) == total
        assert len(set(claimed)) == total
