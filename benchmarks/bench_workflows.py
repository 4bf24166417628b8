"""Workflows: the cost of a chord of N members against N plain jobs, on every engine.

Per engine and run, into an empty store: enqueue N plain no-op jobs (`enqueue_many`, one write)
and drain them with one in-process worker; then enqueue a chord of N no-op members and a
callback (one write) and drain it until the callback ran. Reported: enqueue time, drain time
and the drain's jobs/s for both, and the chord's drain time over the plain drain's (the
price of the fan-in: each member's ack reads its step's members and the workflow's record in
the same write, and the callback's release). Single in-process worker, so the figures are
the store's and the worker's cost, not a fleet's throughput.

    python benchmarks/bench_workflows.py [--engine all|memory|sqlite|postgres|redis]
        [--members 1000] [--runs 3] [--concurrency 50] [--write-results] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from datetime import UTC, datetime
from typing import Any

import harness
from bench_fairness import configure, empty_store
from stagecrew import WorkflowStatus, chord, group
from stagecrew.worker.runner import Worker

ENGINES = ("memory", "sqlite", "postgres", "redis")


def drain(app: Any, concurrency: int) -> None:
    asyncio.run(Worker(app, concurrency=concurrency).drain())


def one_run(engine: str, members: int, concurrency: int) -> dict[str, float]:
    app = harness.make_app("memory://")
    out: dict[str, float] = {}
    for shape in ("plain", "chord"):
        with empty_store(engine) as url:
            if engine == "memory":
                from stagecrew.backends.memory import MemoryBackend

                app.use_backend(MemoryBackend())
            else:
                configure(app, url)
                app.backend  # noqa: B018 - migrate before the clock starts
            noop = app.tasks["noop"]
            started = time.perf_counter()
            if shape == "plain":
                noop.enqueue_many([(i,) for i in range(members)])
                handle = None
            else:
                header = group(*(noop.s(i) for i in range(members)))
                handle = chord(header, app.tasks["count_results"].s()).enqueue()
            enqueued = time.perf_counter()
            drain(app, concurrency)
            if handle is not None:
                while handle.state() is WorkflowStatus.RUNNING:
                    drain(app, concurrency)  # the callback, released by the last member
                if handle.result(timeout=60) != members:
                    raise RuntimeError("the chord's callback did not get every member's result")
            done = time.perf_counter()
            app.close()
        out[f"{shape}_enqueue"] = enqueued - started
        out[f"{shape}_drain"] = done - enqueued
    return out


def run_engine(engine: str, opts: argparse.Namespace) -> dict[str, float]:
    runs = [one_run(engine, opts.members, opts.concurrency) for _ in range(opts.runs)]
    median = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    median["ratio"] = median["chord_drain"] / median["plain_drain"]
    print(
        f"{engine:8}: {opts.members} plain jobs enqueue {median['plain_enqueue'] * 1000:7.1f} ms, "
        f"drain {median['plain_drain']:6.2f} s ({opts.members / median['plain_drain']:7,.0f}/s); "
        f"chord enqueue {median['chord_enqueue'] * 1000:7.1f} ms, drain "
        f"{median['chord_drain']:6.2f} s ({opts.members / median['chord_drain']:7,.0f}/s); "
        f"chord / plain {median['ratio']:.2f}",
        flush=True,
    )
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engine", choices=(*ENGINES, "all"), default="all")
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--write-results", action="store_true")
    opts = parser.parse_args()
    engines = ENGINES if opts.engine == "all" else (opts.engine,)
    results: dict[str, Any] = {"members": opts.members, "runs": opts.runs}
    for engine in engines:
        results[engine] = run_engine(engine, opts)
    harness.write_json(opts.json, results)
    if opts.write_results:
        lines = [
            f"## Workflows: a chord of {opts.members:,} members against {opts.members:,} plain "
            f"jobs — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            "",
            f"`bench_workflows.py`: one in-process worker ({opts.concurrency} slots), no-op "
            f"jobs, median of {opts.runs} runs, each into an empty store.",
            "",
            "| engine | enqueue plain / chord | drain plain | drain chord | chord / plain |",
            "| --- | --- | --- | --- | --- |",
        ]
        for engine in engines:
            r = results[engine]
            lines.append(
                f"| {engine} | {r['plain_enqueue'] * 1000:.1f} / {r['chord_enqueue'] * 1000:.1f}"
                f" ms | {r['plain_drain']:.2f} s | {r['chord_drain']:.2f} s | {r['ratio']:.2f} |"
            )
        lines.append("")
        harness.prepend_results(lines)


if __name__ == "__main__":
    main()
