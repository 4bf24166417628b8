"""procrastinate 3.10 on PostgreSQL, with an `async def` task, over psycopg 3.

Workers: `procrastinate --app peer_procrastinate.app worker`, started twice (one process
each), every option at its default: `--concurrency 1` job at a time, LISTEN/NOTIFY on with
`--fetch-job-polling-interval 5` s as the fallback poll, `--abort-job-polling-interval 5` s,
jobs kept after completion (no `--delete-jobs`), no graceful-shutdown timeout. Schema:
`app.schema_manager.apply_schema()` in the run's fresh database. Producer: the sync API
(`app.open()`, `Task.defer`); bulk: `Task.batch_defer` (one statement per batch).
"""

from __future__ import annotations

from collections.abc import Iterable

from bench_records import URL, append_record
from procrastinate import App, PsycopgConnector

NAME = "procrastinate"
PACKAGES = ("procrastinate==3.10.*", "psycopg[binary]>=3.2")
ENGINES = ("postgres",)
VARIANTS = ("",)
WORKER = ["{bin}/procrastinate", "--app", "peer_procrastinate.app", "worker"]
WORKER_COPIES = 2

app = App(connector=PsycopgConnector(conninfo=URL))


@app.task(name="record")
async def record(i: int) -> None:
    append_record(i)


def prepare() -> None:
    with app.open():
        app.schema_manager.apply_schema()


def enqueue(indices: Iterable[int]) -> None:
    with app.open():
        for i in indices:
            record.defer(i=i)


def enqueue_bulk(batches: Iterable[list[int]]) -> None:
    with app.open():
        for batch in batches:
            record.batch_defer(*({"i": i} for i in batch))
