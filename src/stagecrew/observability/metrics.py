"""The worker's per-process Prometheus metrics: jobs by outcome, wait and run time, slots.

Off unless asked for (`Worker(metrics=...)`, `stagecrew worker --metrics-port`): a worker
without them pays one `is None` test per job. While on, the worker's hot path only adds to
plain counters of this object, and `flush` hands them to prometheus-client about once a
second and when the worker stops. A prometheus-client value is a locked write each (to a
shared file in multiprocess mode), a few microseconds a job if made one by one; in a
batch they cost next to nothing. A process that dies takes at most its last second of
counts with it.

Everything here runs on the worker's event loop: no lock is needed.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..backends.base import AckKind
from ..job import ClaimedJob
from .outcomes import LOST, OUTCOMES, outcome_of

FLUSH_INTERVAL: Final = 1.0
"""Seconds between two flushes of a running worker's counts to prometheus-client."""

BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip
"""Upper bounds (seconds) of the wait and run histograms: a millisecond to ten minutes,
then +Inf. Jobs run from a no-op's fraction of a millisecond to a report's minutes."""

OUTCOME_LABELS: Final = (*OUTCOMES.values(), LOST)
"""The `outcome` label's values (observability/outcomes.py, as the store's job counts name
them); `lost` also counts the expired claims this process's rescuer took back."""

RESCUED_QUEUE: Final = ""
RESCUED_TASK: Final = ""
"""The labels of the jobs the rescuer took back: the store's rescue reports counts only."""


class _Observed:
    """Observations of one histogram series not yet flushed: a count per bucket, and their sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0

    def add(self, seconds: float) -> None:
        # `le` buckets: the first bound at or above the value; past the last one, +Inf
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds


class WorkerMetrics:
    """One worker process's metrics, recorded cheaply and flushed in batches.

    `registry`: where the metrics are registered, for a process that serves them itself
    (tests: a fresh `CollectorRegistry`); None when another process serves them, as in
    multiprocess mode (`host_metrics.process_metrics`), where every value lives in a file.
    """

    flush_interval: float = FLUSH_INTERVAL

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.jobs = Counter(
            "stagecrew_jobs",
            "Attempts ended, by the outcome the store applied (lost: the claim was gone).",
            ("queue", "task", "outcome"),
            registry=registry,
        )
        self.wait = Histogram(
            "stagecrew_job_wait_seconds",
            "Seconds from a job's due time to its claim, by the store's clock.",
            ("queue", "task"),
            buckets=BUCKETS,
            registry=registry,
        )
        self.run = Histogram(
            "stagecrew_job_run_seconds",
            "Seconds one attempt ran, from its start to its outcome.",
            ("queue", "task"),
            buckets=BUCKETS,
            registry=registry,
        )
        self.slots = Gauge(
            "stagecrew_worker_slots",
            "Jobs the worker processes may run at once (--concurrency each).",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.busy_slots = Gauge(
            "stagecrew_worker_busy_slots",
            "Jobs running now.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._outcomes: dict[tuple[str, str, str], int] = {}
        self._waits: dict[tuple[str, str], _Observed] = {}
        self._runs: dict[tuple[str, str], _Observed] = {}
        self._seen: set[tuple[str, str]] = set()
        """Queue and task pairs whose every outcome series exists (at 0 until counted)."""

    # -- recording (the hot path: plain counters only) -----------------------------------
    def claimed(self, jobs: Iterable[ClaimedJob]) -> None:
        """Jobs claimed: each one's wait, from its due time to its claim (store times)."""
        waits = self._waits
        for job in jobs:
            key = (job.queue, job.task)
            observed = waits.get(key)
            if observed is None:
                observed = waits[key] = _Observed()
            observed.add(max(0.0, job.started_at - job.run_at))

    def ran(self, job: ClaimedJob, seconds: float) -> None:
        """One attempt of `job` ran for `seconds`."""
        key = (job.queue, job.task)
        observed = self._runs.get(key)
        if observed is None:
            observed = self._runs[key] = _Observed()
        observed.add(seconds)

    def written(self, job: ClaimedJob, kind: AckKind, applied: bool) -> None:
        """The outcome of one attempt of `job` reached the store, which applied it or, the
        claim being gone, refused it: counted as lost, never as what it asked for."""
        self._count(job.queue, job.task, outcome_of(kind, applied))

    def lost(self, job: ClaimedJob) -> None:
        """One attempt of `job` ended without an outcome to write: its claim was lost."""
        self._count(job.queue, job.task, LOST)

    def rescued(self, jobs: int) -> None:
        """This process's rescuer took back `jobs` jobs whose leases had expired."""
        self._count(RESCUED_QUEUE, RESCUED_TASK, LOST, jobs)

    def _count(self, queue: str, task: str, outcome: str, jobs: int = 1) -> None:
        key = (queue, task, outcome)
        self._outcomes[key] = self._outcomes.get(key, 0) + jobs

    # -- flushing ----------------------------------------------------------------------
    def flush(self, *, busy: int | None = None) -> None:
        """Hand every count recorded since the last flush to prometheus-client; set the busy
        slots gauge to `busy` if given."""
        outcomes, self._outcomes = self._outcomes, {}
        for (queue, task, outcome), count in outcomes.items():
            self._series_for(queue, task)
            self.jobs.labels(queue, task, outcome).inc(count)
        for histogram, table in ((self.wait, self._waits), (self.run, self._runs)):
            for key, observed in table.items():
                self._series_for(*key)
                _add(histogram.labels(*key), observed)
            table.clear()
        if busy is not None:
            self.busy_slots.set(busy)

    def _series_for(self, queue: str, task: str) -> None:
        """Every outcome's series of `queue` and `task`, at 0 until counted: a rate over a
        series that appears with its first count would miss that count."""
        if (queue, task) in self._seen or (queue, task) == (RESCUED_QUEUE, RESCUED_TASK):
            return
        self._seen.add((queue, task))
        for outcome in OUTCOME_LABELS:
            self.jobs.labels(queue, task, outcome)


def _add(series: Any, observed: _Observed) -> None:
    """Add a batch of observations to one histogram series.

    prometheus-client offers `observe(value)`, one value at a time, only; its series keeps a
    value per bucket (`_buckets`, matching `BUCKETS` and +Inf) and one for the sum (`_sum`),
    which this adds to as `observe` would. tests/unit/test_worker_metrics.py checks the
    result against `observe`, so a change in prometheus-client fails there first.
    """
    for bucket, count in zip(series._buckets, observed.counts, strict=True):
        if count:
            bucket.inc(count)
    series._sum.inc(observed.total)
