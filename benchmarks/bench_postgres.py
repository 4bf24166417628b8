"""PostgreSQL benchmark: stagecrew against the engine's raw limit, measured in the same run.

Reports enqueue (one by one and batched), drain of pre-queued no-op jobs with
real worker processes (`python -m stagecrew worker ... --processes 2`), pickup
latency with idle workers and, with --million, the drain rate with 1,000,000
jobs queued and then with 1,000,000 finished jobs retained. Two raw limits are
measured on the same server first, each with 2 processes of one connection:

- the single-row loop: per job an INSERT, then BEGIN; SELECT ... FOR UPDATE
  SKIP LOCKED LIMIT 1; UPDATE; COMMIT;
- the batched loop: pre-queued jobs claimed 50 at a time (one UPDATE over a
  SKIP LOCKED subquery) and acked with one UPDATE per batch.

Every measurement runs in a fresh schema of its own, dropped afterwards. Times
come from the store (server clock), so the rates include every commit.

    python benchmarks/bench_postgres.py [--url postgresql://...] [--million] [--write-results]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

import harness
from harness import DrainRates, enqueue_batched, enqueue_one_by_one, make_app
from stagecrew.backends.postgres import PostgresBackend
from stagecrew.job import NewJob

DEFAULT_URL = os.environ.get("STAGECREW_BENCH_POSTGRES_URL", harness.servers.POSTGRES_SERVER.url)
PAYLOAD = '{"args":[1],"kwargs":{}}'


# -- schemas ----------------------------------------------------------------------------------
with_schema = harness.servers.with_schema


@contextmanager
def fresh_schema(url: str, migrate: bool = True) -> Iterator[str]:
    """A new schema (migrated for stagecrew unless `migrate` is False), dropped afterwards."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    if migrate:
        backend = PostgresBackend(with_schema(url, schema))
        backend.migrate()
        backend.close()
    else:
        harness.servers.create_schema(url, schema)
    try:
        yield schema
    finally:
        harness.servers.drop_schemas(url, [schema])


def scalar(url: str, query: sql.Composed | sql.SQL, params: Any = None) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


# -- raw limits --------------------------------------------------------------------------------
def _raw_single_rows(url: str, table: str, jobs: int, start_at: float) -> None:
    q = sql.Identifier(table)
    insert = sql.SQL("INSERT INTO {} (payload, state) VALUES (%s, 'available')").format(q)
    claim = sql.SQL(
        "SELECT id FROM {} WHERE state = 'available' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
    ).format(q)
    done = sql.SQL("UPDATE {} SET state = 'done' WHERE id = %s").format(q)
    with psycopg.connect(url, autocommit=True) as conn:
        time.sleep(max(0.0, start_at - time.time()))
        for _ in range(jobs):
            conn.execute(insert, (PAYLOAD,))
            with conn.transaction():
                row = conn.execute(claim).fetchone()
                if row is not None:
                    conn.execute(done, row)


def _raw_batches(url: str, table: str, batch: int, start_at: float) -> None:
    q = sql.Identifier(table)
    claim = sql.SQL(
        "UPDATE {q} SET state = 'running' WHERE id IN (SELECT id FROM {q} "
        "WHERE state = 'available' ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id"
    ).format(q=q)
    done = sql.SQL("UPDATE {} SET state = 'done' WHERE id = ANY(%s)").format(q)
    with psycopg.connect(url, autocommit=True) as conn:
        time.sleep(max(0.0, start_at - time.time()))
        while ids := [row[0] for row in conn.execute(claim, (batch,)).fetchall()]:
            conn.execute(done, (ids,))


def _run_processes(target: Callable[..., None], args: tuple[Any, ...], processes: int) -> float:
    """Seconds from a common start to the last process finishing."""
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 1.5  # every process connected and waiting
    procs = [ctx.Process(target=target, args=(*args, start_at)) for _ in range(processes)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    if any(p.exitcode != 0 for p in procs):
        raise RuntimeError("a raw-loop process failed")
    return time.time() - start_at


def _raw_table(url: str, schema: str) -> str:
    table = f"{schema}_raw"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE TABLE {q} (id bigserial PRIMARY KEY, payload text NOT NULL, "
                "state text NOT NULL); CREATE INDEX ON {q} (id) WHERE state = 'available'"
            ).format(q=sql.Identifier(table))
        )
    return table


