"""`TestKit`: run an app's jobs in-process on the memory engine with a fake clock."""

from __future__ import annotations

import asyncio
from typing import Any

from ..app import App
from ..backends.base import Backend
from ..backends.memory import MemoryBackend
from ..clock import FakeClock
from ..job import Job, JobState
from ..worker.runner import Worker

MAX_ROUNDS = 10_000


class TestKit:
    """Swap an app onto an in-memory store and a fake clock for one test.

    ```python
    with TestKit(app) as kit:
        flaky.enqueue(1)
        kit.run_until_idle(advance_time=True)   # runs retries by jumping the clock
        assert kit.jobs(state="dead") == []
    ```
    The store, the backoff and the worker all read `kit.clock`.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, app: App, *, clock: FakeClock | None = None, concurrency: int = 4) -> None:
        self.app = app
        self.clock = clock or FakeClock()
        self.concurrency = concurrency
        self._saved: tuple[Backend | None, Any, str] | None = None

    def __enter__(self) -> TestKit:
        self._saved = (self.app._backend, self.app.clock, self.app.url)
        self.app._backend = None
        self.app.url = "memory://"
        self.app.use_backend(MemoryBackend("memory://", self.clock))
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._saved is not None
        backend, clock, url = self._saved
        current = self.app._backend
        self.app._backend, self.app.clock, self.app.url = backend, clock, url
        if current is not None:
            current.close()

    @property
    def backend(self) -> Backend:
        return self.app.backend

    async def run_until_idle_async(self, *, advance_time: bool = False) -> int:
        """Run every due job; with `advance_time`, also jump the clock to each later one.

        Returns how many attempts ran. Without `advance_time`, jobs scheduled
        for later (delays, retry backoff) stay scheduled.
        """
        ran = 0
        for _ in range(MAX_ROUNDS):
            worker = Worker(self.app, concurrency=self.concurrency, queues=self._all_queues())
            ran += await worker.drain()
            if not advance_time:
                return ran
            due = self.backend.next_run_at()
            if due is None:
                return ran
            if due > self.clock.now():
                self.clock.set(due)
        raise RuntimeError("run_until_idle did not settle; a job keeps rescheduling itself")

    def run_until_idle(self, *, advance_time: bool = False) -> int:
        return asyncio.run(self.run_until_idle_async(advance_time=advance_time))

    def _all_queues(self) -> list[str]:
        queues = {t.queue for t in self.app.tasks.values()} | {self.app.default_queue}
        queues |= {s.queue for s in self.backend.stats()}
        return sorted(queues)

    def jobs(self, *, state: JobState | str | None = None, task: str | None = None) -> list[Job]:
        return self.app.jobs.list(state=state, task=task, limit=100_000)
