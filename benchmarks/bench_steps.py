"""The cost of durable steps per engine: one `ctx.step` (its store round trips) against a no-op.

For each engine, in one run: a drain of N no-op jobs, a drain of N jobs that each run one
`ctx.step` (the attempt's one read of its steps, then the step's fenced write), and the
store round trip of one `store_step` alone, on a claimed job. Reported per job in µs, with
the step job's time as a ratio to the no-op's. Sync and async tasks are measured apart: a
sync task's step goes through the store's sync driver on its job thread, an async task's
through the async driver on the loop. Every store is a fresh one (a file, a schema, a key
prefix), removed afterwards.

    PYTHONPATH=src python benchmarks/bench_steps.py [--jobs 2000] [--engines sqlite,postgres,redis]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from stagecrew import App, Context
from stagecrew.testing.engines import ENGINES
from stagecrew.worker.runner import Worker


def make_app(url: str) -> App:
    app = App(url)

    @app.task(name="noop")
    def noop(i: int) -> None:
        return None

    @app.task(name="one_step")
    def one_step(i: int, ctx: Context) -> None:
        ctx.step("only", int, i)

    @app.task(name="anoop")
    async def anoop(i: int) -> None:
        return None

    @app.task(name="aone_step")
    async def aone_step(i: int, ctx: Context) -> None:
        await ctx.step_async("only", int, i)

    return app


def drain_seconds(app: App, task: str, jobs: int) -> float:
    app.tasks[task].enqueue_many([(i,) for i in range(jobs)])
    started = time.perf_counter()
    ran = asyncio.run(Worker(app, concurrency=20).drain())
    elapsed = time.perf_counter() - started
    assert ran == jobs, f"{task}: ran {ran} of {jobs}"
    return elapsed


def store_step_seconds(app: App, calls: int) -> tuple[float, float]:
    """One `store_step` round trip, and one heartbeat's (a fenced write the hot path makes
    already) on the same claim, for scale."""
    app.enqueue("noop", [0])
    [claimed] = app.backend.claim(["default"], "bench", 1, 300.0)
    started = time.perf_counter()
    for i in range(calls):
        assert app.backend.store_step(claimed.ref, f"s{i}", "1")
    step = (time.perf_counter() - started) / calls
    started = time.perf_counter()
    for _ in range(calls):
        app.backend.heartbeat("bench", [claimed.ref], 300.0)
    return step, (time.perf_counter() - started) / calls


def bench_engine(engine: str, jobs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, ENGINES[engine].stores(Path(tmp)) as stores:
        app = make_app(stores.url())
        try:
            app.backend.prepare()
            results = {}
            for label, task in (
                ("noop", "noop"),
                ("step", "one_step"),
                ("anoop", "anoop"),
                ("astep", "aone_step"),
            ):
                results[label] = drain_seconds(app, task, jobs) / jobs
            results["store_step"], results["heartbeat"] = store_step_seconds(app, min(jobs, 1000))
            return results
        finally:
            app.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--engines", default="sqlite,postgres,redis")
    options = parser.parse_args()
    print(f"jobs per drain: {options.jobs}; times in µs per job")
    print(
        f"{'engine':<10} {'sync noop':>10} {'sync 1 step':>12} {'ratio':>6} "
        f"{'async noop':>11} {'async 1 step':>13} {'ratio':>6} {'store_step':>11} {'heartbeat':>10}"
    )
    for engine in options.engines.split(","):
        r = bench_engine(engine, options.jobs)
        us = {k: v * 1e6 for k, v in r.items()}
        print(
            f"{engine:<10} {us['noop']:>10.0f} {us['step']:>12.0f} {r['step'] / r['noop']:>6.2f} "
            f"{us['anoop']:>11.0f} {us['astep']:>13.0f} {r['astep'] / r['anoop']:>6.2f} "
            f"{us['store_step']:>11.0f} {us['heartbeat']:>10.0f}"
        )


if __name__ == "__main__":
    main()
