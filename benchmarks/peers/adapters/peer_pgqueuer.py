"""pgqueuer 1.6 on PostgreSQL, with an `async def` entrypoint, over asyncpg.

Workers: `pgq run peer_pgqueuer:main`, started twice (it runs one process; the workload
has 2), every option at its default: `--batch-size 10` jobs per dequeue,
`--dequeue-timeout 30` s (woken by LISTEN/NOTIFY sooner), `--heartbeat-timeout 30` s, no
`--max-concurrent-tasks` limit, no restart on failure, mode `continuous`; an entrypoint has
no concurrency limit and `on_failure='delete'`. Schema: `pgq install`'s `Queries.install()`
in the run's fresh database. Bulk: `Queries.enqueue` with lists (one statement per batch).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import asyncpg
from bench_records import URL, append_record
from pgqueuer import Job, PgQueuer, Queries

NAME = "pgqueuer"
PACKAGES = ("pgqueuer==1.6.*", "asyncpg>=0.30", "typer==0.15.*")
"""typer held at 0.15: with a newer one, `pgq run` of pgqueuer 1.6.0 fails at start
(`--log-level` arrives as a str, `AttributeError: 'str' object has no attribute 'name'`)."""
ENGINES = ("postgres",)
VARIANTS = ("",)
WORKER = ["{bin}/pgq", "run", "peer_pgqueuer:main"]
WORKER_COPIES = 2


@asynccontextmanager
async def main() -> AsyncIterator[PgQueuer]:
    """The factory `pgq run` enters in each worker process."""
    connection = await asyncpg.connect(URL)
    pgq = PgQueuer.from_asyncpg_connection(connection)

    @pgq.entrypoint("record")
    async def record(job: Job) -> None:
        append_record(int(job.payload or b"0"))

    try:
        yield pgq
    finally:
        await connection.close()


async def _queries() -> tuple[asyncpg.Connection, Queries]:
    connection = await asyncpg.connect(URL)
    return connection, Queries.from_asyncpg_connection(connection)


async def prepare() -> None:
    connection, queries = await _queries()
    try:
        await queries.install()
    finally:
        await connection.close()


async def enqueue(indices: Iterable[int]) -> None:
    connection, queries = await _queries()
    try:
        for i in indices:
            await queries.enqueue("record", str(i).encode())
    finally:
        await connection.close()


async def enqueue_bulk(batches: Iterable[list[int]]) -> None:
    connection, queries = await _queries()
    try:
        for batch in batches:
            await queries.enqueue(
                ["record"] * len(batch), [str(i).encode() for i in batch], [0] * len(batch)
            )
    finally:
        await connection.close()
