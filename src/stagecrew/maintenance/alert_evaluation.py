"""Alert evaluation inside the workers: one evaluation per interval, fleet-wide, no leader.

Every worker of an app with alert rules runs an evaluator. Each wakes just after the start of
each interval (`tick`, by the store's clock) and tries to take that tick: a compare-and-set of
the store's `alerts:tick` record from the tick it read to this one (a limit-state swap, see
`backends/limit_states.py`). One worker takes it; the others find it taken and sleep. The
taker reads the store's numbers (queue stats, the worker registry, the job counts of the last
window), moves every alert one step (`alerts.advance`), and writes the alerts' records in one
more compare-and-set against the versions it read: each transition is decided once. Only
once that write is applied does it log the events, and it puts each in its alert's outbox
(kept in the record) for the rule's webhook: the taker POSTs the outbox in order and removes
what the webhook took; what it did not take (or a taker that died before sending) is sent
again by the next tick's taker. So a webhook gets each event at least once, in order per
alert, and can drop a repeat by the event's id. A taker that dies after taking the tick and
before its write leaves that tick unevaluated; the next tick evaluates.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import random
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson

from ..backends.base import Backend, QueueStats
from ..backends.job_counts import CountHistory, bucket_start
from ..backends.limit_states import LimitStates, LimitSwap
from ..backends.worker_registry import WorkerRegistry
from ..job import JobState
from ..observability.alerts import AlertEvent, AlertRule, AlertState, advance
from ..observability.outcomes import FINISHED, error_rate

log = logging.getLogger("stagecrew.alerts")

TICK_RECORD = "alerts:tick"
DEFAULT_INTERVAL = 15.0
RECORD_TTL = 7 * 86_400.0
"""An alert's record outlives its last evaluation by a week (then reads as never evaluated)."""
WEBHOOK_TIMEOUT = 5.0
MAX_OUTBOX = 50
"""Most undelivered events an alert keeps for its webhook (the oldest are dropped)."""


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
    alive = registry.alive()
    if rule.queue is not None:
        alive = [w for w in alive if rule.queue in w.info.queues]
    return {
        "depth": float(sum(q.count(JobState.AVAILABLE) for q in queues)),
        "oldest_wait": max(ages, default=0.0),
        "error_rate": error_rate(totals),
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
        deliver: Callable[[str, dict[str, Any]], Awaitable[bool]] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._backend = backend
        self.rules = list(rules)
        self.interval = interval
        self._deliver = deliver or deliver_webhook
        """POSTs one event to a webhook; whether it took it."""
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
                self._until_next_tick = self.interval
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
        start = math.floor(read.now / self.interval) * self.interval
        self._until_next_tick = start + self.interval - read.now
        tick_record = read.states.get(TICK_RECORD)
        taken_at = _tick_of(tick_record.value if tick_record else None)
        # a tick is taken until the next one starts; one from the future (the store's clock
        # went back, or it was written by a longer interval) is stale
        if taken_at is not None and start <= taken_at <= read.now:
            return []
        taken = await backend.swap_limits_async(
            [
                LimitSwap(
                    TICK_RECORD,
                    None if tick_record is None else tick_record.version,
                    orjson.dumps({"at": start}).decode(),
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
        swaps, events, states = [], [], {}
        for rule in self.rules:
            stored = read.states.get(rule.record_name)
            state = AlertState.from_text(None if stored is None else stored.value)
            values = measures(rule, stats, registry, history, now)
            after, event = advance(rule, state, values, now)
            after = dataclasses.replace(after, interval=self.interval)
            if event is not None:
                events.append(event)
                if rule.webhook is not None:
                    after = dataclasses.replace(after, outbox=_queued(after.outbox, event))
            expected = None if stored is None else stored.version
            swaps.append(LimitSwap(rule.record_name, expected, after.to_text(), RECORD_TTL))
            states[rule.record_name] = after
        written = await backend.swap_limits_async(swaps)
        if not written.applied:
            log.info("alert states changed while this tick was evaluated; the next tick decides")
            return []
        for event in events:
            log_event(event)
        await self._send_outboxes(backend, written, states)
        return events

    async def _send_outboxes(
        self, backend: Backend, written: LimitStates, states: dict[str, AlertState]
    ) -> None:
        """POST each alert's undelivered events to its webhook, in order, stopping at the
        first it does not take; then drop the delivered ones from the records (if no other
        evaluator wrote them since: else the next tick sends them again)."""
        hooks = {rule.record_name: rule.webhook for rule in self.rules}
        swaps = []
        for name, state in states.items():
            hook = hooks.get(name)
            if not state.outbox or hook is None:
                continue
            sent = 0
            for payload in state.outbox:
                if not await self._deliver(hook, payload):
                    break
                sent += 1
            record = written.states.get(name)
            if sent and record is not None:
                kept = dataclasses.replace(state, outbox=state.outbox[sent:])
                swaps.append(LimitSwap(name, record.version, kept.to_text(), RECORD_TTL))
        if swaps:
            await backend.swap_limits_async(swaps)


def _queued(outbox: tuple[dict[str, Any], ...], event: AlertEvent) -> tuple[dict[str, Any], ...]:
    """`outbox` with `event` at its end, keeping the newest `MAX_OUTBOX`."""
    queued = (*outbox, event.payload())
    if len(queued) > MAX_OUTBOX:
        log.error(
            "alert %s: its webhook has not taken %d events; the oldest are dropped",
            event.name,
            len(queued),
        )
    return queued[-MAX_OUTBOX:]


def _tick_of(text: str | None) -> float | None:
    """The start of the tick a tick record says was taken (None: none, or unreadable)."""
    if text is None:
        return None
    try:
        at = float(orjson.loads(text)["at"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    return at if math.isfinite(at) else None


def log_event(event: AlertEvent) -> None:
    if event.status == "firing":
        log.warning("%s", event.describe())
    else:
        log.info("%s", event.describe())


async def deliver_webhook(url: str, payload: dict[str, Any]) -> bool:
    """POST one event to a webhook, on a thread; whether it took it."""
    return await asyncio.to_thread(post_webhook, url, payload)


def post_webhook(url: str, payload: dict[str, Any]) -> bool:
    """POST `payload` as JSON to `url` once; whether it answered 2xx within the timeout."""
    try:
        request = urllib.request.Request(
            url,
            data=orjson.dumps(payload),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT) as response:
            if 200 <= response.status < 300:
                return True
            problem = f"HTTP {response.status}"
    except Exception as exc:  # refused, timed out, a bad URL or reply: tried again next tick
        problem = f"{type(exc).__name__}: {exc}"
    log.warning("alert webhook %s did not take event %s (%s)", url, payload.get("id"), problem)
    return False
