"""Deletes finished jobs past their retention, and expired limit records, in small batches."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ..backends.base import Backend, Retention

log = logging.getLogger("stagecrew.maintenance")

BATCH = 500
MAX_BATCHES_PER_RUN = 20


async def prune_finished(backend: Backend, retention: Retention) -> int:
    """Delete in batches of `BATCH`, yielding between them so no lock is held long; then the
    limit records that expired (a bucket idle that long is full again)."""
    total = await _in_batches(lambda limit: backend.prune_async(retention, limit))
    if total:
        log.info("pruned %d finished jobs past retention", total)
    expired = await _in_batches(backend.prune_limits_async)
    if expired:
        log.debug("pruned %d expired limit records", expired)
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
