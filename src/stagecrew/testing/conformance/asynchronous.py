"""The asynchronous operations: each does what its synchronous counterpart does.

Most tests here set up two fresh stores alike on one clock (`Twins`), call the
synchronous operation on one and its asynchronous counterpart on the other, and
check that both answered the same and hold the same jobs afterwards; the
synchronous areas of the suite say what that answer must be.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from ...backends.base import (
    Ack,
    AckKind,
    Backend,
    HeartbeatReply,
    JobFilter,
    QueueStats,
    RescueReport,
    Retention,
)
from ...clock import FakeClock
from ...job import JobRef
from .helpers import (
    LEASE,
    BackendFactory,
    Harness,
    S,
    attempt_error,
    claim,
    enqueue_one,
    job_in_state,
    must_get,
    new_job,
    result_text,
)

T = TypeVar("T")

STATES = (S.RUNNING, S.SUCCEEDED, S.DEAD, S.CANCELLED, S.SCHEDULED, S.AVAILABLE)
"""Every state, in an order `job_in_state` can build them one after another in one queue."""


@dataclass(frozen=True)
class Twins:
    """Two stores set up alike: `sync` answers synchronous calls, `asynchronous` async ones."""

    sync: Backend
    asynchronous: Backend

    def setup(self, steps: Callable[[Backend], T]) -> T:
        """Run `steps` (synchronous operations) on both stores; both must answer alike."""
        first = steps(self.sync)
        assert steps(self.asynchronous) == first, "the two stores were not set up alike"
        return first

    def compare(self, operation: str, *args: Any, **kwargs: Any) -> Any:
        """`operation` on `sync` and `<operation>_async` on `asynchronous`, with the same
        arguments: both must answer the same and hold the same jobs afterwards."""
        expected = getattr(self.sync, operation)(*args, **kwargs)
        answered = asyncio.run(getattr(self.asynchronous, f"{operation}_async")(*args, **kwargs))
        assert answered == expected, f"{operation}_async answered otherwise than {operation}"
        assert self.asynchronous.list_jobs(JobFilter()) == self.sync.list_jobs(JobFilter()), (
            f"{operation}_async left the jobs otherwise than {operation}"
        )
        return answered


def stats_of(stats: list[QueueStats]) -> dict[str, QueueStats]:
    return {s.queue: s for s in stats}


class AsyncConformance(Harness):
    @pytest.fixture
    def twins(self, backend_factory: BackendFactory, clock: FakeClock) -> Iterator[Twins]:
        sync = backend_factory(clock)
        try:
            asynchronous = backend_factory(clock)
            try:
                yield Twins(sync, asynchronous)
            finally:
                asynchronous.close()
        finally:
            sync.close()

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
            assert (job.state, job.result) == (S.SUCCEEDED, "async")
            clock.advance(LEASE + 1.0)
            assert await backend.rescue_async() == RescueReport(requeued=1)
            clock.advance(30 * 86_400.0)
            assert await backend.prune_async(Retention(succeeded=1.0)) == 1
            assert await backend.get_async(first) is None

        asyncio.run(scenario())

    # -- producer ----------------------------------------------------------------------
    def test_enqueue_async_stores_and_dedupes_as_enqueue_does(self, twins: Twins) -> None:
        twins.setup(lambda b: b.enqueue([new_job("stored", key="s")]))
        batch = [
            new_job("a", key="k", args=[1], kwargs={"x": "y"}),
            new_job("b", key="k"),
            new_job("c", queue="q", priority=-2, delay=60.0, max_attempts=7),
            new_job("d", key="s"),
        ]
        entries = twins.compare("enqueue", batch)
        assert [e.created for e in entries] == [True, False, True, False]

    @pytest.mark.parametrize("times", [{"run_at": math.nan}, {"delay": math.inf}])
    def test_enqueue_async_refuses_what_enqueue_refuses_and_writes_nothing(
        self, twins: Twins, times: dict[str, Any]
    ) -> None:
        batch = [new_job("a", key="good"), new_job("b", **times)]
        with pytest.raises(ValueError, match="finite"):
            twins.sync.enqueue(batch)
        with pytest.raises(ValueError, match="finite"):
            asyncio.run(twins.asynchronous.enqueue_async(batch))
        assert twins.asynchronous.list_jobs(JobFilter()) == []

    # -- worker ------------------------------------------------------------------------
    def test_claim_async_claims_as_claim_does(self, twins: Twins, clock: FakeClock) -> None:
        def setup(backend: Backend) -> None:
            enqueue_one(backend, queue="a", priority=1)
            enqueue_one(backend, queue="b", priority=0)
            enqueue_one(backend, queue="a", delay=30.0)
            enqueue_one(backend, queue="c")
            enqueue_one(backend, queue="a", priority=-1)

        twins.setup(setup)
        clock.advance(5.0)
        claimed = twins.compare("claim", ["a", "b"], "w1", 3, LEASE)
        assert [(j.queue, j.priority, j.token) for j in claimed] == [
            ("a", -1, 1),
            ("b", 0, 1),
            ("a", 1, 1),
        ]

    def test_heartbeat_async_renews_and_reports_as_heartbeat_does(
        self, twins: Twins, clock: FakeClock
    ) -> None:
        def setup(backend: Backend) -> list[JobRef]:
            keep, stop = enqueue_one(backend), enqueue_one(backend)
            taken = enqueue_one(backend)
            refs = [claim(backend, keep).ref, claim(backend, stop).ref]
            claim(backend, taken, worker="w2")
            backend.cancel(stop)
            return [*refs, JobRef(taken, 1), JobRef(999_999, 1)]

        refs = twins.setup(setup)
        clock.advance(10.0)
        reply = twins.compare("heartbeat", "w1", refs, LEASE)
        assert reply == HeartbeatReply(
            lost=frozenset({refs[2].id, 999_999}), cancel_requested=frozenset({refs[1].id})
        )

    def test_ack_async_applies_and_fences_as_ack_does(self, twins: Twins, clock: FakeClock) -> None:
        def setup(backend: Backend) -> list[Ack]:
            ids = [enqueue_one(backend) for _ in range(4)]
            claimed = [claim(backend, job_id) for job_id in ids]
            now = clock.now()
            return [
                Ack.complete(claimed[0].ref, result_text({"done": True})),
                Ack.retry(claimed[1].ref, attempt_error(claimed[1], now, "again"), delay=30.0),
                Ack.dead_letter(claimed[2].ref, attempt_error(claimed[2], now, "bad")),
                Ack.release(claimed[3].ref, delay=5.0),
                Ack.complete(JobRef(ids[0], 7), result_text("stale")),
            ]

        acks = twins.setup(setup)
        clock.advance(2.0)
        applied = twins.compare("ack", acks)
        assert applied == [True, True, True, True, False]

    def test_rescue_async_settles_expired_leases_as_rescue_does(
        self, twins: Twins, clock: FakeClock
    ) -> None:
        def setup(backend: Backend) -> None:
            ids = [enqueue_one(backend, max_attempts=n) for n in (3, 1, 3)]
            for job_id in ids:
                claim(backend, job_id)
            backend.cancel(ids[2])

        twins.setup(setup)
        clock.advance(LEASE + 1.0)
        twins.setup(lambda b: claim(b, enqueue_one(b)).id)  # a fresh lease, left alone
        report = twins.compare("rescue", max_lost=3)
        assert report == RescueReport(requeued=1, dead=1, cancelled=1)

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

    def test_prune_async_deletes_as_prune_does(self, twins: Twins, clock: FakeClock) -> None:
        twins.setup(lambda b: [job_in_state(b, clock, s) for s in (S.SUCCEEDED,) * 3 + (S.DEAD,)])
        clock.advance(10.0)
        deleted = twins.compare("prune", Retention(succeeded=1.0), limit=2)
        assert deleted == 2

    def test_wait_returns_soon_after_an_enqueue_async_on_the_same_loop(
        self, backend: Backend
    ) -> None:
        timeout = 10.0

        async def scenario() -> float:
            waiter = asyncio.create_task(backend.wait(["default"], timeout))
            await asyncio.sleep(0.1)  # let the waiter start listening
            enqueued = time.monotonic()
            await backend.enqueue_async([new_job()])
            await waiter
            return time.monotonic() - enqueued

        assert asyncio.run(scenario()) < timeout / 2
        assert len(backend.claim(["default"], "w1", 10, LEASE)) == 1

    # -- inspection and admin ----------------------------------------------------------
    def test_get_async_reads_as_get_does(self, twins: Twins, clock: FakeClock) -> None:
        job_id = twins.setup(lambda b: job_in_state(b, clock, S.DEAD, args=[1, "two"]))
        job = twins.compare("get", job_id)
        assert job is not None
        assert (job.state, job.args, len(job.errors)) == (S.DEAD, [1, "two"], 1)
        assert twins.compare("get", 999_999) is None

    def test_list_jobs_async_filters_and_pages_as_list_jobs_does(
        self, twins: Twins, clock: FakeClock
    ) -> None:
        twins.setup(lambda b: [job_in_state(b, clock, s, queue=q) for s in STATES for q in "ab"])
        job_filter = JobFilter(
            queues=frozenset({"a"}), states=frozenset({S.AVAILABLE, S.DEAD, S.RUNNING}), limit=2
        )
        jobs = twins.compare("list_jobs", job_filter)
        assert [(j.queue, j.state) for j in jobs] == [("a", S.AVAILABLE), ("a", S.DEAD)]

    def test_stats_async_counts_as_stats_does(self, twins: Twins, clock: FakeClock) -> None:
        twins.setup(lambda b: [job_in_state(b, clock, s, queue="a") for s in STATES])
        twins.setup(lambda b: enqueue_one(b, queue="b", delay=5.0))
        clock.advance(20.0)
        stats = stats_of(twins.sync.stats())
        assert stats_of(asyncio.run(twins.asynchronous.stats_async())) == stats
        assert {s: stats["a"].count(s) for s in S} == dict.fromkeys(S, 1)
        assert stats["b"].oldest_available_age is not None

    def test_next_run_at_async_answers_as_next_run_at_does(
        self, twins: Twins, clock: FakeClock
    ) -> None:
        twins.setup(lambda b: [enqueue_one(b, queue=q, delay=d) for q, d in (("a", 60), ("b", 9))])
        for queues in (None, ["a"], ["c"]):
            twins.compare("next_run_at", queues)
        assert twins.asynchronous.next_run_at() is not None

    def test_cancel_async_cancels_as_cancel_does(self, twins: Twins, clock: FakeClock) -> None:
        states = (S.RUNNING, S.SUCCEEDED, S.SCHEDULED, S.AVAILABLE)
        ids = twins.setup(lambda b: [job_in_state(b, clock, s) for s in states])
        clock.advance(3.0)
        for job_id, after in zip(
            ids, (S.RUNNING, S.SUCCEEDED, S.CANCELLED, S.CANCELLED), strict=True
        ):
            job = twins.compare("cancel", job_id)
            assert job is not None
            assert job.state is after
        assert twins.compare("cancel", 999_999) is None

    def test_requeue_async_requeues_as_requeue_does(self, twins: Twins, clock: FakeClock) -> None:
        states = (S.DEAD, S.CANCELLED, S.SUCCEEDED, S.RUNNING)
        twins.setup(lambda b: [job_in_state(b, clock, s, queue=q) for s in states for q in "ab"])
        clock.advance(7.0)
        job_filter = JobFilter(queues=frozenset({"a"}))
        requeued = twins.compare("requeue", job_filter)
        assert requeued == 2

    def test_purge_async_deletes_as_purge_does(self, twins: Twins, clock: FakeClock) -> None:
        states = (S.DEAD, S.CANCELLED, S.SUCCEEDED, S.AVAILABLE)
        twins.setup(lambda b: [job_in_state(b, clock, s, queue=q) for s in states for q in "ab"])
        job_filter = JobFilter(states=frozenset({S.DEAD, S.SUCCEEDED, S.AVAILABLE}))
        purged = twins.compare("purge", job_filter)
        assert purged == 4
