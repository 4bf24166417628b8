"""Alert evaluation inside the workers: one evaluation per interval, fleet-wide, no leader.

Every worker of an app with alert rules runs an evaluator. Each wakes just after the start of
each interval (`tick`, by the store's clock) and tries to take that tick: a compare-and-set of
the store's `alerts:tick` record from the tick it read to this one (a limit-state swap, see
`backends/limit_states.py`). One worker takes it; the others find it taken and sleep. The
taker reads the store's numbers (queue stats, the worker registry, the job counts of the last
window), moves every alert one step (`alerts.advance`), and writes the alerts' records in one
more compare-and-set against the versions it read. Only once that write is applied does it
deliver the events (to the log, and to the rule's webhook): a tick taken twice, or a slow
evaluator of an earlier tick, can never deliver a transition twice. A taker that dies after
the tick and before its write leaves that tick unevaluated; the next tick evaluates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
import urllib.request
from collections.abc import Awaitable, Callable, Sequence

import orjson

from ..backends.base import Backend, QueueStats
from ..backends.job_counts import CountHistory, bucket_start
from ..backends.limit_states import LimitStates, LimitSwap
from ..backends.worker_registry import WorkerRegistry
from ..job import JobState
from .alerts import AlertEvent, AlertRule, AlertState, advance
from .outcomes import FAILED, FINISHED

log = logging.getLogger("stagecrew.alerts")

TICK_RECORD = "alerts:tick"
DEFAULT_INTERVAL = 15.0
RECORD_TTL = 7 * 86_400.0
"""An alert's record outlives its last evaluation by a week (then reads as never evaluated)."""
WEBHOOK_TIMEOUT = 5.0
WEBHOOK_TRIES = 3


def measures(
    rule: AlertRule,
    stats: Sequence[QueueStats],
    registry: WorkerRegistry,
    history: CountHistory,
    now: float,
) -> dict[str, float]:
    """The values of every measure for `rule`'s queue (or all queues), at `now`."""
    queues = [q for q in stats if rule.queue is None or q.queue == rule.queue]
    ages = [q.oldest_available_age for q in queues if q.oldest_available_age is not None]
    since = bucket_start(now) - rule.window
    totals = history.totals(since, queue=rule.queue)
    finished = sum(n for outcome, n in totals.items() if outcome in FINISHED)
    failed = sum(n for outcome, n in totals.items() if outcome in FAILED)
    alive = registry.alive()
    if rule.queue is not None:
        alive = [w for w in alive if rule.queue in w.info.queues]
    return {
        "depth": float(sum(q.count(JobState.AVAILABLE) for q in queues)),
        "oldest_wait": max(ages, default=0.0),
        "error_rate": failed / finished if finished else 0.0,
        "throughput": finished / max(now - since, 1.0),
        "live_workers": float(len(alive)),
    }


class AlertEvaluator:
    def __init__(
        self,
        backend: Callable[[], Backend],
        rules: Sequence[AlertRule],
        *,
        interval: float = DEFAULT_INTERVAL,
        deliver: Callable[[AlertEvent], Awaitable[None]] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._backend = backend
        self.rules = list(rules)
        self.interval = interval
        self._deliver = deliver or deliver_event
        self._rng = rng or random.Random()
        self._until_next_tick = 0.0
        """Seconds from the last read of the store's clock to the next tick."""
        self.evaluations = 0
        """Ticks this evaluator took and evaluated."""

    async def run(self, stop: asyncio.Event) -> None:
        """Evaluate once per tick until `stop` is set; a failing store is logged and retried."""
        while not stop.is_set():
            try:
                await self.evaluate_once()
            except Exception as exc:
                log.warning("alert evaluation failed (%s); trying again next interval", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._sleep())

    def _sleep(self) -> float:
        """Until just after the next tick starts, by the store's clock as last read."""
        jitter = self._rng.uniform(0.0, 0.1 * self.interval)
        return max(self._until_next_tick, 0.0) + jitter

    async def evaluate_once(self) -> list[AlertEvent]:
        """Take this tick and evaluate every rule, if no evaluator took it yet; the events
        the evaluation made (none if another evaluator has the tick)."""
        backend = self._backend()
        names = [TICK_RECORD, *(rule.record_name for rule in self.rules)]
        read = await backend.read_limits_async(names)
        tick = math.floor(read.now / self.interval)
        self._until_next_tick = (tick + 1) * self.interval - read.now
        tick_record = read.states.get(TICK_RECORD)
        if _tick_of(tick_record.value if tick_record else None) >= tick:
            return []
        taken = await backend.swap_limits_async(
            [
                LimitSwap(
                    TICK_RECORD,
                    None if tick_record is None else tick_record.version,
                    orjson.dumps({"tick": tick}).decode(),
                    RECORD_TTL,
                )
            ]
        )
        if not taken.applied:
            return []
        return await self._evaluate(backend, read)

    async def _evaluate(self, backend: Backend, read: LimitStates) -> list[AlertEvent]:
        self.evaluations += 1
        window = max(rule.window for rule in self.rules)
        stats = await backend.stats_async()
        registry = await backend.list_workers_async()
        history = await backend.read_counts_async(window + 60.0)
        now = history.now
        swaps, events = [], []
        for rule in self.rules:
            stored = read.states.get(rule.record_name)
            state = AlertState.from_text(None if stored is None else stored.value)
            values = measures(rule, stats, registry, history, now)
            after, event = advance(rule, state, values, now)
            expected = None if stored is None else stored.version
            swaps.append(LimitSwap(rule.record_name, expected, after.to_text(), RECORD_TTL))
            if event is not None:
                events.append(event)
        written = await backend.swap_limits_async(swaps)
        if not written.applied:
            log.info("alert states changed while this tick was evaluated; the next tick decides")
            return []
        for event in events:
            await self._deliver(event)
        return events


def _tick_of(text: str | None) -> int:
    if text is None:
        return -1
    try:
        return int(orjson.loads(text)["tick"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return -1


async def deliver_event(event: AlertEvent) -> None:
    """Log the event, and POST it as JSON to its webhook if it has one."""
    if event.status == "firing":
        log.warning("%s", event.describe())
    else:
        log.info("%s", event.describe())
    if event.webhook is not None:
        await asyncio.to_thread(post_webhook, event.webhook, event.payload())


def post_webhook(url: str, payload: dict[str, object]) -> bool:
    """POST `payload` to `url`, trying `WEBHOOK_TRIES` times; whether it was accepted."""
    body = orjson.dumps(payload)
    for attempt in range(WEBHOOK_TRIES):
        request = urllib.request.Request(
            url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT) as response:
                if 200 <= response.status < 300:
                    return True
                problem = f"HTTP {response.status}"
        except OSError as exc:
            problem = str(exc)
        log.warning(
            "alert webhook %s refused the event (%s; try %d of %d)",
            url,
            problem,
            attempt + 1,
            WEBHOOK_TRIES,
        )
        if attempt + 1 < WEBHOOK_TRIES:
            time.sleep(2**attempt)
    return False
