"""Fair queues: a small tenant's wait while another tenant's flood drains, on every engine.

With workers draining, one fairness key enqueues a flood (100,000 jobs by default), then
another key enqueues 100. Reported per engine:

- the small key's p50 / p95 / max wait (its jobs' started_at - enqueued_at, store times);
- the drain throughput of the whole run, next to two drains of the same size and shape: one
  where every job has the same fairness key ("single key"), and one without keys (plain
  FIFO, where the 100 late jobs wait behind the flood: the wait fairness removes).

SQLite, PostgreSQL and Redis run real worker processes (`stagecrew worker`); memory:// runs
one worker in this process (the engine is in-process only).

    python benchmarks/bench_fairness.py [--engine all|memory|sqlite|postgres|redis]
        [--flood 100000] [--small 100] [--processes 2] [--concurrency 50] [--json PATH]
        [--write-results]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import harness
from harness import percentile, start_workers, stop_workers
from stagecrew import App, JobState
from stagecrew.worker.runner import Worker

ENGINES = ("memory", "sqlite", "postgres", "redis")
SHAPES: dict[str, tuple[str | None, str | None]] = {
    "fair": ("tenant-big", "tenant-small"),
    "single_key": ("tenant-big", "tenant-big"),
    "no_keys": (None, None),
}
"""The fairness keys of the flood and of the late jobs, per kind of drain."""
BATCH = 10_000


@dataclass(frozen=True)
class Run:
    """One drain: the late jobs' waits, and the throughput over every job."""

    late_p50: float
    late_p95: float
    late_max: float
    rate: float
    """Jobs/s from the first claim to the last completion (store times)."""


def configure(app: App, url: str) -> None:
    app.close()
    app.url = url
    app._backend = None


def enqueue(app: App, key: str | None, count: int, *, tag: str) -> None:
    task = app.tasks["fair_noop"]
    for offset in range(0, count, BATCH):
        calls = [(tag, i) for i in range(offset, min(count, offset + BATCH))]
        task.options(fairness_key=key).enqueue_many(calls) if key else task.enqueue_many(calls)


def measure(app: App, flood: int, small: int) -> Run:
    jobs = app.jobs.list(state=JobState.SUCCEEDED, task="fair_noop", limit=flood + small + 10)
    if len(jobs) != flood + small:
        raise RuntimeError(f"expected {flood + small} succeeded jobs, found {len(jobs)}")
    late = [j for j in jobs if j.args[0] == "small"]
    waits = [(j.started_at or 0.0) - j.enqueued_at for j in late]
    first = min(j.started_at or 0.0 for j in jobs)
    last = max(j.finished_at or 0.0 for j in jobs)
    return Run(
        late_p50=statistics.median(waits),
        late_p95=percentile(waits, 0.95),
        late_max=max(waits),
        rate=len(jobs) / (last - first),
    )


def scenario(
    app: App,
    running: Callable[[], Any],
    flood: int,
    small: int,
    keys: tuple[str | None, str | None],
) -> Run:
    """Workers run (`running` is their context) while the flood and then the small batch are
    enqueued; returns once every job succeeded."""
    big_key, small_key = keys
    total = flood + small + 1
    with running():
        warm_up(app)
        enqueue(app, big_key, flood, tag="flood")
        enqueue(app, small_key, small, tag="small")
        deadline = time.monotonic() + 1200
        while sum(q.count(JobState.SUCCEEDED) for q in app.jobs.stats()) < total:
            if time.monotonic() > deadline:
                raise RuntimeError("the drain did not finish within 20 minutes")
            time.sleep(0.1)
    return measure(app, flood, small)


def warm_up(app: App) -> None:
    """Run one job first, so that the workers are up and claiming when the flood arrives (a
    late wait must not include their start-up)."""
    handle = app.tasks["noop_sync"].enqueue(0)
    deadline = time.monotonic() + 120
    while handle.get().state is not JobState.SUCCEEDED:
        if time.monotonic() > deadline:
            raise RuntimeError("the workers did not run a first job within 2 minutes")
        time.sleep(0.05)
    time.sleep(0.5)  # every worker process is up by now: let them go idle


