"""Limits at the start of a job: circuit breakers (`circuits`), then rate limits, whose tokens
each claimed batch draws in one store write.

A worker claims a batch, then asks the store for the tokens of its rate-limited jobs: one
`swap_limits` for the whole batch, computed from the buckets this worker saw last (so that
the usual case is one round trip) and computed again from the buckets the store sends back
when another worker changed them first. The jobs that got a token start: at once, or at the
moment their token comes free if that is within `LOCAL_WAIT` (so that jobs booked a few
milliseconds apart, claimed together, are not booked again for want of a burst). The others
go back to the store at once, booked at the times their tokens come free, their attempt not
counted (`Ack.release` with a delay). No worker holds a job longer than `LOCAL_WAIT` for a
limit, and none spins on one.

Times are the store's: the buckets hold store times, and each reply carries the store's now,
so this worker's clock only serves to guess the store's now between replies.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from ..app import App
from ..backends.limit_states import MAX_LIMIT_TTL, SWAP_TRIES, LimitState, LimitSwap
from ..errors import StagecrewError
from ..job import ClaimedJob, RateLimited
from ..limits.rate import Bucket, RateLimit, slow_down, take
from ..serialization import decode_payload
from .circuits import CircuitGates

log = logging.getLogger("stagecrew.worker")

LOCAL_WAIT = 0.05
"""Seconds a worker holds a claimed job whose token comes free that soon, rather than book it:
about two of its idle waits, the granularity at which booked jobs come back."""
AHEAD = 0.1
"""Seconds' worth of tokens a worker may take ahead from a bucket far from empty, for its next
batches (`limits.rate.take`): a limit far from reached costs a draw per `AHEAD`, not per batch."""
CONTENDED_DELAY = 0.05
"""Seconds after which the jobs of a batch that lost every round are claimed again."""
STORE_DOWN_DELAY = 1.0
"""Seconds after which the jobs of a batch whose tokens could not be asked for run again."""
MAX_SEEN = 10_000
"""Buckets remembered (per-key limits have one per key); past that, forgotten and read again."""


Wanted = list[tuple[str, RateLimit, ClaimedJob]]
"""A batch's rate-limited jobs, each with its bucket's name and its limit, in claim order."""


@dataclass(frozen=True, slots=True)
class Admitted:
    """What one batch's admission decided."""

    start: dict[int, float]
    """The jobs to run, by id, each with the seconds (at most `LOCAL_WAIT`) until its token
    is there; a job in neither map starts at once."""
    held: dict[int, float]
    """The jobs to hand back, by id, each with the seconds (from the store's now) it waits."""


