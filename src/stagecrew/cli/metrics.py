"""`stagecrew metrics serve`: fleet-wide gauges read from the store, for Prometheus.

Each worker host serves its own processes' metrics (`stagecrew worker --metrics-port`); this
serves what the store holds (queue depths, the oldest due job's age, pauses, the live
workers, alerts, circuit breakers), once for the whole fleet, with the store's URL alone; with
`--app`, also the concurrency caps and rate limits the app's code declares.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING

import click

from ..app import App
from ..errors import ConfigurationError
from .exits import CliUsageError
from .options import app_option, load, store_name

if TYPE_CHECKING:
    from prometheus_client.core import Metric


@click.group()
def metrics() -> None:
    """Prometheus metrics (see docs/metrics.md)."""


@metrics.command()
@app_option
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    required=True,
    help="The port to serve the metrics on (0: any free port, printed).",
)
@click.option(
    "--host",
    metavar="ADDRESS",
    default="0.0.0.0",
    show_default=True,
    help="The address to listen on (127.0.0.1: this machine only).",
)
def serve(app_ref: str | None, port: int, host: str) -> None:
    """Serve the store's queue gauges on http://HOST:PORT/metrics until SIGTERM or Ctrl-C.

    \b
      stagecrew metrics serve --url postgresql://jobs@db/jobs --port 9101

    Every scrape reads the store's stats once (one read serves the scrapes of a second);
    while the store cannot be read, it answers stagecrew_store_up 0.
    """
    from prometheus_client import CollectorRegistry

    from ..observability.metrics_server import MetricsServer
    from ..observability.store_metrics import (
        StoreCollector,
        alert_families,
        circuit_families,
        worker_families,
    )

    app = load(app_ref)
    registry = CollectorRegistry()
    sources = [worker_families, alert_families, circuit_families, lambda _: limits_of(app)]
    registry.register(StoreCollector(lambda: app.backend, sources=sources))  # down: at scrape
    try:
        server = MetricsServer(registry, host, port)
    except ConfigurationError as exc:
        raise CliUsageError(f"--port: {exc}") from None
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    click.echo(f"serving the metrics of {store_name(app.url)} on {server.url}", err=True)
    try:
        while not stop.wait(1.0):  # wakes for the signal handler on any Python
            pass
    finally:
        server.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def limits_of(app: App) -> list[Metric]:
    """The caps and whole-task rate limits the app's code declares (none with --url alone)."""
    from ..observability.store_metrics import limit_families
    from .limits import cap_rows, rate_limits

    whole = {
        t.rate_limit.record_name(t.name)
        for t in app.tasks.values()
        if t.rate_limit is not None and t.rate_limit.key is None
    }
    rates = [row for row in rate_limits(app) if row["name"] in whole]
    return limit_families(cap_rows(app), rates)
