"""The producer's warning when it enqueues to a queue no live worker serves.

A typo on either side (`--queues emial`, `queue="emial"`) otherwise fails silently: the jobs
wait for a worker that never comes. After the first enqueue to each queue, the producer reads
the worker registry and, if no live worker claims from that queue, logs a warning, once per
queue for the life of the app. An enqueue to a queue seen before pays a set lookup. The first
synchronous enqueue to a queue reads the registry on its own thread, after its write (one
small read per queue name); an asynchronous one starts that read as a task of its loop and
returns without waiting for it. A registry that cannot be read is only logged at DEBUG.
After `MAX_QUEUES` queue names (per-tenant queues, say) no new one is looked at. A store that
only this process can see (`memory://`) has no other process's workers to look for.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable

from ..backends.base import Backend
from ..backends.worker_registry import WorkerRegistry
from ..job import NewJob

log = logging.getLogger("stagecrew.producer")

MAX_QUEUES = 1000


class UnservedQueues:
    """Remembers the queues already looked at; warns about those no live worker serves."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._full = False
        """`MAX_QUEUES` names were looked at: no new one is."""
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        """The looks asynchronous enqueues started, until they end (a task is kept here so
        it is not collected while it runs)."""

    def new(self, jobs: Iterable[NewJob]) -> set[str]:
        """The queues of `jobs` not looked at yet, now marked as looked at."""
        seen = self._seen
        fresh = {job.queue for job in jobs if job.queue not in seen}
        if not fresh or self._full:
            return set()
        with self._lock:
            fresh -= seen
            seen |= fresh
            self._full = len(seen) >= MAX_QUEUES
        return fresh

    def enqueued(self, backend: Backend, jobs: Iterable[NewJob]) -> None:
        """After a synchronous enqueue: look at its new queues now, on the caller's thread
        (one small read, once per queue name)."""
        fresh = self.new(jobs)
        if fresh and backend.capabilities.cross_process:
            try:
                registry = backend.list_workers()
            except Exception as exc:
                log.debug("could not read the worker registry (%s)", exc)
                return
            warn(registry, fresh)

    def enqueued_async(self, backend: Backend, jobs: Iterable[NewJob]) -> None:
        """After an asynchronous enqueue: look at its new queues in a task of the running
        loop, never awaited by the enqueue (no await follows its committed write)."""
        fresh = self.new(jobs)
        if fresh and backend.capabilities.cross_process:
            task = asyncio.get_running_loop().create_task(self._look_async(backend, fresh))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _look_async(self, backend: Backend, queues: set[str]) -> None:
        try:
            registry = await backend.list_workers_async()
        except Exception as exc:
            log.debug("could not read the worker registry (%s)", exc)
            return
        warn(registry, queues)

    async def settled(self) -> None:
        """Wait for the looks asynchronous enqueues started (tests)."""
        while self._tasks:
            await asyncio.gather(*self._tasks)


def warn(registry: WorkerRegistry, queues: set[str]) -> None:
    served = registry.served_queues()
    for name in sorted(queues - served):
        log.warning(
            "enqueued to queue %r, which no live worker serves (live workers serve: %s); its "
            "jobs wait until a worker with --queues %s starts: check the queue's name",
            name,
            ", ".join(sorted(served)) or "none is alive",
            name,
        )
