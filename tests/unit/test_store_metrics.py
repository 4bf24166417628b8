"""The store's gauges (`StoreCollector`) on the memory engine: one read serves the scrapes of
a second, a store that fails reads as down, a source that fails leaves the others."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric

from stagecrew import App
from stagecrew.backends.base import Backend
from stagecrew.errors import BackendError
from stagecrew.observability.store_metrics import StoreCollector


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _registry(collector: StoreCollector) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    return registry


def test_one_read_of_the_store_serves_the_scrapes_of_a_second() -> None:
    app = App("memory://")

    @app.task
    def job() -> None: ...

    clock = Clock()
    collector = StoreCollector(lambda: app.backend, clock=clock)
    registry = _registry(collector)
    assert collector.reads == 0  # registering reads nothing
    job.enqueue()
    depth = {"queue": "default", "state": "available"}
    assert registry.get_sample_value("stagecrew_queue_depth", depth) == 1
    job.enqueue()
    clock.now += 0.5
    assert registry.get_sample_value("stagecrew_queue_depth", depth) == 1  # cached
    assert collector.reads == 1
    clock.now += 0.6
    assert registry.get_sample_value("stagecrew_queue_depth", depth) == 2
    assert collector.reads == 2


def test_a_store_that_fails_is_reported_down_until_it_answers_again() -> None:
    app = App("memory://")
    down = True

    def backend() -> Backend:
        if down:
            raise BackendError("the store is down")
        return app.backend

    clock = Clock()
    registry = _registry(StoreCollector(backend, clock=clock))
    assert registry.get_sample_value("stagecrew_store_up") == 0
    down = False
    clock.now += 1.0
    assert registry.get_sample_value("stagecrew_store_up") == 1


def test_a_source_that_fails_leaves_the_queue_gauges_and_the_other_sources() -> None:
    app = App("memory://")

    def broken(backend: Backend) -> Iterable[Metric]:
        raise RuntimeError("not yet")

    def alive(backend: Backend) -> Iterable[Metric]:
        gauge = GaugeMetricFamily("stagecrew_workers_alive", "Workers alive.")
        gauge.add_metric([], 3)
        return [gauge]

    app.backend.pause_queue("mail")
    registry = _registry(StoreCollector(lambda: app.backend, sources=[broken, alive]))
    assert registry.get_sample_value("stagecrew_store_up") == 1
    assert registry.get_sample_value("stagecrew_queue_paused", {"queue": "mail"}) == 1
    assert registry.get_sample_value("stagecrew_workers_alive") == 3
