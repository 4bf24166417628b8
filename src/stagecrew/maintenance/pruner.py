"""Deletes finished jobs past their retention, expired limit records, the records of workers
long gone and old job counts, in small batches."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ..backends.base import Backend, Retention
from ..backends.job_counts import COUNTS_KEEP
from ..backends.worker_registry import WORKER_KEEP

log = logging.getLogger("stagecrew.maintenance")

BATCH = 500
MAX_BATCHES_PER_RUN = 20


async def prune_finished(backend: Backend, retention: Retention) -> int:
    """Delete in batches of `BATCH`, yielding between them so no lock is held long; then the
    limit records that expired (a bucket idle that long is full again), then the records of
    workers last seen more than `WORKER_KEEP` ago and the job counts older than `COUNTS_KEEP`."""
    total = await _in_batches(lambda limit: backend.prune_async(retention, limit))
    if total:
        log.info("pruned %d finished jobs past retention", total)
    expired = await _in_batches(backend.prune_limits_async)
    if expired:
        log.debug("pruned %d expired limit records", expired)
    gone = await _in_batches(lambda limit: backend.prune_workers_async(WORKER_KEEP, limit))
    if gone:
        log.debug("pruned the records of %d workers last seen over a day ago", gone)
    await _in_batches(lambda limit: backend.prune_counts_async(COUNTS_KEEP, limit))
    return total


async def _in_batches(prune: Callable[[int], Awaitable[int]]) -> int:
    total = 0
    for _ in range(MAX_BATCHES_PER_RUN):
        removed = await prune(BATCH)
        total += removed
        if removed < BATCH:
            break
        await asyncio.sleep(0.01)
    return total
