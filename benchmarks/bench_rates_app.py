"""Tasks of bench_rates.py: the no-op of bench_app, and the same under rate limits.

A module of its own: a worker draws tokens for every rate-limited task its app declares, so
the apps of the other benchmarks must declare none.
"""

import time

from stagecrew import App

app = App()

SATURATED_RATE = 500


@app.task(max_attempts=3)
async def noop(i: int) -> None:
    return None


@app.task(max_attempts=3, rate_limit=dict(rate="1000000/s", burst=1_000_000))
async def generous_noop(i: int) -> None:
    """A no-op under a rate no fleet reaches: what drawing the tokens costs."""
    return None


@app.task(max_attempts=3, rate_limit=dict(rate=f"{SATURATED_RATE}/s", burst=1))
async def saturated_noop(i: int) -> float:
    """A no-op under a rate far below what the fleet can run: how closely the rate is kept.
    Returns when it started (the job's `started_at` is its claim, which may come a moment
    before its token)."""
    return time.time()


KEY_RATE = 10


@app.task(max_attempts=3, rate_limit=dict(rate=f"{KEY_RATE}/s", key="{key}"))
async def keyed_noop(key: str, i: int) -> None:
    """A no-op limited per key (10/s, burst 10): a key with a backlog is saturated for long."""
    return None
