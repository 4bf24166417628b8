"""Circuit breakers at the start and the end of a job, for one worker.

Before a claimed batch starts, each circuit its jobs sit behind lets them through, or some of
them as probes (half-open), or none (open): the worker reads the circuit's record (at most
once a `FRESH` second while it is closed, so a closed circuit costs a read a second, not one
a batch) and writes it only when the gate changes it (probes taken, open turned half-open).
The jobs held back go back to the store, their attempt not counted, to be claimed again when
the circuit may let them through.

When an attempt of a circuit's task ends, its outcome is counted in the circuit's record:
outcomes that end while a write is on are counted together in the next write, so a busy
worker makes fewer writes, not more. Every write is a compare-and-set (`swap_limits`),
computed again from the record the store sends back when another worker wrote it first.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ..app import App
from ..backends.base import Ack, AckKind
from ..backends.limit_states import MAX_LIMIT_TTL, SWAP_TRIES, LimitState, LimitSwap
from ..job import ClaimedJob
from ..limits.circuit import Circuit, CircuitState, gate, record

log = logging.getLogger("stagecrew.worker")

FRESH = 1.0
"""Seconds a closed circuit's record read by this worker is trusted: a circuit another worker
opened holds this worker's jobs back within that long."""
STORE_DOWN_DELAY = 1.0
"""Seconds after which jobs whose circuit could not be read are claimed again."""

FAILED = (AckKind.RETRY, AckKind.DEAD_LETTER)
"""Outcomes that count as a failure; a success counts as one; the others (snooze, cancel,
hand-back) as neither."""


@dataclass(frozen=True, slots=True)
class Gated:
    passed: list[ClaimedJob]
    """The jobs to go on with, in claim order."""
    held: dict[int, float]
    """The jobs to hand back, by id, with the seconds after which they are claimed again."""


