"""RQ 2.12 on Redis, with a sync function.

Workers: `rq worker --url URL`, started twice (one `rq worker` is one process; `rq
worker-pool` is still marked beta), every other option at its default: the `Worker` class,
which forks a work horse process per job, queue `default`, job timeout 180 s, results kept
500 s, no scheduler. Bulk: `Queue.enqueue_many` (one pipeline per batch).
"""

from __future__ import annotations

from collections.abc import Iterable

from bench_records import URL, append_record
from redis import Redis
from rq import Queue

NAME = "RQ"
PACKAGES = ("rq==2.12.*",)
ENGINES = ("redis",)
VARIANTS = ("",)
WORKER = ["{bin}/rq", "worker", "--url", "{url}"]
WORKER_COPIES = 2


def record(i: int) -> None:
    append_record(i)


def _queue() -> Queue:
    return Queue(connection=Redis.from_url(URL))


def enqueue(indices: Iterable[int]) -> None:
    queue = _queue()
    for i in indices:
        queue.enqueue(record, i)


def enqueue_bulk(batches: Iterable[list[int]]) -> None:
    queue = _queue()
    for batch in batches:
        queue.enqueue_many([Queue.prepare_data(record, (i,)) for i in batch])
