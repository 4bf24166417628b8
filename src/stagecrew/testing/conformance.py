"""The backend conformance suite: the definition of a correct stagecrew engine.

Every engine (memory, SQLite, PostgreSQL, Redis, or a third party's) runs all
of it unchanged; an engine is done when it passes. To run it, subclass
`BackendConformance` in a test module and provide a `backend_factory` fixture:
a callable that takes a `FakeClock` and returns a fresh, migrated, empty store
that reads its time from that clock::

    import pytest
    from stagecrew.testing.conformance import BackendConformance, BackendFactory

    @pytest.fixture
    def backend_factory(tmp_path) -> BackendFactory:
        return lambda clock: MyBackend(f"my://{tmp_path}", clock)

    class TestMyBackend(BackendConformance):
        pass

Time only moves through `clock.advance(...)`; nothing here sleeps on the
store's behalf, except the `wait` tests, which measure real wake-ups. An
engine with `capabilities.server_clock` must pass the injected fake time to
its server, so due times and lease expiry follow the fake clock here too.

The suite is grouped into mixins (`EnqueueConformance`, `FetchConformance`,
...) so a module can run one group while an engine is being written.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import pytest

from ..backends.base import (
    ACK_TARGET,
    Ack,
    AckKind,
    Backend,
    HeartbeatReply,
    JobFilter,
    QueueStats,
    RescueReport,
    Retention,
)
from ..clock import FakeClock
from ..job import AttemptError, ClaimedJob, ErrorKind, Job, JobRef, JobState, NewJob
from ..serialization import decode, encode, encode_payload

__all__ = [
    "LEASE",
    "AckConformance",
    "AdminConformance",
    "AsyncConformance",
    "BackendConformance",
    "BackendFactory",
    "CancelConformance",
    "EnqueueConformance",
    "FencingConformance",
    "FetchConformance",
    "InspectionConformance",
    "LeaseConformance",
    "ReleaseWorkerConformance",
    "RescueConformance",
    "WaitConformance",
]

S = JobState

BackendFactory = Callable[[FakeClock], Backend]
"""Builds a fresh, migrated, empty store whose clock is the given `FakeClock`."""

LEASE = 30.0
"""The lease, in seconds, every claim and heartbeat in the suite asks for."""


# -- helpers -------------------------------------------------------------------
def approx_time(t: float) -> Any:
    """Times may pass through a server with microsecond precision."""
    return pytest.approx(t, abs=1e-3)


def new_job(
    task: str = "conformance.noop",
    *,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    queue: str = "default",
    priority: int = 0,
    run_at: float | None = None,
    delay: float = 0.0,
    max_attempts: int = 3,
    key: str | None = None,
) -> NewJob:
    return NewJob(
        task=task,
        payload=encode_payload(list(args), kwargs or {}),
        queue=queue,
        priority=priority,
        run_at=run_at,
        delay=delay,
        max_attempts=max_attempts,
        idempotency_key=key,
    )


def enqueue_one(backend: Backend, **fields: Any) -> int:
    [entry] = backend.enqueue([new_job(**fields)])
    return entry.id


def claim(
    backend: Backend,
    job_id: int | None = None,
    *,
    worker: str = "w1",
    queues: Sequence[str] = ("default",),
    lease: float = LEASE,
) -> ClaimedJob:
    """Claim exactly one job (and check it is `job_id`, when given)."""
    claimed = backend.claim(queues, worker, 1, lease)
    assert len(claimed) == 1, f"expected one job to claim from {list(queues)}, got {claimed}"
    if job_id is not None:
        assert claimed[0].id == job_id
    return claimed[0]


def attempt_error(
    claimed: ClaimedJob, at: float, message: str, kind: ErrorKind = ErrorKind.ERROR
) -> AttemptError:
    """The error an attempt of `claimed` would record (its attempt number, not its token)."""
    return AttemptError(
        attempt=claimed.attempt,
        at=at,
        kind=kind,
        type="ValueError",
        message=message,
        traceback="Traceback (most recent call last):\n  ...\nValueError: " + message,
    )


def result_text(value: Any) -> str:
    return encode(value, what="result").decode()


def must_get(backend: Backend, job_id: int) -> Job:
    job = backend.get(job_id)
    assert job is not None, f"job {job_id} is missing"
    return job


def job_in_state(
    backend: Backend, clock: FakeClock, state: JobState, *, queue: str = "default", **fields: Any
) -> int:
    """A job driven to `state` through the public operations.

    A running, succeeded or dead job is claimed from `queue`, so callers keep
    other due jobs out of that queue until this returns.
    """
    if state is S.SCHEDULED:
        fields.setdefault("delay", 3600.0)
    job_id = enqueue_one(backend, queue=queue, **fields)
    if state in (S.SCHEDULED, S.AVAILABLE):
        return job_id
    if state is S.CANCELLED:
        backend.cancel(job_id)
        return job_id
    claimed = claim(backend, job_id, queues=[queue])
    if state is S.SUCCEEDED:
        assert backend.ack([Ack(claimed.ref, AckKind.COMPLETE, result=result_text("ok"))]) == [True]
    elif state is S.DEAD:
        error = attempt_error(claimed, clock.now(), "gave up")
        assert backend.ack([Ack(claimed.ref, AckKind.DEAD_LETTER, error=error)]) == [True]
    assert must_get(backend, job_id).state is state
    return job_id


def ids_of(jobs: Sequence[Job]) -> list[int]:
    return [j.id for j in jobs]


def stats_by_queue(backend: Backend) -> dict[str, QueueStats]:
    return {s.queue: s for s in backend.stats()}


class _PoisonError(Exception):
    pass


class _PoisonJob:
    """Stands in for a `NewJob` and fails as soon as the engine reads any field."""

    def __getattr__(self, name: str) -> Any:
        raise _PoisonError(f"poisoned field {name!r}")


# -- the suite -----------------------------------------------------------------
class _Harness:
    """Fixtures shared by every group: a fake clock and a fresh store on it."""

    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock()

    @pytest.fixture
    def backend(self, backend_factory: BackendFactory, clock: FakeClock) -> Iterator[Backend]:
        backend = backend_factory(clock)
        try:
            yield backend
        finally:
            backend.close()


class EnqueueConformance(_Harness):
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


class FetchConformance(_Harness):
    def test_fetch_claims_a_due_job_as_running_with_attempt_one_and_a_lease(
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

    def test_fetch_from_an_empty_store_returns_nothing(self, backend: Backend) -> None:
        assert backend.claim(["default"], "w1", 10, LEASE) == []

    def test_delayed_job_is_not_fetched_before_its_run_at(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend, delay=60.0)
        assert backend.claim(["default"], "w1", 10, LEASE) == []
        clock.advance(59.5)
        assert backend.claim(["default"], "w1", 10, LEASE) == []
        assert must_get(backend, job_id).state is S.SCHEDULED

    def test_delayed_job_is_fetched_once_the_clock_reaches_its_run_at(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend, delay=60.0)
        clock.advance(60.0)
        claimed = claim(backend, job_id)
        assert claimed.attempt == 1
        assert must_get(backend, job_id).state is S.RUNNING

    def test_fetch_claims_in_priority_then_run_at_then_id_order(
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

    def test_fetch_claims_at_most_limit_jobs(self, backend: Backend) -> None:
        backend.enqueue([new_job() for _ in range(5)])
        sizes = [len(backend.claim(["default"], "w1", 2, LEASE)) for _ in range(4)]
        assert sizes == [2, 2, 1, 0]

    def test_fetch_claims_only_from_the_requested_queues(self, backend: Backend) -> None:
        a = enqueue_one(backend, queue="a")
        b = enqueue_one(backend, queue="b")
        c = enqueue_one(backend, queue="c")
        claimed = backend.claim(["a", "b"], "w1", 10, LEASE)
        assert sorted(j.id for j in claimed) == [a, b]
        assert must_get(backend, c).state is S.AVAILABLE
        assert backend.claim(["a", "b"], "w1", 10, LEASE) == []

    def test_a_claimed_job_is_not_fetched_again_while_its_lease_holds(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        claim(backend, job_id, worker="w1")
        clock.advance(LEASE - 1.0)
        assert backend.claim(["default"], "w2", 10, LEASE) == []
        assert backend.rescue().total == 0
        assert must_get(backend, job_id).lease_owner == "w1"

    def test_concurrent_fetches_never_claim_the_same_job(self, backend: Backend) -> None:
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


class LeaseConformance(_Harness):
    def test_heartbeat_extends_the_lease_past_its_original_expiry(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        claimed = claim(backend, job_id)
        clock.advance(LEASE - 10.0)
        reply = backend.heartbeat("w1", [claimed.ref], LEASE)
        assert reply == HeartbeatReply(frozenset(), frozenset())
        assert must_get(backend, job_id).lease_expires_at == approx_time(clock.now() + LEASE)
        clock.advance(20.0)  # past the first lease, within the renewed one
        assert backend.rescue().total == 0
        assert backend.claim(["default"], "w2", 10, LEASE) == []
        job = must_get(backend, job_id)
        assert (job.state, job.attempt, job.lease_owner) == (S.RUNNING, 1, "w1")

    def test_heartbeat_with_no_refs_reports_nothing(self, backend: Backend) -> None:
        assert backend.heartbeat("w1", [], LEASE) == HeartbeatReply(frozenset(), frozenset())

    def test_heartbeat_by_another_worker_is_lost_and_does_not_extend_the_lease(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        claimed = claim(backend, job_id, worker="w1")
        expiry = must_get(backend, job_id).lease_expires_at
        clock.advance(10.0)
        reply = backend.heartbeat("w2", [claimed.ref], LEASE)
        assert reply.lost == {job_id}
        assert reply.cancel_requested == frozenset()
        job = must_get(backend, job_id)
        assert job.lease_expires_at == approx_time(cast(float, expiry))
        assert job.lease_owner == "w1"

    def test_heartbeat_for_another_claim_is_lost(self, backend: Backend) -> None:
        job_id = enqueue_one(backend)
        claimed = claim(backend, job_id)
        reply = backend.heartbeat("w1", [JobRef(job_id, claimed.token + 1)], LEASE)
        assert reply.lost == {job_id}

    def test_heartbeat_for_a_rescued_job_is_lost(self, backend: Backend, clock: FakeClock) -> None:
        job_id = enqueue_one(backend)
        claimed = claim(backend, job_id)
        clock.advance(LEASE + 1.0)
        assert backend.rescue().requeued == 1
        assert backend.heartbeat("w1", [claimed.ref], LEASE).lost == {job_id}
        assert must_get(backend, job_id).state is S.AVAILABLE

    def test_heartbeat_of_a_stale_worker_after_takeover_is_lost_and_leaves_the_new_lease(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        old = claim(backend, job_id, worker="w1")
        clock.advance(LEASE + 1.0)
        backend.rescue()
        new = claim(backend, job_id, worker="w2")
        expiry = must_get(backend, job_id).lease_expires_at
        clock.advance(5.0)
        assert backend.heartbeat("w1", [old.ref], LEASE).lost == {job_id}
        assert backend.heartbeat("w1", [new.ref], LEASE).lost == {job_id}
        job = must_get(backend, job_id)
        assert job.lease_owner == "w2"
        assert job.lease_expires_at == approx_time(cast(float, expiry))

    def test_heartbeat_for_a_finished_or_unknown_job_is_lost(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        claimed = claim(backend, job_id)
        backend.ack([Ack(claimed.ref, AckKind.COMPLETE, result=result_text(1))])
        reply = backend.heartbeat("w1", [claimed.ref, JobRef(999_999, 1)], LEASE)
        assert reply.lost == {job_id, 999_999}
        assert must_get(backend, job_id).state is S.SUCCEEDED

    def test_heartbeat_reports_cancel_requested_jobs_and_still_extends_their_lease(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        keep = enqueue_one(backend)
        stop = enqueue_one(backend)
        refs = [claim(backend, keep).ref, claim(backend, stop).ref]
        backend.cancel(stop)
        clock.advance(10.0)
        reply = backend.heartbeat("w1", refs, LEASE)
        assert reply == HeartbeatReply(frozenset(), frozenset({stop}))
        assert must_get(backend, stop).lease_expires_at == approx_time(clock.now() + LEASE)
        assert must_get(backend, stop).state is S.RUNNING

    def test_heartbeat_reports_each_ref_on_its_own(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        held = enqueue_one(backend)
        taken = enqueue_one(backend)
        held_ref = claim(backend, held, worker="w1").ref
        taken_ref = claim(backend, taken, worker="w2").ref
        reply = backend.heartbeat("w1", [held_ref, taken_ref], LEASE)
        assert reply.lost == {taken}
        assert reply.cancel_requested == frozenset()


class AckConformance(_Harness):
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
        assert job.result_value == {"sent": 3, "ids": [1, 2]}
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

    def test_a_retried_job_is_fetched_again_after_its_delay_with_the_next_attempt(
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
        assert job.result_value == "from the new worker"
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
        assert job.result_value == "first"
        assert job.finished_at == approx_time(cast(float, finished_at))
        assert job.errors == ()

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


class FencingConformance(_Harness):
    """The fencing token: no two claims of a job ever share one, whatever happened between them.

    The attempt users see is reset by a re-run from the dead-letter queue and
    given back by a hand-back, so it cannot tell two claims apart; the token
    (the job's count of claims) can.
    """

    def test_claim_tokens_only_grow_across_release_rescue_and_requeue(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend, max_attempts=2)
        first = claim(backend, job_id)
        assert backend.ack([Ack(first.ref, AckKind.RELEASE)]) == [True]
        second = claim(backend, job_id)
        assert second.attempt == first.attempt  # the hand-back gave the attempt back
        clock.advance(LEASE + 1.0)
        assert backend.rescue() == RescueReport(requeued=1)
        third = claim(backend, job_id)
        gave_up = attempt_error(third, clock.now(), "gave up")
        assert backend.ack([Ack(third.ref, AckKind.DEAD_LETTER, error=gave_up)]) == [True]
        assert backend.requeue(JobFilter(ids=frozenset({job_id}))) == 1
        requeued = must_get(backend, job_id)
        assert (requeued.attempt, requeued.claims) == (0, 3)  # the attempt resets, claims stay
        fourth = claim(backend, job_id)
        assert fourth.attempt == 1
        assert [c.token for c in (first, second, third, fourth)] == [1, 2, 3, 4]
        assert must_get(backend, job_id).claims == 4

    @pytest.mark.parametrize("kind", list(AckKind))
    def test_a_stale_outcome_after_rescue_dead_letter_requeue_and_reclaim_is_refused(
        self, backend: Backend, clock: FakeClock, kind: AckKind
    ) -> None:
        job_id = enqueue_one(backend, max_attempts=1)
        stale = claim(backend, job_id, worker="w1")  # then w1 stalls past its lease
        clock.advance(LEASE + 1.0)
        assert backend.rescue() == RescueReport(dead=1)
        assert backend.requeue(JobFilter(ids=frozenset({job_id}))) == 1  # `dlq requeue`
        fresh = claim(backend, job_id, worker="w2")
        assert fresh.attempt == stale.attempt == 1  # the attempt repeats, the claim does not

        result = result_text("from w1") if kind is AckKind.COMPLETE else None
        late = Ack(stale.ref, kind, result=result, error=attempt_error(stale, clock.now(), "late"))
        assert backend.ack([late]) == [False]
        job = must_get(backend, job_id)
        assert (job.state, job.attempt, job.lease_owner, job.result) == (S.RUNNING, 1, "w2", None)
        assert [e.kind for e in job.errors] == [ErrorKind.LOST]

        done = Ack(fresh.ref, AckKind.COMPLETE, result=result_text("from w2"))
        assert backend.ack([done]) == [True]
        job = must_get(backend, job_id)
        assert (job.state, job.result_value) == (S.SUCCEEDED, "from w2")

    def test_a_release_resent_after_the_job_was_claimed_again_is_refused_and_leaves_it_running(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        first = claim(backend, job_id, worker="w1")
        release = Ack(first.ref, AckKind.RELEASE)
        assert backend.ack([release]) == [True]  # written, but its reply was lost on the way
        again = claim(backend, job_id, worker="w2")
        assert again.attempt == first.attempt
        assert backend.ack([release]) == [False]  # so it is sent again
        job = must_get(backend, job_id)
        assert (job.state, job.lease_owner) == (S.RUNNING, "w2")
        assert backend.claim(["default"], "w3", 10, LEASE) == []
        assert backend.ack([Ack(again.ref, AckKind.COMPLETE, result=result_text(1))]) == [True]

    @pytest.mark.parametrize("given_back_by", ["release", "rescue and requeue"])
    def test_a_heartbeat_of_an_old_claim_is_lost_and_extends_nothing_once_the_job_is_claimed_again(
        self, backend: Backend, clock: FakeClock, given_back_by: str
    ) -> None:
        job_id = enqueue_one(backend, max_attempts=1)
        old = claim(backend, job_id, worker="w1")
        if given_back_by == "release":
            assert backend.ack([Ack(old.ref, AckKind.RELEASE)]) == [True]
        else:
            clock.advance(LEASE + 1.0)
            assert backend.rescue() == RescueReport(dead=1)
            assert backend.requeue(JobFilter()) == 1
        new = claim(backend, job_id, worker="w1")  # the same worker, even
        expiry = must_get(backend, job_id).lease_expires_at
        clock.advance(10.0)
        assert backend.heartbeat("w1", [old.ref], LEASE).lost == {job_id}
        assert must_get(backend, job_id).lease_expires_at == approx_time(cast(float, expiry))
        assert backend.heartbeat("w1", [new.ref], LEASE).lost == frozenset()
        assert must_get(backend, job_id).lease_expires_at == approx_time(clock.now() + LEASE)


class RescueConformance(_Harness):
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


class ReleaseWorkerConformance(_Harness):
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

    def test_release_worker_async_behaves_like_the_sync_operation(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        claim(backend, job_id, worker="dead-1")

        async def scenario() -> RescueReport:
            return await backend.release_worker_async("dead-1", max_lost=3)

        assert asyncio.run(scenario()) == RescueReport(requeued=1)
        job = must_get(backend, job_id)
        assert (job.state, job.lost) == (S.AVAILABLE, 1)


class CancelConformance(_Harness):
    @pytest.mark.parametrize("state", [S.AVAILABLE, S.SCHEDULED])
    def test_cancel_of_a_waiting_job_cancels_it_now_and_it_is_never_fetched(
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


class AdminConformance(_Harness):
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


class InspectionConformance(_Harness):
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


class AsyncConformance(_Harness):
    def test_async_counterparts_behave_like_the_sync_operations(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        async def scenario() -> None:
            entries = await backend.enqueue_async([new_job(key="k"), new_job(key="k"), new_job()])
            assert [e.created for e in entries] == [True, False, True]
            first, _, second = (e.id for e in entries)
            claimed = await backend.claim_async(["default"], "w1", 10, LEASE)
            assert sorted(j.id for j in claimed) == [first, second]
            refs = {j.id: j.ref for j in claimed}
            reply = await backend.heartbeat_async("w1", list(refs.values()), LEASE)
            assert reply == HeartbeatReply(frozenset(), frozenset())
            done = Ack(refs[first], AckKind.COMPLETE, result=result_text("async"))
            assert await backend.ack_async([done]) == [True]
            assert await backend.ack_async([done]) == [False]
            job = await backend.get_async(first)
            assert job is not None
            assert (job.state, job.result_value) == (S.SUCCEEDED, "async")
            clock.advance(LEASE + 1.0)
            assert await backend.rescue_async() == RescueReport(requeued=1)
            clock.advance(30 * 86_400.0)
            assert await backend.prune_async(Retention(succeeded=1.0)) == 1
            assert await backend.get_async(first) is None

        asyncio.run(scenario())


class WaitConformance(_Harness):
    def test_wait_returns_after_its_timeout_when_nothing_happens(self, backend: Backend) -> None:
        started = time.monotonic()
        asyncio.run(backend.wait(["default"], 0.05))
        assert time.monotonic() - started < 2.0

    def test_wait_returns_soon_after_an_enqueue_from_another_thread(self, backend: Backend) -> None:
        timeout = 10.0

        async def scenario() -> float:
            waiter = asyncio.create_task(backend.wait(["default"], timeout))
            await asyncio.sleep(0.1)  # let the waiter start listening
            enqueued = time.monotonic()
            await asyncio.to_thread(backend.enqueue, [new_job()])
            await waiter
            return time.monotonic() - enqueued

        assert asyncio.run(scenario()) < timeout / 2
        assert len(backend.claim(["default"], "w1", 10, LEASE)) == 1


class BackendConformance(
    EnqueueConformance,
    FetchConformance,
    LeaseConformance,
    AckConformance,
    FencingConformance,
    RescueConformance,
    ReleaseWorkerConformance,
    CancelConformance,
    AdminConformance,
    InspectionConformance,
    AsyncConformance,
    WaitConformance,
):
    """Every guarantee of the `Backend` contract; requires a `backend_factory` fixture."""
