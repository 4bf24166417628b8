"""Writes attempt outcomes to the store in batches.

Batching is safe because a job stays in flight (its lease renewed by the
heartbeat) until its ack is durable: if the process dies with acks still
buffered, those jobs run again after their lease expires, which is the
at-least-once contract. An ack the store rejects (fenced) is logged and
dropped: the job belongs to a newer claim. So is an ack still waiting here
when a heartbeat reports its claim's lease lost (`drop`): it could only be
refused, and a re-sent one must never reach a job another worker holds.

One ack the store refuses must never hold back the others. When a batch
fails, the completer asks the store a cheap question (a read): a store that
does not answer is down, and everything waits with backoff, as it must. A
store that answers refused something in the batch: the batch is split until
every ack the store takes is written, and an ack it refuses on its own is set
aside, its error text escaped if that may help, and retried on its own with a
backoff of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from ..backends.base import Ack, AckKind, Backend
from ..job import AttemptError, ErrorKind, JobRef
from .faults import FaultPoint, Faults

log = logging.getLogger("stagecrew.worker")

MAX_BATCH = 500
RETRY_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
"""Waits between tries while the store is down."""
SET_ASIDE_DELAYS = (0.05, 0.25, 1.0, 5.0, 30.0)
"""Waits between tries of an ack the store refused on its own while it took others."""
LAST_RESORT_AFTER = len(SET_ASIDE_DELAYS) + 1
"""Refusals of one ack (the store answering meanwhile) after which it is replaced by the
smallest outcome that says so: after about half a minute of them, its lease renewed all along."""


@dataclass(slots=True)
class _SetAside:
    ack: Ack
    next_try: float
    """In event-loop time."""
    refusals: int = 1


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
        self._aside: list[_SetAside] = []
        self._outages = 0
        """Rounds in a row that found the store down."""
        self._resume_at = 0.0
        """While the store is down: when to try again (event-loop time)."""
        self._writing = False
        self._dropped: set[JobRef] = set()
        """Claims dropped while a round was writing: none of their acks is tried again."""
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._abandoned = False

    def submit(self, ack: Ack) -> None:
        self._pending.append(ack)
        self._idle.clear()
        self._wake.set()

    def drop(self, ref: JobRef) -> None:
        """Forget every outcome of the claim `ref` not yet written to the store.

        Called when a heartbeat reports that claim's lease lost: its outcome
        would be refused by the fence anyway. One already on its way to the
        store is not recalled (the fence decides it), but is not sent again
        if that write fails.
        """
        self._pending = [ack for ack in self._pending if ack.ref != ref]
        self._aside = [item for item in self._aside if item.ack.ref != ref]
        if self._writing:
            self._dropped.add(ref)
        elif not self._pending and not self._aside:
            self._idle.set()

    @property
    def pending(self) -> int:
        """Acks not written yet, those set aside included."""
        return len(self._pending) + len(self._aside)

    async def flushed(self) -> None:
        """Wait until every submitted ack was written (or rejected by the fence)."""
        await self._idle.wait()

    async def run(self) -> None:
        """Flush loop; returns after `close()` once everything submitted is written, or at
        its next turn after `abandon()`."""
        loop = asyncio.get_running_loop()
        while not self._abandoned:
            now = loop.time()
            if now >= self._resume_at:
                # set-aside outcomes first, so that a steady flow of new ones cannot starve them
                due = [item for item in self._aside if item.next_try <= now]
                for item in due:
                    if item in self._aside and not self._abandoned:  # not dropped meanwhile
                        await self._retry_alone(item)
                if self._pending:
                    await self._write_round()
                    continue
                if due:
                    continue
            if not self._pending and not self._aside:
                self._idle.set()
                if self._closing:
                    return
            self._wake.clear()
            await self._sleep_until(self._next_due())
            # let jobs that finish in the same loop turn join this batch
            await asyncio.sleep(0)

    def close(self) -> None:
        self._closing = True
        self._wake.set()

    def abandon(self) -> None:
        """Make `run` return at its next turn, whatever is still unwritten.

        For a worker that waits no longer: the jobs whose outcomes are left unwritten run
        again once their leases expire, as if the process had ended. `run` checks this after
        each store call, so it returns even if a cancellation sent with this is lost in one.
        """
        self._abandoned = True
        self._wake.set()

    # -- one round -------------------------------------------------------------
    async def _write_round(self) -> None:
        batch = self._pending[: self.max_batch]
        del self._pending[: len(batch)]
        if self.faults is not None:
            self.faults.soon(FaultPoint.DURING_ACK)
        self._writing = True
        try:
            await self._write_batch(batch)
        finally:
            self._writing = False
            self._dropped.clear()

    def _kept(self, acks: list[Ack]) -> list[Ack]:
        """`acks` less those of claims dropped during this round."""
        if not self._dropped:
            return acks
        return [ack for ack in acks if ack.ref not in self._dropped]

    async def _write_batch(self, batch: list[Ack]) -> None:
        failure = await self._write(batch)
        if failure is None:
            self._outages = 0
            return
        if len(batch) > 1 and not await self._store_answers(batch[0]):
            self._store_down(batch, failure)
            return
        unwritten = await self._separate(batch, failure)
        if unwritten:
            self._store_down(unwritten, failure)
        else:
            self._outages = 0

    async def _separate(self, batch: list[Ack], failure: Exception) -> list[Ack]:
        """Write what the store takes of `batch` in smaller writes; set aside what it refuses alone.

        Returns the acks left unwritten because the store stopped answering meanwhile.
        """
        refused: deque[tuple[list[Ack], Exception]] = deque([(batch, failure)])
        while refused:
            part, failure = refused.popleft()
            part = self._kept(part)
            if not part:
                continue
            if len(part) == 1:
                if not await self._store_answers(part[0]):
                    return [ack for rest, _ in ((part, failure), *refused) for ack in rest]
                if self._kept(part):  # not dropped while the store was asked
                    self._set_aside(part[0], failure)
                continue
            middle = len(part) // 2
            for half in (part[:middle], part[middle:]):
                half_failure = await self._write(half)
                if half_failure is not None:
                    refused.append((half, half_failure))
        return []

    def _store_down(self, unwritten: list[Ack], failure: Exception) -> None:
        """Everything waits, in order, and the next round tries again after a backoff."""
        self._pending[:0] = self._kept(unwritten)
        delay = RETRY_DELAYS[min(self._outages, len(RETRY_DELAYS) - 1)]
        self._outages += 1
        self._resume_at = asyncio.get_running_loop().time() + delay
        log.warning(
            "could not write %d acks (%s); retrying in %.2fs", len(unwritten), failure, delay
        )

    # -- acks set aside ----------------------------------------------------------
    def _set_aside(self, ack: Ack, failure: Exception) -> None:
        repaired = _repaired(ack)
        log.error(
            "job %s claim %s: the store refused outcome %s on its own (%s); the other "
            "outcomes go on, this one is retried on its own%s",
            ack.ref.id,
            ack.ref.token,
            ack.kind,
            failure,
            " with its error text escaped" if repaired is not ack else "",
        )
        now = asyncio.get_running_loop().time()
        if repaired is not ack:  # worth a try at once
            self._aside.append(_SetAside(repaired, next_try=now))
        else:
            self._aside.append(_SetAside(ack, next_try=now + SET_ASIDE_DELAYS[0]))

    async def _retry_alone(self, item: _SetAside) -> None:
        self._writing = True
        try:
            failure = await self._write([item.ack])
        finally:
            self._writing = False
            dropped = item.ack.ref in self._dropped
            self._dropped.clear()
        if failure is None or dropped:
            if item in self._aside:
                self._aside.remove(item)
            if failure is not None:
                return
            log.warning(
                "job %s claim %s: outcome %s written after %d refusals",
                item.ack.ref.id,
                item.ack.ref.token,
                item.ack.kind,
                item.refusals,
            )
            return
        if await self._store_answers(item.ack):  # a refusal; a store that is down proves nothing
            item.refusals += 1
            if item.refusals == LAST_RESORT_AFTER:
                item.ack = _last_resort(item.ack, failure)
        delay = SET_ASIDE_DELAYS[min(item.refusals - 1, len(SET_ASIDE_DELAYS) - 1)]
        item.next_try = asyncio.get_running_loop().time() + delay
        log.warning(
            "job %s claim %s: the store refused outcome %s again (%s); retrying in %.2fs",
            item.ack.ref.id,
            item.ack.ref.token,
            item.ack.kind,
            failure,
            delay,
        )

    # -- the store ---------------------------------------------------------------
    async def _write(self, batch: Sequence[Ack]) -> Exception | None:
        """Write `batch` in one call; the failure, or None once written and reported."""
        try:
            applied = await self.backend.ack_async(batch)
        except Exception as exc:
            return exc
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
        return None

    async def _store_answers(self, ack: Ack) -> bool:
        """Whether the store answers a read now: a refused write is then about the acks."""
        try:
            await self.backend.get_async(ack.ref.id)
        except Exception:
            return False
        return True

    def _next_due(self) -> float | None:
        """When the loop has something to try without a new submit (event-loop time)."""
        if self._pending:
            return self._resume_at
        if self._aside:
            return max(self._resume_at, min(item.next_try for item in self._aside))
        return None

    async def _sleep_until(self, when: float | None) -> None:
        """Until a submit or close wakes the loop, or `when` comes."""
        if when is None:
            await self._wake.wait()
            return
        timeout = when - asyncio.get_running_loop().time()
        if timeout > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)


def _repaired(ack: Ack) -> Ack:
    """`ack` with its error text reduced to escaped ASCII, or `ack` itself if that changes nothing.

    Every `AttemptError` is already storable by every engine (see `storable_text`);
    this is the last resort for a store that refuses some other text.
    """
    error = ack.error
    if error is None:
        return ack
    fields = {name: getattr(error, name) for name in ("type", "message", "traceback")}
    escaped = {name: _ascii(text) for name, text in fields.items()}
    if escaped == fields:
        return ack
    return replace(ack, error=AttemptError(error.attempt, error.at, error.kind, **escaped))


def _ascii(text: str) -> str:
    return text.encode("ascii", "backslashreplace").decode("ascii")


def _last_resort(ack: Ack, failure: Exception) -> Ack:
    """The smallest storable outcome that still tells what happened to the attempt.

    Its error is plain ASCII with no traceback, and a success whose result the store keeps
    refusing becomes a dead job saying so (the function ran; its result could not be kept),
    so that the job leaves `running` instead of holding its lease for ever.
    """
    attempt = ack.error.attempt if ack.error is not None else 0
    at = ack.error.at if ack.error is not None else time.time()
    reason = _ascii(f"the store refused this attempt's outcome ({ack.kind}): {failure}")[:500]
    error = AttemptError(attempt, at, ErrorKind.ERROR, "OutcomeRefused", reason)
    if ack.kind is AckKind.COMPLETE:
        return replace(Ack.dead_letter(ack.ref, error), in_workflow=ack.in_workflow)
    return replace(ack, error=error)
