"""Figures from the records the jobs wrote: drain, steady rate, pickup latency; medians.

Every figure comes from the same clock (`time.time()` on this machine), read by the jobs
and by the producer, so the libraries are measured alike whatever their stores record.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from processes import RunFailed

STALL = 60.0
"""Seconds without a new record after which a drain is given up as stalled."""


class Records:
    """The records file of a run, read incrementally: each job's first start by index."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.starts: dict[int, float] = {}
        self._offset = 0
        self._partial = b""

    def read(self) -> dict[int, float]:
        try:
            with self.path.open("rb") as records:
                records.seek(self._offset)
                chunk = records.read()
        except FileNotFoundError:
            return self.starts
        self._offset += len(chunk)
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        for line in lines:
            index, _, started = line.partition(b" ")
            if started:
                self.starts.setdefault(int(index), float(started))
        return self.starts


def wait_for_jobs(
    records: Records, indices: range, failed: Callable[[], str | None], what: str
) -> dict[int, float]:
    """Wait until every job of `indices` has a record; fail if the workers die or stall."""
    wanted = set(indices)
    seen, last_progress = 0, time.monotonic()
    while True:
        starts = records.read()
        if wanted <= starts.keys():
            return {i: starts[i] for i in indices}
        if len(starts) > seen:
            seen, last_progress = len(starts), time.monotonic()
        reason = failed()
        if reason:
            raise RunFailed(f"{what}: {reason}")
        if time.monotonic() - last_progress > STALL:
            done = len(wanted & starts.keys())
            raise RunFailed(f"{what}: stalled at {done:,} of {len(wanted):,} jobs")
        time.sleep(0.05)


@dataclass(frozen=True)
class Drain:
    """Jobs/s from the workers' launch to the last job's start, and between the first
    job's start and the last's (the steady rate, without start-up)."""

    rate: float
    steady: float


def drain_figures(launched: float, starts: Sequence[float]) -> Drain:
    first, last = min(starts), max(starts)
    jobs = len(starts)
    return Drain(rate=jobs / (last - launched), steady=(jobs - 1) / max(last - first, 1e-9))


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def pickup_figures(enqueued: dict[int, float], starts: dict[int, float]) -> tuple[float, float]:
    """Seconds from each job's enqueue (the start of the call) to its start: p50, p99."""
    waits = [starts[i] - at for i, at in enqueued.items()]
    return statistics.median(waits), percentile(waits, 0.99)


def median(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None
