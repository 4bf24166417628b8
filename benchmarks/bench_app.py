"""Tasks the benchmarks run: no-ops, sync and async, and one that says when it ran."""

import time

from stagecrew import App

app = App()


@app.task(max_attempts=3)
async def noop(i: int) -> None:
    return None


@app.task(max_attempts=3)
def noop_sync(i: int) -> None:
    return None


@app.task(max_attempts=1)
async def started_at() -> float:
    """The time (`time.time()`) at which the job began to run."""
    return time.time()
