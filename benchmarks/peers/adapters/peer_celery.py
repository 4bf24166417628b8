"""Celery 5.7 with Redis as the broker, with a sync task.

Workers: `celery -A peer_celery worker`, every option at its default: the prefork pool with
concurrency = the number of cores (2 child processes here, the workload's 2), prefetch
multiplier 4, acknowledgement before the task runs (`acks_late` off), the `fair`
optimisation, no result backend, JSON serialisation. No bulk enqueue (groups and chunks send
one message per task).
"""

from __future__ import annotations

from collections.abc import Iterable

from bench_records import URL, append_record
from celery import Celery

NAME = "Celery"
PACKAGES = ("celery[redis]==5.7.*",)
ENGINES = ("redis",)
VARIANTS = ("",)
WORKER = ["{bin}/celery", "-A", "peer_celery", "worker"]
WORKER_COPIES = 1

app = Celery("peer_celery", broker=URL or None)


@app.task(name="record")
def record(i: int) -> None:
    append_record(i)


def enqueue(indices: Iterable[int]) -> None:
    for i in indices:
        record.delay(i)