def _drop_table(url: str, table: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))


def raw_single_row_loop(url: str, jobs: int, processes: int) -> float:
    """Jobs/s of the bare loop: INSERT, then claim one with SKIP LOCKED and mark it done."""
    table = _raw_table(url, f"bench_{uuid.uuid4().hex[:10]}")
    try:
        per_process = jobs // processes
        elapsed = _run_processes(_raw_single_rows, (url, table, per_process), processes)
        return per_process * processes / elapsed
    finally:
        _drop_table(url, table)


def raw_batched_loop(url: str, jobs: int, processes: int, batch: int = 50) -> float:
    """Jobs/s of bare batched claims (SKIP LOCKED, `batch` at a time) and batched acks."""
    table = _raw_table(url, f"bench_{uuid.uuid4().hex[:10]}")
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (payload, state) "
                    "SELECT %s, 'available' FROM generate_series(1, %s)"
                ).format(sql.Identifier(table)),
                (PAYLOAD, jobs),
            )
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(table)))
        elapsed = _run_processes(_raw_batches, (url, table, batch), processes)
        return jobs / elapsed
    finally:
        _drop_table(url, table)


def raw_insert_loop(url: str, jobs: int) -> float:
    """Jobs/s of a bare INSERT per job on one connection in autocommit: one commit each."""
    table = _raw_table(url, f"bench_{uuid.uuid4().hex[:10]}")
    q = sql.Identifier(table)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            insert = sql.SQL("INSERT INTO {} (payload, state) VALUES (%s, 'available')").format(q)
            conn.execute(insert, (PAYLOAD,))
            start = time.perf_counter()
            for _ in range(jobs):
                conn.execute(insert, (PAYLOAD,))
            return jobs / (time.perf_counter() - start)
    finally:
        _drop_table(url, table)


def raw_copy(url: str, jobs: int, batch: int) -> float:
    """Jobs/s of a bare binary COPY of `batch` rows per transaction, on one connection."""
    table = _raw_table(url, f"bench_{uuid.uuid4().hex[:10]}")
    copy_sql = sql.SQL("COPY {} (payload, state) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(table)
    )
    rows = [(PAYLOAD, "available")] * batch
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            start = time.perf_counter()
            for _ in range(jobs // batch):
                with conn.transaction(), conn.cursor().copy(copy_sql) as copy:
                    copy.set_types(("text", "text"))
                    for row in rows:
                        copy.write_row(row)
            return jobs // batch * batch / (time.perf_counter() - start)
    finally:
        _drop_table(url, table)


# -- stagecrew ---------------------------------------------------------------------------------
def engine_enqueue_batched(url: str, jobs: int, batch: int) -> float:
    """Jobs/s of `PostgresBackend.enqueue` alone, with the jobs already built (no App)."""
    with fresh_schema(url) as schema:
        backend = PostgresBackend(with_schema(url, schema))
        new = [NewJob("noop", PAYLOAD) for _ in range(batch)]
        backend.enqueue(new[:1])
        start = time.perf_counter()
        for _ in range(jobs // batch):
            backend.enqueue(new)
        elapsed = time.perf_counter() - start
        backend.close()
    return jobs // batch * batch / elapsed


def _jobs(schema: str) -> sql.Composed:
    return sql.SQL("{}.jobs").format(sql.Identifier(schema))


def unfinished(url: str, schema: str) -> bool:
    return bool(
        scalar(
            url,
            sql.SQL(
                "SELECT EXISTS (SELECT FROM {t} WHERE state IN ('available', 'scheduled')) "
                "OR EXISTS (SELECT FROM {t} WHERE state = 'running')"
            ).format(t=_jobs(schema)),
        )
    )


def queue_jobs(url: str, schema: str, task: str, jobs: int) -> None:
    app = make_app(with_schema(url, schema))
    harness.queue_jobs(app, task, jobs)
    app.close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("ANALYZE {}").format(_jobs(schema)))


def drain(
    url: str,
    schema: str,
    jobs: int,
    processes: int,
    concurrency: int,
    task: str,
    progress: bool = False,
) -> DrainRates:
    """Queue `jobs` jobs of `task`, run workers until none is left; rates from store times."""
    queue_jobs(url, schema, task, jobs)
    marker = scalar(url, sql.SQL("SELECT coalesce(max(id), 0) FROM {}").format(_jobs(schema)))
    first_id = marker - jobs
    seconds = harness.run_workers_until(
        with_schema(url, schema),
        processes,
        concurrency,
        lambda: not unfinished(url, schema),
        poll=0.25,
        progress=progress,
    )
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT started_at, finished_at FROM {} WHERE id > %s AND state = 'succeeded'"
            ).format(_jobs(schema)),
            (first_id,),
        ).fetchall()
    if len(rows) != jobs:
        raise RuntimeError(f"expected {jobs} succeeded jobs, found {len(rows)}")
    return harness.drain_rates(rows, seconds)


