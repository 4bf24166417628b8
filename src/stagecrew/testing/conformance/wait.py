"""Wait: an idle worker's wait returns on its timeout, or soon after new work."""

from __future__ import annotations

import asyncio
import time

from ...backends.base import Backend
from ...job import ClaimedJob, JobState
from .helpers import LEASE, Harness, new_job


async def claim_when_woken(
    backend: Backend, worker: str, limit: int, timeout: float
) -> list[ClaimedJob]:
    """`wait_and_claim` as an idle worker calls it: again after each return without jobs
    (a wait may return early, e.g. the first one after subscribing), until `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (remaining := deadline - loop.time()) > 0:
        claimed = await backend.wait_and_claim(["default"], worker, limit, LEASE, remaining)
        if claimed:
            return claimed
    return []


class WaitConformance(Harness):
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

    # -- wait_and_claim: an idle worker's wait and claim in one call ----------------------
    def test_wait_and_claim_claims_a_job_enqueued_while_it_waits(self, backend: Backend) -> None:
        timeout = 10.0

        async def scenario() -> tuple[list[int], int, float]:
            waiter = asyncio.create_task(claim_when_woken(backend, "w1", 10, timeout))
            await asyncio.sleep(0.1)  # let the waiter start waiting
            enqueued = time.monotonic()
            [entry] = await asyncio.to_thread(backend.enqueue, [new_job()])
            claimed = await waiter
            return [c.id for c in claimed], entry.id, time.monotonic() - enqueued

        claimed, job_id, took = asyncio.run(scenario())
        assert took < timeout / 2
        assert claimed == [job_id]
        job = backend.get(job_id)
        assert job is not None
        assert (job.state, job.lease_owner, job.attempt) == (JobState.RUNNING, "w1", 1)

    def test_wait_and_claim_returns_nothing_after_its_timeout(self, backend: Backend) -> None:
        started = time.monotonic()
        claimed = asyncio.run(backend.wait_and_claim(["default"], "w1", 10, LEASE, 0.05))
        assert claimed == []
        assert time.monotonic() - started < 2.0

    def test_wait_and_claim_claims_in_claim_order_up_to_its_limit(self, backend: Backend) -> None:
        async def scenario() -> list[int]:
            waiter = asyncio.create_task(claim_when_woken(backend, "w1", 2, 10.0))
            await asyncio.sleep(0.1)
            await asyncio.to_thread(backend.enqueue, [new_job(priority=p) for p in (5, 1, 3)])
            return [c.priority for c in await waiter]

        assert asyncio.run(scenario()) == [1, 3]
        [left] = backend.claim(["default"], "w2", 10, LEASE)
        assert left.priority == 5

    def test_one_batch_wakes_as_many_waiting_workers_as_it_has_jobs(self, backend: Backend) -> None:
        """No job waits for a poll while a worker idles: every waiter of a limit of one gets
        one of the batch's jobs, soon (a store that wakes one worker per enqueue passes the
        wake-up on)."""
        timeout = 10.0

        async def scenario() -> tuple[list[list[int]], float]:
            waiters = [
                asyncio.create_task(claim_when_woken(backend, f"w{i}", 1, timeout))
                for i in range(3)
            ]
            await asyncio.sleep(0.2)
            enqueued = time.monotonic()
            await asyncio.to_thread(backend.enqueue, [new_job() for _ in range(3)])
            claimed = await asyncio.gather(*waiters)
            return [[c.id for c in jobs] for jobs in claimed], time.monotonic() - enqueued

        claimed, took = asyncio.run(scenario())
        assert took < timeout / 2
        assert sorted(len(jobs) for jobs in claimed) == [1, 1, 1]

    def test_a_cancelled_wait_and_claim_leaves_no_job_claimed(self, backend: Backend) -> None:
        """Cancelled the moment a job arrives, either it returned the job, or the job is still
        there for another worker: never claimed for a caller that is gone."""

        async def scenario() -> tuple[list[int], int]:
            waiter = asyncio.create_task(claim_when_woken(backend, "w1", 1, 10.0))
            await asyncio.sleep(0.1)
            [entry] = await asyncio.to_thread(backend.enqueue, [new_job()])
            waiter.cancel()
            try:
                returned = [c.id for c in await waiter]
            except asyncio.CancelledError:
                returned = []
            return returned, entry.id

        returned: set[int] = set()
        enqueued: list[int] = []
        for _ in range(5):
            got, job_id = asyncio.run(scenario())
            returned.update(got)
            enqueued.append(job_id)
        for job_id in enqueued:
            job = backend.get(job_id)
            assert job is not None
            if job_id in returned:
                assert (job.state, job.lease_owner) == (JobState.RUNNING, "w1")
            else:
                assert (job.state, job.attempt, job.lost) == (JobState.AVAILABLE, 0, 0)
