"""Dramatiq 2.2 on Redis (`RedisBroker`), with a sync actor.

Workers: `dramatiq peer_dramatiq --processes 2`, every other option at its default:
8 worker threads per process, all queues, the default middleware (AgeLimit, TimeLimit 10
minutes, ShutdownNotifications, Callbacks, Pipelines, Retries: 20 with backoff), prefetch of
twice the threads per process, namespace `dramatiq`, heartbeat timeout 60 s, maintenance on
1 in 1,000 fetches, no result backend. `--processes` defaults to the number of cores (2
here), so it is written out only to keep the workload fixed. No bulk enqueue (`group` sends
its messages one by one).
"""

from __future__ import annotations

from collections.abc import Iterable

import dramatiq
from bench_records import URL, append_record
from dramatiq.brokers.redis import RedisBroker

NAME = "Dramatiq"
PACKAGES = ("dramatiq[redis]==2.2.*",)
ENGINES = ("redis",)
VARIANTS = ("",)
WORKER = ["{bin}/dramatiq", "peer_dramatiq", "--processes", "2"]
WORKER_COPIES = 1

broker = RedisBroker(url=URL or None)
dramatiq.set_broker(broker)


@dramatiq.actor
def record(i: int) -> None:
    append_record(i)


def enqueue(indices: Iterable[int]) -> None:
    for i in indices:
        record.send(i)
