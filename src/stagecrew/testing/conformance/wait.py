"""Wait: an idle worker's wait returns on its timeout, or soon after new work."""

from __future__ import annotations

import asyncio
import time

from ...backends.base import Backend
from .helpers import LEASE, Harness, new_job


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
