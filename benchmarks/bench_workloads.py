"""Workload benchmark: drains of jobs doing real work, on every engine, against the ideal.

- I/O-bound: jobs that each wait 10 ms, sync (`sleep_10ms`, on the worker's thread pool)
  and async (`sleep_10ms_async`, on its event loop). Ideal: every one of the
  `processes x concurrency` slots always busy, `processes x concurrency / 10 ms` jobs/s.
- CPU-bound: jobs that each burn 2 ms of their thread's CPU, sync (`burn_2ms`) and async
  (`burn_2ms_async`, on the loop itself). Ideal: `min(processes, cores) / 2 ms` jobs/s, since
  a process computes Python on one core at a time (the GIL) and there are only so many cores.

The workers run with the defaults of `stagecrew worker` (its --concurrency, lease, grace and
poll interval) and the other scripts' --processes 2. Each drain pre-queues the jobs its ideal
would finish in --seconds into an empty store (a temporary SQLite file, a fresh PostgreSQL
schema, a fresh Redis key prefix on the servers of the engine registry), then starts the
workers; it reports two rates, each with its ratio to the ideal:

- steady: from the first claim to the last completion, as the store recorded them;
- whole drain: from launching the workers to seeing the last job succeed (start-up included).

To tell where the time goes it also reports the CPU the worker processes used (their
supervisor's included, start-up and stop too): per job, against the job's own 2 ms when it
computes, and as a share of the cores over the whole drain (less than all of them when other
processes, the store's server among them, take the rest).

PostgreSQL and Redis must be up (`STAGECREW_TEST_POSTGRES_URL`, `STAGECREW_TEST_REDIS_URL`,
the registry's defaults otherwise); the run stops before measuring anything if one is not.

    python benchmarks/bench_workloads.py [--engines sqlite,postgres,redis] [--seconds 5]
        [--workloads sleep_10ms,burn_2ms,...] [--write-results] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import sqlite3
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import harness
from bench_app import BURN_CPU_SECONDS, SLEEP_SECONDS
from harness import DrainRates, make_app

PROCESSES = 2
"""As the other benchmark scripts run their drains."""


# -- workloads ---------------------------------------------------------------------------------
class IdealRate(Protocol):
    def __call__(self, *, processes: int, concurrency: int, cores: int) -> float:
        """Jobs/s with no overhead at all."""
        ...


@dataclass(frozen=True)
class Workload:
    task: str
    kind: str
    """"I/O-bound" or "CPU-bound"."""
    ideal: IdealRate


def io_bound_ideal(*, processes: int, concurrency: int, cores: int) -> float:
    """Every slot busy waiting: the cores do not limit waiting."""
    return processes * concurrency / SLEEP_SECONDS


def cpu_bound_ideal(*, processes: int, concurrency: int, cores: int) -> float:
    """Every process computing on a core of its own, however many slots each has."""
    return min(processes, cores) / BURN_CPU_SECONDS


WORKLOADS = {
    w.task: w
    for w in (
        Workload("sleep_10ms", "I/O-bound", io_bound_ideal),
        Workload("sleep_10ms_async", "I/O-bound", io_bound_ideal),
        Workload("burn_2ms", "CPU-bound", cpu_bound_ideal),
        Workload("burn_2ms_async", "CPU-bound", cpu_bound_ideal),
    )
}


def default_concurrency() -> int:
    """`stagecrew worker --concurrency`'s default, read from the command itself."""
    from stagecrew.cli.worker import worker

    (option,) = [p for p in worker.params if p.name == "concurrency"]
    return int(option.default)  # type: ignore[arg-type]


