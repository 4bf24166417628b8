"""Writes attempt outcomes to the store in batches.

Batching is safe because a job stays in flight (its lease renewed by the
heartbeat) until its ack is durable: if the process dies with acks still
buffered, those jobs run again after their lease expires, which is the
at-least-once contract. An ack the store rejects (fenced) is logged and
dropped: the job belongs to a newer claim. So is an ack still waiting here
when a heartbeat reports its claim's lease lost (`drop`): it could only be
refused, and a re-sent one must never reach a job another worker holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..backends.base import Ack, Backend
from ..job import JobRef
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
        self._writing: list[Ack] = []
        """The batch being written: out of `_pending`, so `drop` cannot shift what is deleted."""
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False

    def submit(self, ack: Ack) -> None:
        self._pending.append(ack)
        self._idle.clear()
        self._wake.set()

    def drop(self, ref: JobRef) -> None:
        """Forget every outcome of the claim `ref` not yet sent to the store.

        Called when a heartbeat reports that claim's lease lost: its outcome
        would be refused by the fence anyway. One already on its way to the
        store is not recalled (the fence decides it), but is not sent again
        if that write fails.
        """
        self._pending = [ack for ack in self._pending if ack.ref != ref]
        self._writing = [ack for ack in self._writing if ack.ref != ref]
        if not self._pending and not self._writing:
            self._idle.set()

    @property
    def pending(self) -> int:
        return len(self._pending) + len(self._writing)

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
            del self._pending[: len(batch)]
            self._writing = batch
            if self.faults is not None:
                self.faults.soon(FaultPoint.DURING_ACK)
            try:
                applied = await self.backend.ack_async(batch)
            except Exception as exc:
                self._pending[:0] = self._writing  # less what `drop` removed meanwhile
                self._writing = []
                delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
                failures += 1
                log.warning(
                    "could not write %d acks (%s); retrying in %.2fs", len(batch), exc, delay
                )
                await asyncio.sleep(delay)
                continue
            self._writing = []
            failures = 0
            for ack, ok in zip(batch, applied, strict=True):
                if not ok:
                    log.warning(
                        "job %s claim %s: outcome %s rejected, the lease was lost "
                        "(another claim owns the job now)",
                        ack.ref.id,
                        ack.ref.token,
                        ack.kind,
                    )
                self.on_written(ack, ok)

    def close(self) -> None:
        self._closing = True
        self._wake.set()
