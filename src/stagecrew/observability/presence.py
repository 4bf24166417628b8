"""A worker process's presence: its record in the worker registry, and its process title.

Each worker process writes its record (`Backend.record_worker`) when it starts, every beat
interval while it runs, and once more when it stops cleanly, marked stopped. A record that
stops being written reads as lost once its ttl has passed (`BEATS_PER_TTL` beats), which is
how `stagecrew workers` and `stagecrew health` tell a worker that died from one that
stopped. The process title (`stagecrew worker-0 [default,email] busy 3/10`, as `ps` and
`top` show it) follows the busy slots at most once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable

import setproctitle

from ..backends.base import Backend
from ..backends.worker_registry import WorkerBeat, WorkerInfo

log = logging.getLogger("stagecrew.worker")

BEATS_PER_TTL = 3
"""A worker counts as alive for this many beat intervals after its last beat: one late or
failed beat does not make it look lost."""
TITLE_INTERVAL = 1.0
"""Seconds between two looks at the busy slots for the process title."""
LAST_BEAT_WAIT = 5.0
"""Seconds a stopping worker waits for its stopped record to be written."""


def process_title(name: str, queues: list[str], busy: int, concurrency: int) -> str:
    return f"stagecrew {name} [{','.join(queues)}] busy {busy}/{concurrency}"


class Presence:
    """Writes one worker's record and keeps its process title current.

    `name` (`worker-0`): the title's name for this process; None leaves the title alone (a
    worker embedded in a program that is not its own process).
    """

    def __init__(
        self,
        backend: Callable[[], Backend],
        worker_id: str,
        *,
        name: str | None,
        queues: list[str],
        concurrency: int,
        busy: Callable[[], int],
        interval: float,
    ) -> None:
        self._backend = backend
        self._id = worker_id
        self._name = name
        self._queues = queues
        self._concurrency = concurrency
        self._busy = busy
        self.interval = interval
        self._info_fixed = (socket.gethostname(), os.getpid(), _version())
        self._title_busy: int | None = None

    def beat(self, *, stopped: bool = False) -> WorkerBeat:
        host, pid, version = self._info_fixed
        info = WorkerInfo(
            host=host,
            pid=pid,
            queues=tuple(self._queues),
            concurrency=self._concurrency,
            busy=0 if stopped else self._busy(),
            version=version,
        )
        return WorkerBeat(self._id, info, BEATS_PER_TTL * self.interval, stopped)

    async def run(self, stop: asyncio.Event) -> None:
        """Beat now and every interval, and keep the title current, until `stop` is set."""
        next_beat = 0.0
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            self.retitle()
            if loop.time() >= next_beat:
                next_beat = loop.time() + self.interval
                try:
                    await self._backend().record_worker_async(self.beat())
                except Exception as exc:
                    log.warning("could not record this worker in the registry (%s)", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(TITLE_INTERVAL, self.interval))

    async def stopped(self) -> None:
        """Write the record of a clean stop (bounded by `LAST_BEAT_WAIT`)."""
        self.retitle(stopping=True)
        try:
            await asyncio.wait_for(
                self._backend().record_worker_async(self.beat(stopped=True)), LAST_BEAT_WAIT
            )
        except Exception as exc:
            log.warning(
                "could not record this worker's stop in the registry (%s); it reads as lost "
                "once its record's ttl has passed",
                exc,
            )

    def retitle(self, *, stopping: bool = False) -> None:
        if self._name is None:
            return
        busy = self._busy()
        if busy == self._title_busy and not stopping:
            return
        self._title_busy = busy
        title = process_title(self._name, self._queues, busy, self._concurrency)
        setproctitle.setproctitle(f"{title} stopping" if stopping else title)


def _version() -> str:
    from .. import __version__

    return str(__version__)
