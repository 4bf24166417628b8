"""Deletes finished jobs past their retention, in small batches."""

from __future__ import annotations

import asyncio
import logging

from ..backends.base import Backend, Retention

log = logging.getLogger("stagecrew.maintenance")

BATCH = 500
MAX_BATCHES_PER_RUN = 20


async def prune_finished(backend: Backend, retention: Retention) -> int:
    """Delete in batches of `BATCH`, yielding between them so no lock is held long."""
    total = 0
    for _ in range(MAX_BATCHES_PER_RUN):
        removed = await backend.prune_async(retention, BATCH)
        total += removed
        if removed < BATCH:
            break
        await asyncio.sleep(0.01)
    if total:
        log.info("pruned %d finished jobs past retention", total)
    return total
