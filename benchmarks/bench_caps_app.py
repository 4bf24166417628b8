"""Tasks of bench_caps.py: the same no-op as bench_app's, and tasks with concurrency caps.

A module of their own: a worker sends the caps of every task its app declares with each claim,
so the apps of the other benchmarks must declare none.
"""

import asyncio

from bench_app import SLEEP_SECONDS
from stagecrew import App

app = App()


@app.task(max_attempts=3)
async def noop(i: int) -> None:
    return None


@app.task(max_attempts=3, concurrency=1_000_000)
async def capped_noop(i: int) -> None:
    """A no-op of bench_caps.py under a cap no fleet reaches: what a claim within caps costs."""
    return None


@app.task(max_attempts=3, concurrency=dict(key="{key}", limit=2))
async def keyed_sleep(key: str, i: int) -> None:
    """bench_caps.py: at most two per key at once (fair-queued by key, the default); each
    waits 10 ms."""
    await asyncio.sleep(SLEEP_SECONDS)


@app.task(max_attempts=3, concurrency=dict(key="{key}", limit=2, fair=False))
async def keyed_fifo_sleep(key: str, i: int) -> None:
    """`keyed_sleep` in plain FIFO order (`fair=False`): a key's backlog, waiting on its cap,
    lies ahead of the other keys' jobs, and every capped claim steps over it."""
    await asyncio.sleep(SLEEP_SECONDS)
