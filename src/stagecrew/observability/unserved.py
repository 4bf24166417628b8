"""The producer's warning when it enqueues to a queue no live worker serves.

A typo on either side (`--queues emial`, `queue="emial"`) otherwise fails silently: the jobs
wait for a worker that never comes. After the first enqueue to each queue, the producer reads
the worker registry once and, if no live worker claims from that queue, logs a warning, once
per queue for the life of the app. The read is one small query per queue name, never per
job; a registry that cannot be read is not the enqueue's failure (the jobs are written), so
it is logged at DEBUG and that queue is not checked again. A store that only this process
can see (`memory://`) has no other process's workers to look for.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from ..backends.base import Backend
from ..backends.worker_registry import WorkerRegistry
from ..job import NewJob

log = logging.getLogger("stagecrew.producer")


class UnservedQueues:
    """Remembers the queues already looked at; warns about those no live worker serves."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def new(self, jobs: Iterable[NewJob]) -> set[str]:
        """The queues of `jobs` not looked at yet, now marked as looked at."""
        seen = self._seen
        fresh = {job.queue for job in jobs if job.queue not in seen}
        if not fresh:
            return fresh
        with self._lock:
            fresh -= seen
            seen |= fresh
        return fresh

    def enqueued(self, backend: Backend, jobs: Iterable[NewJob]) -> None:
        fresh = self.new(jobs)
        if fresh and backend.capabilities.cross_process:
            try:
                registry = backend.list_workers()
            except Exception as exc:
                log.debug("could not read the worker registry (%s)", exc)
                return
            _warn(registry, fresh)

    async def enqueued_async(self, backend: Backend, jobs: Iterable[NewJob]) -> None:
        fresh = self.new(jobs)
        if fresh and backend.capabilities.cross_process:
            try:
                registry = await backend.list_workers_async()
            except Exception as exc:
                log.debug("could not read the worker registry (%s)", exc)
                return
            _warn(registry, fresh)


def _warn(registry: WorkerRegistry, queues: set[str]) -> None:
    served = registry.served_queues()
    for queue in sorted(queues - served):
        log.warning(
            "enqueued to queue %r, which no live worker serves (live workers serve: %s); its "
            "jobs wait until a worker with --queues %s starts: check the queue's name",
            queue,
            ", ".join(sorted(served)) or "none is alive",
            queue,
        )
