"""The producer's warning when it enqueues to a queue no live worker serves.

A typo on either side (`--queues emial`, `queue="emial"`) otherwise fails silently: the jobs
wait for a worker that never comes. After the first enqueue to each queue, the producer reads
the worker registry and, if no live worker claims from that queue, logs a warning, once per
queue for the life of the app. The enqueue itself pays a set lookup: the registry is read on
a thread of the app's own, in the background (one thread, so one connection of an engine
that keeps one per thread), so an enqueue never waits for it, and a registry that cannot be
read is only logged at DEBUG.
After `MAX_QUEUES` queue names (per-tenant queues, say) no new one is looked at. A store that
only this process can see (`memory://`) has no other process's workers to look for.
"""

from __future__ import annotations

import logging
import queue
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
        self._checks: queue.SimpleQueue[tuple[Backend, set[str]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._idle = threading.Condition()
        self._queued = 0
        self._checked = 0

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
        """After an enqueue: look at its new queues in the background."""
        fresh = self.new(jobs)
        if not fresh or not backend.capabilities.cross_process:
            return
        with self._idle:
            self._queued += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="stagecrew-unserved-queues", daemon=True
                )
                self._thread.start()
        self._checks.put((backend, fresh))

    def _run(self) -> None:
        while True:
            backend, queues = self._checks.get()
            try:
                registry = backend.list_workers()
            except Exception as exc:
                log.debug("could not read the worker registry (%s)", exc)
            else:
                warn(registry, queues)
            with self._idle:
                self._checked += 1
                self._idle.notify_all()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every check asked for so far ran; whether they did within `timeout`."""
        with self._idle:
            return self._idle.wait_for(lambda: self._checked == self._queued, timeout)


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
