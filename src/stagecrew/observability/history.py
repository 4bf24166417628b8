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


class OutcomeHistory:
    def __init__(self, backend: Callable[[], Backend]) -> None:
        self._backend = backend
        self._pending: dict[CountKey, int] = {}
        self._keys: set[CountKey] = set()
        """The keys checked already: a key the store would refuse is never counted, so one
        odd name cannot make every later write of this worker's counts fail."""

    def count(self, job: ClaimedJob, outcome: str) -> None:
        key = CountKey(job.queue, job.task, outcome)
        if key not in self._keys:
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
        """Add the pending counts to the store; those it could not write stay pending."""
        while self._pending:
            keys = list(self._pending)[:MAX_COUNT_KEYS]
            batch = {key: self._pending.pop(key) for key in keys}
            try:
                await self._backend().add_counts_async(batch)
            except Exception as exc:
                for key, n in batch.items():
                    self._pending[key] = self._pending.get(key, 0) + n
                log.warning("could not add this worker's job counts to the store (%s)", exc)
                return