def usable_cores() -> int:
    """The cores this process may run on (all of them where that cannot be asked)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# -- engines -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Engine:
    label: str
    server: Any
    """Its `stagecrew.testing.servers.Server`, or None for an embedded engine."""
    empty_store: Callable[[str], contextlib.AbstractContextManager[str]]
    """The URL of an empty store on the server at the given URL, removed afterwards."""
    version: Callable[[str], str]


@contextlib.contextmanager
def sqlite_store(_: str) -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        yield f"sqlite:///{tmp}/workload.db"


@contextlib.contextmanager
def postgres_store(url: str) -> Iterator[str]:
    import bench_postgres

    with bench_postgres.fresh_schema(url) as schema:
        yield bench_postgres.with_schema(url, schema)


@contextlib.contextmanager
def redis_store(url: str) -> Iterator[str]:
    import bench_redis

    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        yield bench_redis.with_prefix(url, prefix)
    finally:
        bench_redis.delete_prefix(url, prefix)


def postgres_version(url: str) -> str:
    from psycopg import sql

    import bench_postgres

    return f"PostgreSQL {bench_postgres.scalar(url, sql.SQL('SHOW server_version'))}"


def redis_version(url: str) -> str:
    import bench_redis

    return f"Redis {bench_redis.server_version(url)}"


ENGINES = {
    "sqlite": Engine("SQLite", None, sqlite_store, lambda _: f"SQLite {sqlite3.sqlite_version}"),
    "postgres": Engine(
        "PostgreSQL", harness.servers.POSTGRES_SERVER, postgres_store, postgres_version
    ),
    "redis": Engine("Redis", harness.servers.REDIS_SERVER, redis_store, redis_version),
}


def server_urls(engines: Sequence[str]) -> dict[str, str]:
    """Each engine's server URL from the registry ("" for an embedded engine)."""
    return {e: "" if ENGINES[e].server is None else ENGINES[e].server.url for e in engines}


def require_servers(urls: Mapping[str, str]) -> None:
    """Stop the run, saying which and where, if a server an engine needs does not answer."""
    for name, url in urls.items():
        server = ENGINES[name].server
        if server is None:
            continue
        try:
            server.ping(url)
        except Exception as exc:  # whatever the client raises is the reason
            raise SystemExit(
                f"{server.name} is not reachable at {server.variable}={url!r}: {exc}\n"
                f"start it, or leave it out with --engines"
            ) from None


# -- measuring ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Figures:
    engine: str
    task: str
    jobs: int
    ideal: float
    rates: DrainRates
    worker_cpu: float
    """CPU seconds (user + system) of the supervisor and its worker processes."""
    cores: int

    @property
    def whole(self) -> float:
        assert self.rates.whole is not None  # harness.drain measures it
        return self.rates.whole

    @property
    def cpu_per_job(self) -> float:
        return self.worker_cpu / self.jobs

    @property
    def share_of_cores(self) -> float:
        """The worker processes' CPU over the whole drain, as a share of every core's time."""
        return self.worker_cpu / (self.jobs / self.whole * self.cores)


