"""The producer side of a run, inside a library's own venv: `python bench_client.py ADAPTER ACTION`.

Actions (each prints one JSON object on its last line of stdout):

- `prepare`: create the library's schema in the run's store, if it has one.
- `enqueue N`: jobs/s of enqueueing jobs 0..N-1 one call each; the first call (warm-up job
  -1, which connects) is not timed.
- `bulk N BATCH`: jobs/s of the library's bulk enqueue in batches of BATCH (warm-up batch
  [-1] not timed); `{"bulk": null}` if the library has none.
- `trickle N PAUSE`: with workers already running, enqueue warm-up jobs and wait until they
  ran, then enqueue jobs 0..N-1 one at a time, PAUSE seconds apart, and print each one's
  enqueue time (`time.time()` as its enqueue call starts: a worker blocked on the store may
  start the job before the call has returned).

An adapter module defines `enqueue(indices)` and, if the library has a bulk enqueue,
`enqueue_bulk(batches)`, either sync or `async def`; each enqueues what the iterator yields,
in order, with one library call per index (or per batch), and returns when it is exhausted.
`prepare()` is optional.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from bench_records import RECORDS, read_records

WARM_UPS = (-1, -2, -3, -4)
SETTLE = 1.0
"""Seconds the workers get to go idle after the warm-up jobs ran."""


def call(fn: Callable[..., Any], *args: Any) -> Any:
    result = fn(*args)
    return asyncio.run(result) if inspect.iscoroutine(result) else result


class Timed:
    """Indices to enqueue; the clock starts once the warm-up item has been enqueued."""

    def __init__(self, items: list[Any], warm_up: Any) -> None:
        self.items = items
        self.warm_up = warm_up
        self.started = self.finished = 0.0

    def __iter__(self) -> Iterator[Any]:
        yield self.warm_up
        self.started = time.perf_counter()
        yield from self.items
        self.finished = time.perf_counter()

    def rate(self, jobs: int) -> float:
        return jobs / (self.finished - self.started)


def trickle(adapter: Any, jobs: int, pause: float) -> dict[int, float]:
    enqueued: dict[int, float] = {}

    def indices() -> Iterator[int]:
        yield from WARM_UPS
        deadline = time.monotonic() + 120
        while not set(WARM_UPS) <= read_records(RECORDS).keys():
            if time.monotonic() > deadline:
                raise SystemExit("the warm-up jobs did not run within 120 s")
            time.sleep(0.05)
        time.sleep(SETTLE)
        for i in range(jobs):
            enqueued[i] = time.time()
            yield i
            time.sleep(pause)

    call(adapter.enqueue, indices())
    return enqueued


def main(argv: list[str]) -> None:
    name, action, *args = argv
    adapter = importlib.import_module(name)
    result: dict[str, Any]
    if action == "prepare":
        if hasattr(adapter, "prepare"):
            call(adapter.prepare)
        result = {"prepared": True}
    elif action == "enqueue":
        jobs = int(args[0])
        timed = Timed(list(range(jobs)), -1)
        call(adapter.enqueue, iter(timed))
        result = {"enqueue": timed.rate(jobs)}
    elif action == "bulk":
        jobs, batch = int(args[0]), int(args[1])
        if not hasattr(adapter, "enqueue_bulk"):
            result = {"bulk": None}
        else:
            batches = [list(range(i, min(jobs, i + batch))) for i in range(0, jobs, batch)]
            timed = Timed(batches, [-1])
            call(adapter.enqueue_bulk, iter(timed))
            result = {"bulk": timed.rate(jobs)}
    elif action == "trickle":
        result = {"enqueued": trickle(adapter, int(args[0]), float(args[1]))}
    else:
        raise SystemExit(f"unknown action {action!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
