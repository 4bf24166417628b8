"""taskiq 0.13 with taskiq-redis 1.2 (`RedisStreamBroker`, the acknowledging broker), with an
`async def` task.

Workers: `taskiq worker peer_taskiq:broker`, every option at its default: `--workers 2`
child processes, `--max-async-tasks 100` per process, `--max-prefetch 0`, `--ack-type
when_saved`, arguments parsed with pydantic, shutdown timeout 5 s; the broker reads 100
messages per `XREADGROUP` blocking 2 s, consumer group `taskiq` created at `$` (the producer
starts the broker first, as taskiq's docs do, so the group exists before the jobs are
added), idle messages reclaimed after 600 s, no result backend. No bulk enqueue.
"""

from __future__ import annotations

from collections.abc import Iterable

from bench_records import URL, append_record
from taskiq_redis import RedisStreamBroker

NAME = "taskiq"
PACKAGES = ("taskiq==0.13.*", "taskiq-redis==1.2.*")
ENGINES = ("redis",)
VARIANTS = ("",)
WORKER = ["{bin}/taskiq", "worker", "peer_taskiq:broker"]
WORKER_COPIES = 1

broker = RedisStreamBroker(url=URL or "redis://127.0.0.1:6379/0")


@broker.task(task_name="record")
async def record(i: int) -> None:
    append_record(i)


async def enqueue(indices: Iterable[int]) -> None:
    await broker.startup()
    try:
        for i in indices:
            await record.kiq(i)
    finally:
        await broker.shutdown()