def children_cpu() -> float:
    """CPU seconds of this process's finished children (and theirs, once they reaped them)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(
    engine: str, url: str, workload: Workload, seconds: float, concurrency: int, cores: int
) -> Figures:
    ideal = workload.ideal(processes=PROCESSES, concurrency=concurrency, cores=cores)
    jobs = round(ideal * seconds)
    with ENGINES[engine].empty_store(url) as store:
        app = make_app(store)
        try:
            cpu_before = children_cpu()
            rates = harness.drain(app, store, jobs, PROCESSES, concurrency, workload.task)
            worker_cpu = children_cpu() - cpu_before
        finally:
            app.close()
    return Figures(engine, workload.task, jobs, ideal, rates, worker_cpu, cores)


def describe(f: Figures) -> str:
    return (
        f"{ENGINES[f.engine].label} {f.task}: {f.jobs:,} jobs, steady {f.rates.rate:,.0f} jobs/s "
        f"({f.rates.rate / f.ideal:.2f} of the ideal {f.ideal:,.0f}), whole drain "
        f"{f.whole:,.0f} jobs/s ({f.whole / f.ideal:.2f}); worker CPU "
        f"{f.cpu_per_job * 1000:.2f} ms per job, {f.share_of_cores:.0%} of the cores"
    )


# -- the command -----------------------------------------------------------------------------
def engine_list(value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in ENGINES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"engines are a comma-separated list of {', '.join(ENGINES)}; not {value!r}"
        )
    return list(dict.fromkeys(names))


def workload_list(value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"workloads are a comma-separated list of {', '.join(WORKLOADS)}; not {value!r}"
        )
    return list(dict.fromkeys(names))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--engines",
        type=engine_list,
        default=list(ENGINES),
        help=f"comma-separated, of {', '.join(ENGINES)} (default: all)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=5.0,
        help="jobs per drain: what the ideal rate finishes in this many seconds",
    )
    parser.add_argument(
        "--workloads",
        type=workload_list,
        default=list(WORKLOADS),
        help=f"comma-separated, of {', '.join(WORKLOADS)} (default: all)",
    )
    parser.add_argument("--write-results", action="store_true")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    return parser.parse_args(argv)


def main() -> None:
    opts = parse_args()
    urls = server_urls(opts.engines)
    require_servers(urls)
    concurrency, cores = default_concurrency(), usable_cores()
    print(
        f"--processes {PROCESSES} --concurrency {concurrency} (the worker's default), "
        f"{cores} cores",
        flush=True,
    )
    versions = [ENGINES[e].version(urls[e]) for e in opts.engines]
    results: list[Figures] = []
    for engine in opts.engines:
        for task in opts.workloads:
            figures = measure(
                engine, urls[engine], WORKLOADS[task], opts.seconds, concurrency, cores
            )
            results.append(figures)
            print(describe(figures), flush=True)

    harness.write_json(
        opts.json,
        {
            "processes": PROCESSES,
            "concurrency": concurrency,
            "cores": cores,
            "versions": versions,
            "drains": [
                asdict(f) | {"cpu_per_job": f.cpu_per_job, "share_of_cores": f.share_of_cores}
                for f in results
            ],
        },
    )
    if opts.write_results:
        write_results(opts, versions, concurrency, cores, results)


def write_results(
    opts: argparse.Namespace,
    versions: Sequence[str],
    concurrency: int,
    cores: int,
    results: Sequence[Figures],
) -> None:
    lines = [
        f"## Workloads, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        harness.machine(", ".join(versions)),
        "",
        f"Workers: `--processes {PROCESSES} --concurrency {concurrency}` (the worker's default "
        f"concurrency; lease, grace and poll interval at their defaults), {cores} usable cores. "
        f"Each drain pre-queues what its ideal finishes in {opts.seconds:g} s. I/O-bound ideal: "
        f"processes x concurrency / {SLEEP_SECONDS * 1000:g} ms; CPU-bound ideal: "
        f"min(processes, cores) / {BURN_CPU_SECONDS * 1000:g} ms of CPU. Steady: first claim "
        "to last completion (store times); whole drain: from launching the workers to seeing "
        "the last job succeed. Worker CPU: user + system seconds of the supervisor and its "
        "workers (start-up and stop included), per job and as a share of all the cores over the "
        "whole drain. The machine may be shared: the figures are indicative.",
        "",
        "| engine | workload | jobs | ideal | steady | ratio | whole drain | ratio "
        "| worker CPU per job | share of the cores |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for f in results:
        kind = WORKLOADS[f.task].kind
        style = "async" if f.task.endswith("_async") else "sync"
        lines.append(
            f"| {ENGINES[f.engine].label} | {kind}, {style} (`{f.task}`) | {f.jobs:,} "
            f"| {f.ideal:,.0f} jobs/s | {f.rates.rate:,.0f} jobs/s | {f.rates.rate / f.ideal:.2f} "
            f"| {f.whole:,.0f} jobs/s | {f.whole / f.ideal:.2f} "
            f"| {f.cpu_per_job * 1000:.2f} ms | {f.share_of_cores:.0%} |"
        )
    harness.prepend_results(lines)


if __name__ == "__main__":
    main()
