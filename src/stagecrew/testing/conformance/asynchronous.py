"""The asynchronous operations: each does what its synchronous counterpart does."""

from __future__ import annotations

import asyncio

from ...backends.base import Ack, AckKind, Backend, HeartbeatReply, RescueReport, Retention
from ...clock import FakeClock
from .helpers import LEASE, Harness, S, claim, enqueue_one, must_get, new_job, result_text


class AsyncConformance(Harness):
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
