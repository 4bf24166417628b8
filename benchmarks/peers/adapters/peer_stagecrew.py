"""stagecrew, from the project's own venv (the tree at `STAGECREW_BENCH_SRC` if set).

Workers: `python -m stagecrew worker peer_stagecrew:app --processes 2`, every other option at
its default: `--concurrency 10` jobs at once per process, `--lease-seconds 30`,
`--poll-interval 1` s (the longest idle sleep; PostgreSQL wakes on LISTEN/NOTIFY, Redis on a
blocking pop, SQLite reads `PRAGMA data_version` every 5 ms), `--grace 30`, `max_attempts`
3. Measured with a sync `def` task (run on a thread of the worker's pool) and an `async def`
task (run on the event loop). SQLite: WAL, `synchronous=NORMAL`; PostgreSQL: the schema
`stagecrew`, made by `migrate()` before the run; Redis: the key prefix `stagecrew`. Bulk:
`Task.enqueue_many`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from bench_records import ENGINE, URL, VARIANT, append_record

from stagecrew import App

NAME = "stagecrew"
PACKAGES: tuple[str, ...] = ()
"""Empty: stagecrew runs from the project's venv."""
ENGINES = ("sqlite", "postgres", "redis")
VARIANTS = ("sync task", "async task")
WORKER = ["{python}", "-m", "stagecrew", "worker", "peer_stagecrew:app", "--processes", "2"]
WORKER_COPIES = 1

app = App(f"sqlite:///{URL}" if ENGINE == "sqlite" else URL or None)


@app.task
def record_sync(i: int) -> None:
    append_record(i)


@app.task
async def record_async(i: int) -> None:
    append_record(i)


TASK = record_async if VARIANT == "async task" else record_sync


def prepare() -> None:
    from stagecrew.backends import backend_from_url
    from stagecrew.clock import SystemClock

    backend = backend_from_url(app.url, SystemClock())
    try:
        backend.migrate()
    finally:
        backend.close()


def enqueue(indices: Iterable[int]) -> None:
    for i in indices:
        TASK.enqueue(i)


def enqueue_bulk(batches: Iterator[list[int]]) -> None:
    for batch in batches:
        TASK.enqueue_many([(i,) for i in batch])
