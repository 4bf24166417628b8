"""Writes attempt outcomes to the store in batches.

Batching is safe because a job stays in flight (its lease renewed by the
heartbeat) until its ack is durable: if the process dies with acks still
buffered, those jobs run again after their lease expires, which is the
at-least-once contract. An ack the store rejects (fenced) is logged and
dropped: the job belongs to a newer attempt.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..backends.base import Ack, Backend
from .faults import FaultPoint, Faults

log = logging.getLogger("stagecrew.worker")

MAX_BATCH = 500
RETRY_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


class Completer:
    def __init__(
        self,
        backend: Backend,
        on_written: Callable[[Ack, bool], None],
        *,
        max_batch: int = MAX_BATCH,
        faults: Faults | None = None,
    ) -> None:
        self.backend = backend
        self.faults = faults
        self.on_written = on_written
        self.max_batch = max_batch
        self._pending: list[Ack] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False

    def submit(self, ack: Ack) -> None:
        self._pending.append(ack)
        self._idle.clear()
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flushed(self) -> None:
        """Wait until every submitted ack was written (or rejected by the fence)."""
        await self._idle.wait()

    async def run(self) -> None:
        """Flush loop; returns after `close()` once everything submitted is written."""
        failures = 0
        while True:
            if not self._pending:
                self._idle.set()
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                # let jobs that finish in the same loop turn join this batch
                await asyncio.sleep(0)
                continue
            batch = self._pending[: self.max_batch]
            if self.faults is not None:
                self.faults.soon(FaultPoint.DURING_ACK)
            try:
                applied = await self.backend.ack_async(batch)
            except Exception as exc:
                delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
                failures += 1
                log.warning(
                    "could not write %d acks (%s); retrying in %.2fs", len(batch), exc, delay
                )
                await asyncio.sleep(delay)
                continue
            failures = 0
            del self._pending[: len(batch)]
            for ack, ok in zip(batch, applied, strict=True):
                if not ok:
                    log.warning(
                        "job %s attempt %s: outcome %s rejected, the lease was lost "
                        "(another attempt owns the job now)",
                        ack.ref.id,
                        ack.ref.attempt,
                        ack.kind,
                    )
                self.on_written(ack, ok)

    def close(self) -> None:
        self._closing = True
        self._wake.set()