class CircuitGates:
    """The circuits of one worker's tasks, the records it read last, and its probes."""

    def __init__(self, app: App, store_now: Callable[[], float]) -> None:
        self.app = app
        self.circuits = {t.name: t.circuit for t in app.tasks.values() if t.circuit is not None}
        self._store_now = store_now
        self._seen: dict[str, tuple[LimitState | None, float]] = {}
        """Each circuit's record as last read or written, and when (this worker's clock)."""
        self._probes: set[int] = set()
        """Jobs this worker let through as probes, until their outcome is counted."""
        self._outcomes: dict[str, Counter[str]] = {}
        self._writer: asyncio.Future[None] | None = None
        self._written: asyncio.Event | None = None

    async def _record_of(self, circuit: Circuit, *, fresh: bool) -> tuple[LimitState | None, float]:
        """The circuit's record and the store's now: the one seen last if `fresh` allows."""
        seen = self._seen.get(circuit.record_name)
        local_now = self.app.clock.now()
        if fresh and seen is not None and local_now - seen[1] < FRESH:
            return seen[0], self._store_now()
        read = await self.app.backend.read_limits_async([circuit.record_name])
        record_ = read.states.get(circuit.record_name)
        self._seen[circuit.record_name] = (record_, local_now)
        return record_, read.now

    async def admit(self, jobs: Sequence[ClaimedJob]) -> Gated:
        groups: dict[str, list[ClaimedJob]] = {}
        for job in jobs:
            circuit = self.circuits.get(job.task)
            if circuit is not None:
                groups.setdefault(circuit.name, []).append(job)
        held: dict[int, float] = {}
        for group in groups.values():
            circuit = self.circuits[group[0].task]
            try:
                admitted, retry_in, probes = await self._gate(circuit, len(group))
            except Exception as exc:
                log.warning(
                    "circuit %s: could not be read (%s: %s); %d job(s) run again in %gs",
                    circuit.name,
                    type(exc).__name__,
                    exc,
                    len(group),
                    STORE_DOWN_DELAY,
                )
                admitted, retry_in, probes = 0, STORE_DOWN_DELAY, False
            if probes:
                self._probes.update(job.id for job in group[:admitted])
            held.update((job.id, retry_in) for job in group[admitted:])
        return Gated([job for job in jobs if job.id not in held], held)

    async def _gate(self, circuit: Circuit, count: int) -> tuple[int, float, bool]:
        """How many of `count` jobs pass, after how long the others come back, and whether
        those that pass are probes."""
        stored, now = await self._record_of(circuit, fresh=True)
        for _ in range(SWAP_TRIES):
            state = CircuitState.from_text(None if stored is None else stored.value)
            opened = gate(circuit, state, now, count)
            if opened.state == state:  # nothing to write (closed, or open and cooling down)
                return opened.admitted, opened.retry_in, opened.probes
            done = await self._swap(circuit, stored, opened.state, now)
            if done is None:
                return opened.admitted, opened.retry_in, opened.probes
            stored, now = done
        return 0, circuit.held_retry, False

    async def _swap(
        self, circuit: Circuit, stored: LimitState | None, state: CircuitState, now: float
    ) -> tuple[LimitState | None, float] | None:
        """Write `state` over `stored`; None if it was written, else the record as it is."""
        name = circuit.record_name
        swap = LimitSwap(
            name,
            None if stored is None else stored.version,
            state.to_text(),
            min(MAX_LIMIT_TTL, state.ttl(now)),
        )
        done = await self.app.backend.swap_limits_async([swap])
        self._seen[name] = (done.states.get(name), self.app.clock.now())
        if done.applied:
            before = CircuitState.from_text(None if stored is None else stored.value)
            self._log_change(circuit, before, state)
            return None
        return done.states.get(name), done.now

    def _log_change(self, circuit: Circuit, before: CircuitState, after: CircuitState) -> None:
        if before.state != after.state:
            log.warning("circuit %s: %s -> %s", circuit.name, before.state, after.state)

    def forget(self, job_ids: Iterable[int]) -> None:
        """These jobs will not run under this claim: no outcome of theirs is a probe's."""
        self._probes.difference_update(job_ids)

    async def record(self, job: ClaimedJob, ack: Ack) -> None:
        """Count the outcome of `job`'s attempt in its circuit (returns once it is written,
        or could not be)."""
        circuit = self.circuits.get(job.task)
        probe = job.id in self._probes
        self._probes.discard(job.id)
        if circuit is None:
            return
        if ack.kind is AckKind.COMPLETE:
            what = "probes_ok" if probe else "ok"
        elif ack.kind in FAILED:
            what = "probes_failed" if probe else "failed"
        else:
            return
        self._outcomes.setdefault(circuit.name, Counter())[what] += 1
        if self._writer is None or self._writer.done():
            self._written = asyncio.Event()
            self._writer = asyncio.ensure_future(self._write_outcomes(self._written))
        assert self._written is not None
        await self._written.wait()

    async def _write_outcomes(self, written: asyncio.Event) -> None:
        try:
            while self._outcomes:
                outcomes, self._outcomes = self._outcomes, {}
                for name, counts in outcomes.items():
                    circuit = next(c for c in self.circuits.values() if c.name == name)
                    try:
                        await self._count(circuit, counts)
                    except Exception as exc:
                        log.warning(
                            "circuit %s: outcomes not counted (%s: %s)",
                            name,
                            type(exc).__name__,
                            exc,
                        )
        finally:
            written.set()

    async def _count(self, circuit: Circuit, counts: Counter[str]) -> None:
        stored, now = await self._record_of(circuit, fresh=True)
        for _ in range(SWAP_TRIES):
            state = CircuitState.from_text(None if stored is None else stored.value)
            after = record(
                circuit,
                state,
                now,
                ok=counts["ok"],
                failed=counts["failed"],
                probes_ok=counts["probes_ok"],
                probes_failed=counts["probes_failed"],
            )
            if after == state:
                return
            done = await self._swap(circuit, stored, after, now)
            if done is None:
                return
            stored, now = done
        log.info("circuit %s: outcomes not counted, %d rounds lost", circuit.name, SWAP_TRIES)
