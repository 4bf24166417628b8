"""The Prometheus alerting rules and the Grafana dashboard shipped in docs/ name only metrics
stagecrew exposes (a renamed metric would leave them silently empty)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from stagecrew.backends.memory import MemoryBackend
from stagecrew.clock import FakeClock
from stagecrew.observability.metrics import WorkerMetrics
from stagecrew.observability.store_metrics import (
    StoreCollector,
    alert_families,
    circuit_families,
    worker_families,
)

DOCS = Path(__file__).resolve().parents[2] / "docs"
NAME = re.compile(r"\bstagecrew_[a-z_]+")
SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created")


def exposed() -> set[str]:
    """Every sample name the worker's and the store's metrics expose."""
    registry = CollectorRegistry()
    WorkerMetrics(registry=registry)
    backend = MemoryBackend("memory://", FakeClock())
    registry.register(
        StoreCollector(lambda: backend, sources=[worker_families, alert_families, circuit_families])
    )
    text = generate_latest(registry).decode()
    names = set(re.findall(r"^# TYPE (stagecrew_[a-z_]+)", text, re.M))
    return names | {n + suffix for n in names for suffix in SUFFIXES}


def test_the_alerting_rules_name_only_exposed_metrics() -> None:
    exprs = "\n".join(
        line
        for line in (DOCS / "prometheus-alerts.yml").read_text().splitlines()
        if not line.lstrip().startswith(("#", "summary", "description"))
    )
    used = set(NAME.findall(exprs))
    assert used and used <= exposed(), used - exposed()


def test_the_dashboard_names_only_exposed_metrics() -> None:
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for expr in exprs for name in NAME.findall(expr)}
    assert used and used <= exposed(), used - exposed()
