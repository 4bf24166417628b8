"""Huey 3.5 on SQLite (`SqliteHuey`) and on Redis (`RedisHuey`).

Workers: `huey_consumer peer_huey.huey --workers 2 --worker-type process` (the default is one
worker thread; processes give the 2 worker processes of the workload); every other option at
its default: polling delay 0.1 s growing by 1.15x per empty poll up to 10 s (SQLite; Redis
waits in a blocking pop, `read_timeout` 1 s), results stored (`results=True`), scheduler
every 1 s, health check every 10 s. SQLite storage: WAL, `cache_mb` 8, timeout
5 s, `fsync` not set, so SQLite's own `synchronous=FULL` (an fsync per commit; stagecrew
uses NORMAL). No bulk enqueue (`Task.map` is a loop of single enqueues).
"""

from __future__ import annotations

from collections.abc import Iterable

from bench_records import ENGINE, URL, append_record
from huey import RedisHuey, SqliteHuey

NAME = "Huey"
PACKAGES = ("huey==3.5.*", "redis>=5")
ENGINES = ("sqlite", "redis")
VARIANTS = ("",)
WORKER = ["{bin}/huey_consumer", "peer_huey.huey", "--workers", "2", "--worker-type", "process"]
WORKER_COPIES = 1

huey = SqliteHuey(filename=URL) if ENGINE == "sqlite" else RedisHuey(url=URL or None)


@huey.task()
def record(i: int) -> None:
    append_record(i)


def enqueue(indices: Iterable[int]) -> None:
    for i in indices:
        record(i)
