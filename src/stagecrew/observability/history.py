"""A worker's share of the store's history of finished attempts (`backends/job_counts.py`).

The worker counts each attempt's outcome in memory when the store has decided it (one dict
increment per job) and adds its counts to the store every `FLUSH_INTERVAL` seconds, and once
more when it stops: one small write per worker per interval, whatever its throughput. Counts
that could not be written are kept and added to the next write; a worker that dies loses at
most its last interval's counts (soft data: never a job).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..backends.base import Backend
from ..backends.job_counts import MAX_COUNT_KEYS, CountKey, check_counts
from ..job import ClaimedJob

log = logging.getLogger("stagecrew.worker")

FLUSH_INTERVAL = 5.0
ALONE_AFTER = 3
"""Failed flushes in a row after which the keys are written one by one (see `flush`)."""


class OutcomeHistory:
    def __init__(self, backend: Callable[[], Backend]) -> None:
        self._backend = backend
        self._pending: dict[CountKey, int] = {}
        self._failed_flushes = 0
        self._refused: set[CountKey] = set()
        self._keys: set[CountKey] = set()
        """The keys checked already: a key the store would refuse is never counted, so one
        odd name cannot make every later write of this worker's counts fail."""

    def count(self, job: ClaimedJob, outcome: str) -> None:
        key = CountKey(job.queue, job.task, outcome)
        if key not in self._keys:
            if key in self._refused:
                return
            try:
                check_counts({key: 1})
            except (ValueError, TypeError) as exc:
                log.warning("job %s is left out of the job counts: %s", job.id, exc)
                return
            self._keys.add(key)
        self._pending[key] = self._pending.get(key, 0) + 1

    @property
    def pending(self) -> int:
        """Attempts counted and not yet in the store."""
        return sum(self._pending.values())

    async def flush(self) -> None:
        """Add the pending counts to the store; those it could not write stay pending.

        After `ALONE_AFTER` flushes in a row failed, the keys are written one by one: a key
        the store refuses while it takes others is dropped (logged), so one key can never
        keep this worker's counts from the store; while it takes none, all stay pending (and
        a pass stops after two refusals without a write, so an outage costs two calls)."""
        if self._failed_flushes >= ALONE_AFTER:
            await self._flush_one_by_one()
            return
        while self._pending:
            batch = self._take(list(self._pending)[:MAX_COUNT_KEYS])
            try:
                await self._backend().add_counts_async(batch)
            except BaseException as exc:
                self._put_back(batch)
                if not isinstance(exc, Exception):
                    raise
                self._failed_flushes += 1
                log.warning("could not add this worker's job counts to the store (%s)", exc)
                return
        self._failed_flushes = 0

    async def _flush_one_by_one(self) -> None:
        refused: list[CountKey] = []
        written = 0
        for key in list(self._pending):
            batch = self._take([key])
            try:
                await self._backend().add_counts_async(batch)
                written += 1
            except BaseException as exc:
                self._put_back(batch)  # at the end of the order: the next pass starts elsewhere
                if not isinstance(exc, Exception):
                    raise
                refused.append(key)
                if not written and len(refused) >= 2:
                    return  # the store takes nothing: down, most likely; try again later
        if written and refused:
            for key in refused:
                dropped = self._pending.pop(key)
                self._refused.add(key)
                self._keys.discard(key)
                log.error(
                    "dropped %d counts of %s, and stopped counting it: the store refuses that "
                    "key while it takes the others",
                    dropped,
                    key,
                )
        if not refused:
            self._failed_flushes = 0

    def _take(self, keys: list[CountKey]) -> dict[CountKey, int]:
        return {key: self._pending.pop(key) for key in keys}

    def _put_back(self, batch: dict[CountKey, int]) -> None:
        for key, n in batch.items():
            self._pending[key] = self._pending.get(key, 0) + n
