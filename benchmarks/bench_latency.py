"""Producer and pickup latency, per engine, next to the bare client's floor in the same run.

- one-by-one enqueue: jobs/s of `task.enqueue(i)` and of `app.enqueue("task", (i,))` in a
  loop from one producer, and the bare client doing the least a queue could (redis-py `LPUSH`
  per job; a psycopg `INSERT` and commit per job);
- pickup: one idle worker process; a job is enqueued every ~20 ms and records `time.time()`
  when it starts; pickup is that minus `time.time()` just before the producer's enqueue call,
  so it holds the whole enqueue, the wake-up, the claim and the start of the task (p50, p99),
  for an async and a sync task.

Each engine runs in a fresh key prefix or schema of the test servers (the
STAGECREW_TEST_*_URL variables, as the tests use them), removed at the end.

    python benchmarks/bench_latency.py [--engine redis|postgres|all] [--jobs 5000]
        [--samples 300] [--what enqueue|pickup|both] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import harness
from harness import percentile, servers
from stagecrew import App

PAYLOAD = '{"args": [1], "kwargs": {}}'
Floor = Callable[[str], AbstractContextManager[Callable[[int], Any]]]
"""The bare client's loop body for a store URL (the floor an enqueue is measured against)."""


def latency_app(url: str) -> App:
    import latency_app

    latency_app.app.close()
    latency_app.app.url = url
    latency_app.app._backend = None
    return latency_app.app


def interleaved_rates(contenders: dict[str, Callable[[int], Any]], jobs: int) -> dict[str, float]:
    """Calls/s of each contender's `one(i)`, over `jobs` calls each, measured in turns of
    `ROUND` calls so that a machine's changing load reaches each alike; one untimed call
    each first (connecting)."""
    spent = dict.fromkeys(contenders, 0.0)
    for one in contenders.values():
        one(-1)
    for offset in range(0, jobs, ROUND):
        calls = range(offset, min(jobs, offset + ROUND))
        for name, one in contenders.items():
            start = time.perf_counter()
            for i in calls:
                one(i)
            spent[name] += time.perf_counter() - start
    return {name: jobs / seconds for name, seconds in spent.items()}


ROUND = 250


# -- the stores ---------------------------------------------------------------------------
@contextmanager
def redis_store() -> Iterator[str]:
    base = servers.REDIS_SERVER.url
    prefix = f"bench{uuid.uuid4().hex[:10]}"
    try:
        yield servers.with_query(base, prefix=prefix)
    finally:
        servers.delete_prefix(base, prefix)


@contextmanager
def postgres_store() -> Iterator[str]:
    base = servers.POSTGRES_SERVER.url
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    from stagecrew.backends.postgres import PostgresBackend

    url = servers.with_schema(base, schema)
    backend = PostgresBackend(url)
    backend.migrate()
    backend.close()
    try:
        yield url
    finally:
        servers.drop_schemas(base, [schema])


@contextmanager
def redis_floor(url: str) -> Iterator[Callable[[int], Any]]:
    """A bare redis-py LPUSH per job."""
    import redis

    client = redis.Redis.from_url(url.split("?", maxsplit=1)[0])
    key = f"bench-floor-{uuid.uuid4().hex}"
    try:
        yield lambda i: client.lpush(key, PAYLOAD)
    finally:
        client.delete(key)
        client.close()


@contextmanager
def postgres_floor(url: str) -> Iterator[Callable[[int], Any]]:
    """A bare psycopg INSERT and commit per job."""
    import psycopg

    base = url.split("?", maxsplit=1)[0]
    table = f"bench_floor_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base) as conn:
        conn.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, payload text NOT NULL)")
        conn.commit()
        insert = f"INSERT INTO {table} (payload) VALUES (%s)"

        def one(i: int) -> None:
            conn.execute(insert, (PAYLOAD,))
            conn.commit()

        try:
            yield one
        finally:
            conn.execute(f"DROP TABLE {table}")
            conn.commit()


# -- measurements ------------------------------------------------------------------------------
def enqueue_rates(url: str, jobs: int, floor: Floor) -> dict[str, float]:
    app = latency_app(url)
    stamp = app.tasks["stamp"]
    try:
        with floor(url) as bare:
            return interleaved_rates(
                {
                    "floor": bare,
                    "task.enqueue": stamp.enqueue,
                    "app.enqueue": lambda i: app.enqueue("stamp", (i,)),
                },
                jobs,
            )
    finally:
        app.jobs.purge()
        app.close()


def pickup(url: str, task: str, samples: int, *, settle: float = 2.0) -> list[float]:
    """Seconds from each enqueue call to the task's start, one idle worker process."""
    app = latency_app(url)
    fn = app.tasks[task]
    fn.enqueue(-1)  # connect, and load the scripts
    with tempfile.TemporaryDirectory() as tmp:
        stamps = Path(tmp) / "stamps"
        stamps.touch()
        env = {
            **os.environ,
            "STAGECREW_URL": url,
            "STAGECREW_BENCH_STAMPS": str(stamps),
            "PYTHONPATH": os.pathsep.join([str(harness.HERE), str(harness.SRC)]),
        }
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "stagecrew", "worker", "latency_app:app"),
                *("--processes", "1", "--concurrency", "10", "--log-level", "WARNING"),
            ],
            env=env,
            cwd=harness.HERE,
            start_new_session=True,
        )
        sent: dict[int, float] = {}
        try:
            time.sleep(settle)
            for i in range(samples):
                sent[i] = time.time()
                fn.enqueue(i)
                time.sleep(0.02)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if len(stamps.read_text().splitlines()) >= samples + 1:
                    break
                time.sleep(0.05)
        finally:
            harness.stop_workers(proc)
            app.close()
        started = dict(
            (int(i), float(t))
            for i, t in (line.split() for line in stamps.read_text().splitlines())
        )
    waits = [started[i] - sent[i] for i in sent if i in started]
    if len(waits) < samples:
        raise RuntimeError(f"only {len(waits)} of {samples} jobs ran")
    return waits


def measure(
    name: str, store: Callable[[], Any], floor: Floor, jobs: int, samples: int, what: str
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if what in ("enqueue", "both"):
        with store() as url:
            rates = enqueue_rates(url, jobs, floor)
        results["enqueue_per_s"] = rates
        line = ", ".join(f"{k} {v:,.0f}" for k, v in rates.items())
        print(f"{name}: one-by-one enqueue/s: {line}", flush=True)
    if what in ("pickup", "both"):
        for task in ("stamp", "stamp_sync"):
            with store() as url:
                waits = pickup(url, task, samples)
            p50, p99 = statistics.median(waits), percentile(waits, 0.99)
            results[f"pickup_{task}_ms"] = (p50 * 1000, p99 * 1000)
            results[f"pickup_{task}_waits_s"] = waits
            print(f"{name}: pickup {task}: p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engine", choices=("redis", "postgres", "all"), default="all")
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--what", choices=("enqueue", "pickup", "both"), default="both")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    if args.engine in ("redis", "all"):
        results["redis"] = measure(
            "redis", redis_store, redis_floor, args.jobs, args.samples, args.what
        )
    if args.engine in ("postgres", "all"):
        results["postgres"] = measure(
            "postgres", postgres_store, postgres_floor, args.jobs, args.samples, args.what
        )
    print(harness.machine("Redis and PostgreSQL test servers"))
    harness.write_json(args.json, results)


if __name__ == "__main__":
    main()
