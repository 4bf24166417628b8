"""Tasks the benchmarks run: no-ops, jobs doing real work (waiting, burning CPU), sync and
async, and one that says when it ran."""

import asyncio
import time

from stagecrew import App

app = App()

SLEEP_SECONDS = 0.010
"""What an I/O-bound job waits."""
BURN_CPU_SECONDS = 0.002
"""What a CPU-bound job computes, in CPU seconds of its own thread."""


def burn_cpu(seconds: float) -> None:
    """Busy-loop until this thread has used `seconds` of CPU.

    Thread CPU time, not wall time: while the thread waits for the GIL or the core, its clock
    stands still, so every job costs the same CPU however many run at once.
    """
    deadline = time.thread_time() + seconds
    while time.thread_time() < deadline:
        pass


@app.task(max_attempts=3)
async def noop(i: int) -> None:
    return None


@app.task(max_attempts=3)
def noop_sync(i: int) -> None:
    return None


@app.task(max_attempts=3)
def fair_noop(tag: str, i: int) -> None:
    """A no-op of bench_fairness.py: `tag` says which batch it belongs to."""
    return None


@app.task(max_attempts=3)
def sleep_10ms(i: int) -> None:
    time.sleep(SLEEP_SECONDS)


@app.task(max_attempts=3)
async def sleep_10ms_async(i: int) -> None:
    await asyncio.sleep(SLEEP_SECONDS)


@app.task(max_attempts=3)
def burn_2ms(i: int) -> None:
    burn_cpu(BURN_CPU_SECONDS)


@app.task(max_attempts=3)
async def burn_2ms_async(i: int) -> None:
    """Burns on the event loop itself: nothing else of the worker process runs meanwhile."""
    burn_cpu(BURN_CPU_SECONDS)


@app.task(max_attempts=1)
async def started_at() -> float:
    """The time (`time.time()`) at which the job began to run."""
    return time.time()


@app.task(max_attempts=3)
def count_results(values: list[object]) -> int:
    """A chord's callback in bench_workflows.py: how many member results it got."""
    return len(values)