@contextmanager
def process_workers(url: str, processes: int, concurrency: int) -> Iterator[None]:
    proc = start_workers(url, processes, concurrency)
    try:
        yield
    finally:
        stop_workers(proc)


@contextmanager
def thread_worker(app: App, concurrency: int) -> Iterator[None]:
    """One worker on its own event loop, in a thread (the memory engine is in-process)."""
    import threading

    worker = Worker(app, concurrency=concurrency, poll_interval=0.05)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(
        target=loop.run_until_complete, args=(worker.run(install_signal_handlers=False),)
    )
    thread.start()
    try:
        yield
    finally:
        loop.call_soon_threadsafe(worker.request_stop)
        thread.join(60)
        loop.close()


@contextmanager
def empty_store(engine: str) -> Iterator[str]:
    """A fresh store URL for one drain, removed afterwards (bench_workloads' stores)."""
    if engine == "memory":
        yield "memory://"
        return
    import bench_workloads

    chosen = bench_workloads.ENGINES[engine]
    with chosen.empty_store(chosen.server.url if chosen.server else "") as url:
        yield url


def run_engine(engine: str, opts: argparse.Namespace) -> dict[str, Any]:
    app = harness.make_app("memory://")
    out: dict[str, Any] = {}
    for name in opts.shapes.split(","):
        keys = SHAPES[name]
        with empty_store(engine) as url:
            if engine == "memory":
                from stagecrew.backends.memory import MemoryBackend

                app.use_backend(MemoryBackend())

                def running() -> Any:
                    return thread_worker(app, opts.concurrency)
            else:
                configure(app, url)
                app.backend  # noqa: B018 - migrate before the workers start

                def running() -> Any:
                    return process_workers(url, opts.processes, opts.concurrency)

            result = scenario(app, running, opts.flood, opts.small, keys)
            app.close()
        out[name] = result.__dict__
        print(
            f"{engine:8} {name:10}: late {opts.small} jobs wait p50 {result.late_p50:7.3f}s "
            f"p95 {result.late_p95:7.3f}s max {result.late_max:7.3f}s; "
            f"drain {result.rate:8,.0f} jobs/s",
            flush=True,
        )
    if {"fair", "single_key", "no_keys"} <= out.keys():
        out["fair_vs_single_key"] = out["fair"]["rate"] / out["single_key"]["rate"]
        out["fair_vs_no_keys"] = out["fair"]["rate"] / out["no_keys"]["rate"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engine", choices=(*ENGINES, "all"), default="all")
    parser.add_argument("--flood", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument(
        "--shapes",
        default=",".join(SHAPES),
        help="which drains, comma-separated (no_keys alone runs on a tree without fair queues)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--write-results", action="store_true")
    opts = parser.parse_args()
    engines = ENGINES if opts.engine == "all" else (opts.engine,)
    results: dict[str, Any] = {"flood": opts.flood, "small": opts.small}
    for engine in engines:
        results[engine] = run_engine(engine, opts)
    harness.write_json(opts.json, results)
    if opts.write_results:
        write_results(opts, results, engines)


def write_results(
    opts: argparse.Namespace, results: dict[str, Any], engines: tuple[str, ...]
) -> None:
    lines = [
        f"## Fair queues — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"{opts.flood:,} jobs of one fairness key, then {opts.small} of another, enqueued while "
        f"{opts.processes} worker processes x {opts.concurrency} drain (memory: one worker in "
        "process). Late jobs' wait = started_at - enqueued_at; drain = jobs/s first claim to "
        "last completion. `single key`: the same run with every job under one key; `no keys`: "
        "plain FIFO.",
        "",
        "| engine | late p95, fair | late p95, no keys | drain fair | single key | no keys "
        "| fair / single key |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for engine in engines:
        r = results[engine]
        lines.append(
            f"| {engine} | {r['fair']['late_p95']:.3f} s | {r['no_keys']['late_p95']:.3f} s "
            f"| {r['fair']['rate']:,.0f}/s | {r['single_key']['rate']:,.0f}/s "
            f"| {r['no_keys']['rate']:,.0f}/s | {r['fair_vs_single_key']:.2f} |"
        )
    lines.append("")
    harness.prepend_results(lines)


if __name__ == "__main__":
    main()
