"""Where jobs are: the queues the store knows, and which queue holds a job id.

Ids come from one counter (`{P}:ids`), so they grow across all queues in enqueue order, but a
job's key names its queue (T:job:<id>, see keys.py). Operations given only an id (get, cancel,
heartbeat, ack) need that queue: this process remembers the queue of every job it enqueued or
claimed (a bounded map), and otherwise asks every queue of `{P}:queues` in one pipeline
(EXISTS T:job:<id>). A remembered queue can be wrong (the store lost its data and ids started
over): the scripts then answer "no such job in this queue", and the caller looks again.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from ..ops import Op
from .driver import Command, Step
from .keys import Keys
from .records import text

MAX_REMEMBERED = 200_000
"""Job ids whose queue this process remembers (enqueued or claimed here)."""


def known_queues(keys: Keys) -> Op[list[str]]:
    """Every queue that ever got a job, sorted."""
    [members] = yield Step((Command(("SMEMBERS", keys.queues)),))
    return sorted(text(m) for m in members)


class Locator:
    def __init__(self, keys: Keys) -> None:
        self._keys = keys
        self._lock = threading.Lock()
        self.where: dict[int, str] = {}
        """Job id -> the queue remembered for it."""

    def remember(self, job_id: int, queue: str) -> None:
        self.where[job_id] = queue
        if len(self.where) > MAX_REMEMBERED:
            self._forget_oldest()

    def remember_many(self, ids: Iterable[int], queue: str) -> None:
        self.where.update(dict.fromkeys(ids, queue))
        if len(self.where) > MAX_REMEMBERED:
            self._forget_oldest()

    def forget(self, job_id: int) -> None:
        """The remembered queue does not hold the job (any more)."""
        self.where.pop(job_id, None)

    def _forget_oldest(self) -> None:
        with self._lock:
            where = self.where
            for old in list(where)[: len(where) - MAX_REMEMBERED * 9 // 10]:
                where.pop(old, None)

    def locate(self, ids: Iterable[int], *, trust_memory: bool = True) -> Op[dict[int, str]]:
        """The queue of each id that exists; ids of no job are left out."""
        found: dict[int, str] = {}
        unknown: list[int] = []
        where = self.where
        for job_id in ids:
            queue = where.get(job_id) if trust_memory else None
            if queue is None:
                unknown.append(job_id)
            else:
                found[job_id] = queue
        if unknown:
            queues = yield from known_queues(self._keys)
            if queues:
                calls = tuple(
                    Command(("EXISTS", self._keys.queue(q).job(i))) for i in unknown for q in queues
                )
                replies = iter((yield Step(calls)))
                for job_id in unknown:
                    for queue in queues:
                        if next(replies):
                            found[job_id] = queue
                            self.remember(job_id, queue)
        return found