def pickup_latency(url: str, schema: str, samples: int, processes: int) -> tuple[float, float]:
    """Seconds from enqueue to claim with idle workers: p50, p99 (server timestamps)."""
    store_url = with_schema(url, schema)
    app = make_app(store_url)
    try:
        return harness.pickup_latency(app, store_url, samples, processes, settle=3.0)
    finally:
        app.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--drain-jobs", type=int, default=20_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--raw-jobs", type=int, default=10_000)
    parser.add_argument("--enqueue-jobs", type=int, default=5_000)
    parser.add_argument("--batch-jobs", type=int, default=100_000)
    parser.add_argument("--latency-samples", type=int, default=300)
    parser.add_argument(
        "--million", action="store_true", help="also drain 1,000,000 queued jobs (minutes)"
    )
    parser.add_argument("--big-jobs", type=int, default=1_000_000)
    parser.add_argument("--write-results", action="store_true")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    opts = parser.parse_args()
    url = opts.url
    results: dict[str, Any] = {
        "server": scalar(url, sql.SQL("SHOW server_version")),
        "synchronous_commit": scalar(url, sql.SQL("SHOW synchronous_commit")),
    }
    print(f"synchronous_commit = {results['synchronous_commit']} (every commit waits for fsync)")

    raw = raw_single_row_loop(url, opts.raw_jobs, opts.processes)
    results["raw"] = raw
    print(f"raw single-row loop ({opts.processes} connections): {raw:,.0f} jobs/s", flush=True)
    raw_batched = raw_batched_loop(url, opts.drain_jobs, opts.processes)
    results["raw_batched"] = raw_batched
    print(
        f"raw batched loop (claim 50 + batched ack, {opts.processes} connections): "
        f"{raw_batched:,.0f} jobs/s",
        flush=True,
    )

    insert = results["raw_insert"] = raw_insert_loop(url, opts.enqueue_jobs)
    print(f"raw INSERT loop (1 connection, a commit per job): {insert:,.0f} jobs/s", flush=True)
    copy = results["raw_copy"] = raw_copy(url, opts.batch_jobs, 10_000)
    print(f"raw binary COPY (10,000 rows per transaction): {copy:,.0f} jobs/s", flush=True)

    with fresh_schema(url) as schema:
        app = make_app(with_schema(url, schema))
        one = enqueue_one_by_one(app, opts.enqueue_jobs)
        print(f"enqueue one by one: {one:,.0f} jobs/s ({one / insert:.2f}x raw INSERT)", flush=True)
        many = enqueue_batched(app, opts.batch_jobs, 10_000)
        print(
            f"enqueue_many (batches of 10,000): {many:,.0f} jobs/s ({many / copy:.2f}x raw COPY)",
            flush=True,
        )
        app.close()
    results["one"], results["many"] = one, many
    engine = engine_enqueue_batched(url, opts.batch_jobs, 10_000)
    results["engine_many"] = engine
    print(f"engine alone: PostgresBackend.enqueue, batches of 10,000: {engine:,.0f} jobs/s")

    drains: dict[str, DrainRates] = {}
    for task in ("noop", "noop_sync"):
        with fresh_schema(url) as schema:
            figures = drain(url, schema, opts.drain_jobs, opts.processes, opts.concurrency, task)
        drains[task] = figures
        print(
            f"drain {opts.drain_jobs:,} {task} jobs, {opts.processes} processes: "
            f"{figures.rate:,.0f} jobs/s ({figures.rate / raw:.1f}x raw single-row, "
            f"{figures.rate / raw_batched:.2f}x raw batched)",
            flush=True,
        )
    results["drains"] = drains

    with fresh_schema(url) as schema:
        p50, p99 = pickup_latency(url, schema, opts.latency_samples, opts.processes)
    results["latency"] = (p50, p99)
    print(f"pickup latency, idle workers: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")

    if opts.million:
        with fresh_schema(url) as schema:
            print(f"queueing {opts.big_jobs:,} jobs ...", flush=True)
            big = drain(url, schema, opts.big_jobs, opts.processes, opts.concurrency, "noop", True)
            print(
                f"drain {opts.big_jobs:,} queued noop jobs: {big.rate:,.0f} jobs/s overall, "
                f"{big.first_tenth:,.0f} jobs/s over the first tenth, "
                f"{big.last_tenth:,.0f} over the last; "
                f"{big.rate / drains['noop'].rate:.2f}x the {opts.drain_jobs:,}-job drain",
                flush=True,
            )
            retained = drain(url, schema, opts.drain_jobs, opts.processes, opts.concurrency, "noop")
            print(
                f"drain {opts.drain_jobs:,} noop jobs with {opts.big_jobs:,} finished jobs "
                f"retained: {retained.rate:,.0f} jobs/s "
                f"({retained.rate / drains['noop'].rate:.2f}x the drain on an empty table)",
                flush=True,
            )
        results["big"], results["retained"] = big, retained

    harness.write_json(opts.json, results)
    if opts.write_results:
        write_results(opts, results)


