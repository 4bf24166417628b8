"""Waiting for a job to finish (`wait_finished`), what `JobHandle.result()` is built on.

Spurious returns are allowed (the caller reads the job again); a missed finish is not.
So every test here checks that a wait returns once the job is final, and bounds how long
that may take only by a margin far above any engine's notification delay: the bound turns
a missed notification, which would wait out the whole timeout, into a failure.
"""

from __future__ import annotations

import asyncio
import threading
import time

from ...backends.base import Ack, Backend
from ...clock import FakeClock
from .helpers import Harness, attempt_error, claim, enqueue_one, result_text

TIMEOUT = 20.0
"""What each wait here is given: a wait that sees the finish returns long before it."""
MISSED = TIMEOUT / 2
"""A wait that took this long missed the finish it was waiting for."""


def _wait_in_thread(backend: Backend, job_id: int) -> tuple[threading.Thread, threading.Event]:
    returned = threading.Event()

    def waiter() -> None:
        backend.wait_finished(job_id, TIMEOUT)
        returned.set()

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    return thread, returned


class FinishedWaitConformance(Harness):
    def test_a_wait_for_a_finished_or_unknown_job_returns_at_once(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        claimed = claim(backend, job_id)
        assert backend.ack([Ack.complete(claimed.ref, result_text(1))]) == [True]
        started = time.monotonic()
        backend.wait_finished(job_id, TIMEOUT)
        backend.wait_finished(job_id + 1000, TIMEOUT)
        asyncio.run(backend.wait_finished_async(job_id, TIMEOUT))
        asyncio.run(backend.wait_finished_async(job_id + 1000, TIMEOUT))
        assert time.monotonic() - started < MISSED

    def test_a_wait_for_an_unfinished_job_returns_by_its_timeout(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        started = time.monotonic()
        backend.wait_finished(job_id, 0.2)
        asyncio.run(backend.wait_finished_async(job_id, 0.2))
        assert time.monotonic() - started < MISSED

    def test_a_waiting_thread_returns_once_another_thread_acks_the_job(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        claimed = claim(backend, job_id)
        thread, returned = _wait_in_thread(backend, job_id)
        time.sleep(0.2)  # most likely waiting by now; if not, it sees the job final at once
        assert backend.ack([Ack.complete(claimed.ref, result_text(1))]) == [True]
        assert returned.wait(MISSED), "the wait missed the job's finish"
        thread.join(TIMEOUT)

    def test_an_async_wait_returns_once_the_job_is_dead_lettered_or_cancelled(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        dead_id, cancelled_id = enqueue_one(backend), enqueue_one(backend)

        async def scenario() -> float:
            dead = claim(backend, dead_id)
            for job_id in (dead_id, cancelled_id):
                waiter = asyncio.create_task(backend.wait_finished_async(job_id, TIMEOUT))
                await asyncio.sleep(0.2)
                started = time.monotonic()
                if job_id == dead_id:
                    error = attempt_error(dead, clock.now(), "gave up")
                    await asyncio.to_thread(backend.ack, [Ack.dead_letter(dead.ref, error)])
                else:
                    await asyncio.to_thread(backend.cancel, job_id)  # a waiting job: at once
                await waiter
            return time.monotonic() - started

        assert asyncio.run(scenario()) < MISSED

    def test_a_wait_is_not_woken_for_good_by_another_job_finishing(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        """Another job's finish may wake the wait early, but the caller reads again and
        waits on: what matters is that the job it waits for is still seen finishing."""
        other_id, job_id = enqueue_one(backend), enqueue_one(backend)
        other = claim(backend, other_id)
        mine = claim(backend, job_id)
        assert backend.ack([Ack.complete(other.ref, result_text(0))]) == [True]
        thread, returned = _wait_in_thread(backend, job_id)
        time.sleep(0.2)
        if not returned.is_set():  # not woken by the other job's finish: woken by its own
            assert backend.ack([Ack.complete(mine.ref, result_text(1))]) == [True]
            assert returned.wait(MISSED), "the wait missed the job's finish"
        thread.join(TIMEOUT)