class Admission:
    """The rate limits and circuits of one worker's tasks, and the records it saw last."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.limits = {
            task.name: task.rate_limit for task in app.tasks.values() if task.rate_limit is not None
        }
        self._seen: dict[str, LimitState | None] = {}
        self._ahead: dict[str, tuple[int, float]] = {}
        """Tokens taken ahead, by bucket: how many, and until when (this worker's clock)."""
        self._pending: list[tuple[Wanted, asyncio.Future[Admitted]]] = []
        """Batches waiting for the next draw (one draw at a time: each computes from the
        buckets the one before it wrote)."""
        self._drawer: asyncio.Future[None] | None = None
        self._offset = 0.0
        """The store's now minus this worker's, as of the last reply."""
        self.circuits = (
            CircuitGates(app, self._store_now)
            if any(t.circuit for t in app.tasks.values())
            else None
        )

    def _store_now(self) -> float:
        return self.app.clock.now() + self._offset

    def _record_name(self, job: ClaimedJob, limit: RateLimit) -> str | None:
        """The record this job draws from; None if its limit is per key and it has none."""
        if limit.key is None:
            return limit.record_name(job.task)
        task = self.app.tasks[job.task]
        try:
            payload = job.payload
            if self.app._signer is not None:
                payload = self.app._signer.verify(job.task, payload)
            args, kwargs = decode_payload(payload)
            key = task.rate_key_of(limit.key, args, kwargs)
        except StagecrewError as exc:
            # the run itself reports an unreadable payload; a key function that fails now
            # (the code changed since the enqueue checked it) must not strand the job
            log.warning("job %s: no rate-limit key (%s); it runs without the limit", job.id, exc)
            return None
        return None if key is None else limit.record_name(job.task, key)

    async def admit(self, jobs: Sequence[ClaimedJob]) -> Admitted:
        """Which of these claimed jobs start, and when; when the others are booked to run.

        Batches claimed while a draw is on wait for it to end and then draw together, in
        one store call: a busy worker makes fewer draws, not more. Jobs in no limit's
        bucket are in neither of the answer's maps (they start at once)."""
        circuit_held: dict[int, float] = {}
        if self.circuits is not None:
            gated = await self.circuits.admit(jobs)
            jobs, circuit_held = gated.passed, gated.held
        wanted: Wanted = []
        for job in jobs:
            limit = self.limits.get(job.task)
            name = None if limit is None else self._record_name(job, limit)
            if name is not None and limit is not None:
                wanted.append((name, limit, job))
        if not wanted:
            return Admitted({}, circuit_held)
        answer: asyncio.Future[Admitted] = asyncio.get_running_loop().create_future()
        self._pending.append((wanted, answer))
        if self._drawer is None or self._drawer.done():
            self._drawer = asyncio.ensure_future(self._draw_pending())
        drawn = await asyncio.shield(answer)
        if self.circuits is not None:
            self.circuits.forget(drawn.held)  # a probe booked for want of a token never ran
        if not circuit_held:
            return drawn
        return Admitted(drawn.start, {**drawn.held, **circuit_held})

    async def _draw_pending(self) -> None:
        """Draw for every batch waiting, together, until none is left."""
        batches: list[tuple[Wanted, asyncio.Future[Admitted]]] = []
        try:
            while self._pending:
                batches, self._pending = self._pending, []
                decided = await self._draw_together([wanted for wanted, _ in batches])
                for _, answer in batches:
                    if not answer.done():
                        answer.set_result(decided)
        finally:  # unanswered only if this task itself was cancelled: fail them, never hang
            for _, answer in [*batches, *self._pending]:
                if not answer.done():
                    answer.set_exception(RuntimeError("the rate-limit draw was cancelled"))

    async def _draw_together(self, batches: list[Wanted]) -> Admitted:
        groups: dict[str, list[ClaimedJob]] = {}
        limits: dict[str, RateLimit] = {}
        for wanted in batches:
            for name, limit, job in wanted:
                groups.setdefault(name, []).append(job)
                limits[name] = limit
        try:
            start, held = await self._draw(groups, limits)
        except Exception as exc:
            log.warning(
                "could not draw rate-limit tokens (%s: %s); %d job(s) run again in %gs",
                type(exc).__name__,
                exc,
                sum(len(g) for g in groups.values()),
                STORE_DOWN_DELAY,
            )
            start = []
            held = [(job, STORE_DOWN_DELAY) for group in groups.values() for job in group]
        return Admitted(
            {job.id: wait for job, wait in start}, {job.id: delay for job, delay in held}
        )

    def _spend_ahead(
        self, groups: dict[str, list[ClaimedJob]]
    ) -> tuple[list[tuple[ClaimedJob, float]], dict[str, list[ClaimedJob]]]:
        """Start what the tokens taken ahead cover; the groups still to draw for."""
        start: list[tuple[ClaimedJob, float]] = []
        rest: dict[str, list[ClaimedJob]] = {}
        local_now = self.app.clock.now()
        for name, group in groups.items():
            count, until = self._ahead.pop(name, (0, 0.0))
            if until <= local_now:
                count = 0
            used = min(count, len(group))
            start.extend((job, 0.0) for job in group[:used])
            if count > used:
                self._ahead[name] = (count - used, until)
            if used < len(group):
                rest[name] = group[used:]
        return start, rest

    async def _draw(
        self, groups: dict[str, list[ClaimedJob]], limits: dict[str, RateLimit]
    ) -> tuple[list[tuple[ClaimedJob, float]], list[tuple[ClaimedJob, float]]]:
        covered, groups = self._spend_ahead(groups)
        if not groups:
            return covered, []
        backend = self.app.backend
        now = self._store_now()
        for _ in range(SWAP_TRIES):
            swaps, taken = [], {}
            for name, group in groups.items():
                seen = self._seen.get(name)
                bucket = Bucket.from_text(None if seen is None else seen.value)
                drawn = take(limits[name], bucket, now, len(group), LOCAL_WAIT, AHEAD)
                taken[name] = drawn
                expected = None if seen is None else seen.version
                swaps.append(
                    LimitSwap(name, expected, drawn.bucket.to_text(), _ttl(drawn.bucket, now))
                )
            done = await backend.swap_limits_async(swaps)
            self._offset = done.now - self.app.clock.now()
            if len(self._seen) > MAX_SEEN:
                self._seen.clear()
            for name in groups:
                self._seen[name] = done.states.get(name)
            if done.applied:
                start = covered
                held: list[tuple[ClaimedJob, float]] = []
                until = self.app.clock.now() + AHEAD
                for name, group in groups.items():
                    drawn = taken[name]
                    if drawn.ahead:
                        self._ahead[name] = (drawn.ahead, until)
                    start.extend(
                        (job, max(0.0, at - done.now))
                        for job, at in zip(group, drawn.start_at, strict=False)
                    )
                    held.extend(
                        (job, max(0.0, at - done.now))
                        for job, at in zip(group[drawn.admitted :], drawn.run_at, strict=True)
                    )
                return start, held
            now = done.now
        log.info("rate limits contended: %d round(s) lost; booking the batch", SWAP_TRIES)
        return covered, [(job, CONTENDED_DELAY) for group in groups.values() for job in group]

    async def slow_down(self, job: ClaimedJob, limited: RateLimited) -> None:
        """The job's remote end said "too many requests": pause and slow its limit."""
        limit = self.limits.get(job.task)
        name = None if limit is None else self._record_name(job, limit)
        if name is None or limit is None:
            return
        backend = self.app.backend
        self._ahead.pop(name, None)
        try:
            read = await backend.read_limits_async([name])
            now, seen = read.now, read.states.get(name)
            for _ in range(SWAP_TRIES):
                bucket = slow_down(
                    limit,
                    Bucket.from_text(None if seen is None else seen.value),
                    now,
                    limited.retry_after,
                )
                expected = None if seen is None else seen.version
                done = await backend.swap_limits_async(
                    [LimitSwap(name, expected, bucket.to_text(), _ttl(bucket, now))]
                )
                self._seen[name] = seen = done.states.get(name)
                now = done.now
                if done.applied:
                    log.warning(
                        "rate limit %s: rate limited by the remote end; paused %gs, then at %g "
                        "of its rate for %gs",
                        name,
                        limited.retry_after,
                        limit.slowdown,
                        limit.cooldown,
                    )
                    return
        except Exception as exc:
            log.warning(
                "rate limit %s: could not slow it down (%s: %s)", name, type(exc).__name__, exc
            )


def _ttl(bucket: Bucket, now: float) -> float:
    return min(MAX_LIMIT_TTL, bucket.ttl(now))
