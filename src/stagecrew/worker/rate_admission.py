"""Rate limits at the start of a job: each claimed batch draws its tokens in one store write.

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

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from ..app import App
from ..backends.limit_states import MAX_LIMIT_TTL, LimitState, LimitSwap
from ..errors import StagecrewError
from ..job import ClaimedJob, RateLimited
from ..limits.rate import Bucket, RateLimit, slow_down, take
from ..serialization import decode_payload

log = logging.getLogger("stagecrew.worker")

LOCAL_WAIT = 0.05
"""Seconds a worker holds a claimed job whose token comes free that soon, rather than book it:
about two of its idle waits, the granularity at which booked jobs come back."""
MAX_TRIES = 8
"""Compare-and-set rounds before a batch gives up for now (its jobs are booked a little later)."""
CONTENDED_DELAY = 0.05
"""Seconds after which the jobs of a batch that lost every round are claimed again."""
STORE_DOWN_DELAY = 1.0
"""Seconds after which the jobs of a batch whose tokens could not be asked for run again."""
MAX_SEEN = 10_000
"""Buckets remembered (per-key limits have one per key); past that, forgotten and read again."""


@dataclass(frozen=True, slots=True)
class Admitted:
    """What one batch's admission decided."""

    start: list[tuple[ClaimedJob, float]]
    """The jobs to run, in claim order, each with the seconds (at most `LOCAL_WAIT`) until
    its token is there."""
    held: list[tuple[ClaimedJob, float]]
    """The jobs to hand back, each with the seconds (from the store's now) it waits."""


class RateAdmission:
    """The rate limits of one worker's tasks, and the buckets it saw last."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.limits = {
            task.name: task.rate_limit for task in app.tasks.values() if task.rate_limit is not None
        }
        self._seen: dict[str, LimitState | None] = {}
        self._offset = 0.0
        """The store's now minus this worker's, as of the last reply."""

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
        """Which of these claimed jobs start now; when the others are booked to run."""
        groups: dict[str, list[ClaimedJob]] = {}
        limits: dict[str, RateLimit] = {}
        waits: dict[int, float] = {}
        for job in jobs:
            limit = self.limits.get(job.task)
            name = None if limit is None else self._record_name(job, limit)
            if name is None or limit is None:
                waits[job.id] = 0.0
                continue
            groups.setdefault(name, []).append(job)
            limits[name] = limit
        if not groups:
            return Admitted([(job, 0.0) for job in jobs], [])
        held: list[tuple[ClaimedJob, float]] = []
        try:
            decided = await self._draw(groups, limits)
        except Exception as exc:
            log.warning(
                "could not draw rate-limit tokens (%s: %s); %d job(s) run again in %gs",
                type(exc).__name__,
                exc,
                sum(len(g) for g in groups.values()),
                STORE_DOWN_DELAY,
            )
            decided = None
        if decided is None:
            held = [(job, STORE_DOWN_DELAY) for group in groups.values() for job in group]
        else:
            start, held = decided
            waits.update((job.id, wait) for job, wait in start)
        return Admitted([(job, waits[job.id]) for job in jobs if job.id in waits], held)

    async def _draw(
        self, groups: dict[str, list[ClaimedJob]], limits: dict[str, RateLimit]
    ) -> tuple[list[tuple[ClaimedJob, float]], list[tuple[ClaimedJob, float]]]:
        backend = self.app.backend
        now = self._store_now()
        for _ in range(MAX_TRIES):
            swaps, taken = [], {}
            for name, group in groups.items():
                seen = self._seen.get(name)
                bucket = Bucket.from_text(None if seen is None else seen.value)
                drawn = take(limits[name], bucket, now, len(group), LOCAL_WAIT)
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
                start: list[tuple[ClaimedJob, float]] = []
                held: list[tuple[ClaimedJob, float]] = []
                for name, group in groups.items():
                    drawn = taken[name]
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
        log.info("rate limits contended: %d round(s) lost; booking the batch", MAX_TRIES)
        return [], [(job, CONTENDED_DELAY) for group in groups.values() for job in group]

    async def slow_down(self, job: ClaimedJob, limited: RateLimited) -> None:
        """The job's remote end said "too many requests": pause and slow its limit."""
        limit = self.limits.get(job.task)
        name = None if limit is None else self._record_name(job, limit)
        if name is None or limit is None:
            return
        backend = self.app.backend
        try:
            read = await backend.read_limits_async([name])
            now, seen = read.now, read.states.get(name)
            for _ in range(MAX_TRIES):
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
