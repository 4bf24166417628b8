"""Scrape a Prometheus endpoint over HTTP and read its samples (prometheus-client's parser)."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

ENDPOINT = re.compile(r"on (http://127\.0\.0\.1:\d+/metrics)")


def scrape(url: str) -> Samples:
    """Every sample of one scrape, by (sample name, labels)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def endpoint_in(log: Path) -> str | None:
    """The metrics URL a process wrote to its log ("... on http://127.0.0.1:PORT/metrics")."""
    text = log.read_text() if log.exists() else ""
    found = ENDPOINT.search(text)
    return found.group(1) if found else None
