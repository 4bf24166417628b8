"""Fleet-wide gauges read from the store, for `stagecrew metrics serve`.

A worker's own metrics say what that process did; these say what the store holds, whoever
runs the workers: each queue's depth by state, the age of its oldest due job and whether it
is paused. One read of `Backend.stats()` serves every scrape within `cache_seconds`, so two
scrapers (a Prometheus pair) cost the store one read. A store that cannot be read makes the
scrape report `stagecrew_store_up 0` rather than fail.

More gauges from the store plug in as `StoreSource`s, read within the same cached scrape:
`worker_families` (the worker registry: workers alive, their slots and busy slots),
`alert_families` (each alert's state), `circuit_families` (each circuit breaker's state) and
`limit_families` (concurrency caps and rate limits the app declares), which `stagecrew
metrics serve` adds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..backends.base import Backend, QueueStats
from ..job import JobState
from ..limits.circuit import CLOSED, HALF_OPEN, OPEN, CircuitState
from .alerts import FIRING, AlertState

log = logging.getLogger("stagecrew.metrics")

CACHE_SECONDS = 1.0
"""How long one read of the store serves scrapes."""

StoreSource = Callable[[Backend], Iterable[Metric]]
"""More gauges read from the store at each (cached) scrape; an exception it raises is
logged, and the scrape goes on without its gauges."""


class StoreCollector(Collector):
    """The queues' gauges (`queue_families`) and those of every `sources`, cached."""

    def __init__(
        self,
        backend: Callable[[], Backend],
        *,
        sources: Sequence[StoreSource] = (),
        cache_seconds: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        """The store, opened on demand: it raises (the scrape says the store is down) until
        the store can be reached, as `lambda: app.backend` does."""
        self.sources = tuple(sources)
        self.cache_seconds = cache_seconds
        self._clock = clock
        self._lock = threading.Lock()
        """Scrapes arrive on threads of their own: one reads, those arriving meanwhile wait
        for its answer."""
        self._cached: list[Metric] | None = None
        self._read_at = 0.0
        self._up: bool | None = None
        self.reads = 0
        """How many times the store was read (a test's window on the cache)."""

    def describe(self) -> Iterable[Metric]:
        return []  # registering must not read the store

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            now = self._clock()
            if self._cached is None or now - self._read_at >= self.cache_seconds:
                self._cached = self._read()
                self._read_at = self._clock()
            return list(self._cached)

    def _read(self) -> list[Metric]:
        self.reads += 1
        up = GaugeMetricFamily(
            "stagecrew_store_up", "1 if the last read of the store's stats worked, else 0."
        )
        try:
            backend = self.backend()
            queues = backend.stats()
        except Exception as exc:
            if self._up is not False:  # once per outage, not once per scrape
                log.warning("cannot read the store's stats: %s", exc)
            self._up = False
            up.add_metric([], 0)
            return [up]
        if self._up is False:
            log.info("the store's stats can be read again")
        self._up = True
        up.add_metric([], 1)
        families: list[Metric] = [up, *queue_families(queues)]
        for source in self.sources:
            try:
                families.extend(source(backend))
            except Exception as exc:
                name = getattr(source, "__name__", repr(source))
                log.warning("metrics source %s failed: %s", name, exc)
        return families


def queue_families(queues: Sequence[QueueStats]) -> list[Metric]:
    """Each queue's depth by state (every state, zeros too), oldest due job's age (0 when
    none is due) and pause."""
    depth = GaugeMetricFamily(
        "stagecrew_queue_depth", "Jobs in the queue in each state.", labels=("queue", "state")
    )
    oldest = GaugeMetricFamily(
        "stagecrew_queue_oldest_due_seconds",
        "Seconds the longest-waiting due job of the queue has waited, by the store's clock "
        "(0: none is due).",
        labels=("queue",),
    )
    paused = GaugeMetricFamily(
        "stagecrew_queue_paused", "1 while the queue is paused, else 0.", labels=("queue",)
    )
    for queue in queues:
        for state in JobState:
            depth.add_metric([queue.queue, str(state)], queue.count(state))
        oldest.add_metric([queue.queue], queue.oldest_available_age or 0.0)
        paused.add_metric([queue.queue], 1 if queue.paused else 0)
    return [depth, oldest, paused]


def worker_families(backend: Backend) -> list[Metric]:
    """The live workers of the registry: how many, their slots and busy slots, fleet-wide."""
    alive = backend.list_workers().alive()
    count = GaugeMetricFamily(
        "stagecrew_workers_alive", "Worker processes alive in the worker registry."
    )
    slots = GaugeMetricFamily(
        "stagecrew_fleet_slots", "Slots of the live worker processes (concurrency, summed)."
    )
    busy = GaugeMetricFamily(
        "stagecrew_fleet_busy_slots", "Slots running a job at the live workers' last beats."
    )
    count.add_metric([], len(alive))
    slots.add_metric([], sum(w.info.concurrency for w in alive))
    busy.add_metric([], sum(w.info.busy for w in alive))
    return [count, slots, busy]


def alert_families(backend: Backend) -> list[Metric]:
    """1 for each alert firing, else 0, as the workers last evaluated it (docs/alerts.md)."""
    firing = GaugeMetricFamily(
        "stagecrew_alert_firing",
        "1 while the alert is firing, as the workers last evaluated it (lately), else 0.",
        labels=("alert",),
    )
    now = backend.read_limits([]).now
    for record in backend.list_limits("alert:"):
        state = AlertState.from_text(record.value)
        on = state.state == FIRING and not state.stale(now)
        firing.add_metric([record.name.removeprefix("alert:")], 1 if on else 0)
    return [firing]


def circuit_families(backend: Backend) -> list[Metric]:
    """Each circuit breaker's state as its record holds it, one series per state (1 for the
    one it is in), as `stagecrew circuits --url` shows it (docs/limits.md)."""
    state = GaugeMetricFamily(
        "stagecrew_circuit_state",
        "1 for the state the circuit breaker is in (closed, open, half_open), else 0.",
        labels=("circuit", "state"),
    )
    for record in backend.list_limits("circuit:"):
        current = CircuitState.from_text(record.value).state
        for name in (CLOSED, OPEN, HALF_OPEN):
            circuit = record.name.removeprefix("circuit:")
            state.add_metric([circuit, name], 1 if current == name else 0)
    return [state]


def limit_families(
    caps: Sequence[Mapping[str, Any]], rates: Sequence[Mapping[str, Any]]
) -> list[Metric]:
    """Concurrency caps (running, limit, due jobs waiting on a full cap) and rate limits (how
    far ahead their jobs are booked), from the rows `stagecrew limits` shows: the caps the
    app's code declares, and the rate buckets given (whole-task ones: a keyed limit's buckets
    are one per key, too many series)."""
    running = GaugeMetricFamily(
        "stagecrew_cap_running", "Jobs running under the concurrency cap.", labels=("cap",)
    )
    limit = GaugeMetricFamily(
        "stagecrew_cap_limit", "The concurrency cap: jobs it lets run at once.", labels=("cap",)
    )
    waiting = GaugeMetricFamily(
        "stagecrew_cap_waiting",
        "Due jobs waiting because the cap (or, per key, their key) is full.",
        labels=("cap",),
    )
    booked = GaugeMetricFamily(
        "stagecrew_rate_limit_booked_seconds",
        "How long until the last job handed back for want of a rate-limit token is due.",
        labels=("bucket",),
    )
    for cap in caps:
        running.add_metric([cap["cap"]], cap["running"])
        limit.add_metric([cap["cap"]], cap["limit"])
        waiting.add_metric([cap["cap"]], cap["waiting"])
    for rate in rates:
        booked.add_metric([rate["name"]], rate["booked_for"] or 0.0)
    return [running, limit, waiting, booked]