def write_results(opts: argparse.Namespace, results: dict[str, Any]) -> None:
    raw = results["raw"]
    lines = [
        f"## PostgreSQL, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        harness.machine(
            f"PostgreSQL {results['server']} on the same machine, synchronous_commit = "
            f"{results['synchronous_commit']}"
        ),
        "",
        "| measurement | figure | ratio to raw single-row loop |",
        "| --- | --- | --- |",
        f"| raw loop: INSERT, then SKIP LOCKED claim + UPDATE per job, {opts.processes} "
        f"connections | {raw:,.0f} jobs/s | 1.00 |",
        f"| raw batched loop: claim 50 with SKIP LOCKED + one ack UPDATE per batch | "
        f"{results['raw_batched']:,.0f} jobs/s | {results['raw_batched'] / raw:.2f} |",
        f"| raw INSERT loop: one connection, a commit per job | {results['raw_insert']:,.0f} "
        f"jobs/s | {results['raw_insert'] / raw:.2f} |",
        f"| raw binary COPY, 10,000 rows per transaction | {results['raw_copy']:,.0f} jobs/s | "
        f"{results['raw_copy'] / raw:.2f} |",
        f"| enqueue one by one | {results['one']:,.0f} jobs/s | {results['one'] / raw:.2f} "
        f"({results['one'] / results['raw_insert']:.2f} of the INSERT loop) |",
        f"| enqueue_many, batches of 10,000 | {results['many']:,.0f} jobs/s | "
        f"{results['many'] / raw:.2f} ({results['many'] / results['raw_copy']:.2f} of raw COPY) |",
        f"| engine alone: PostgresBackend.enqueue of built jobs, batches of 10,000 | "
        f"{results['engine_many']:,.0f} jobs/s | {results['engine_many'] / raw:.2f} |",
    ]
    for task, figures in results["drains"].items():
        kind = "async" if task == "noop" else "sync"
        lines.append(
            f"| drain {opts.drain_jobs:,} pre-queued {kind} no-op jobs, --processes "
            f"{opts.processes} --concurrency {opts.concurrency} | {figures.rate:,.0f} jobs/s "
            f"| {figures.rate / raw:.2f} |"
        )
    p50, p99 = results["latency"]
    lines.append(
        f"| pickup latency, idle workers (p50 / p99) | {p50 * 1000:.1f} ms / "
        f"{p99 * 1000:.1f} ms | |"
    )
    if "big" in results:
        big, retained = results["big"], results["retained"]
        lines.append(
            f"| drain {opts.big_jobs:,} queued async no-op jobs (first tenth / last tenth) | "
            f"{big.rate:,.0f} jobs/s ({big.first_tenth:,.0f} / {big.last_tenth:,.0f})"
            f" | {big.rate / raw:.2f} |"
        )
        lines.append(
            f"| drain {opts.drain_jobs:,} with {opts.big_jobs:,} finished jobs retained | "
            f"{retained.rate:,.0f} jobs/s | {retained.rate / raw:.2f} |"
        )
    harness.prepend_results(lines)


if __name__ == "__main__":
    main()
