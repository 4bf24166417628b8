"""Several OS processes, released at once, enqueue one unique key, then one idempotency key:
each key ends up with exactly one job, and every handle any process got names it."""

from __future__ import annotations

import multiprocessing
import traceback
from pathlib import Path
from typing import Any

import pytest

from stagecrew import App
from stagecrew.testing.engines import Engine, engine_params

pytestmark = pytest.mark.slow

PROCESSES = 4
ROUNDS = 8
"""Per process and key: one enqueue and one enqueue_many of the key twice, ROUNDS times."""

Handles = list[tuple[int, bool]]


def _race(url: str, start: Any, out: Any) -> None:
    """Open the store, then at each barrier race the others on one key; report the handles
    (id, created) of both races, or the traceback of what went wrong."""
    try:
        app = App(url)

        @app.task(name="by_unique", unique=dict(key="race-{n}"))
        def by_unique(n: int) -> None: ...

        @app.task(name="by_idempotency")
        def by_idempotency(n: int) -> None: ...

        keyed = by_idempotency.options(idempotency_key="race")
        app.jobs.list(limit=1)  # the connection is open before the race starts
        races: list[Handles] = []
        for enqueue, enqueue_many in (
            (by_unique.enqueue, by_unique.enqueue_many),
            (keyed.enqueue, keyed.enqueue_many),
        ):
            start.wait(timeout=120)
            handles = []
            for _ in range(ROUNDS):
                handles.append(enqueue(0))
                handles.extend(enqueue_many([(0,), (0,)]))
            races.append([(h.id, h.created) for h in handles])
        app.close()
        out.put(("ok", races))
    except BaseException:
        start.abort()  # the others stop waiting for this one
        out.put(("failed", traceback.format_exc()))


@pytest.mark.parametrize("engine", engine_params(cross_process=True))
def test_processes_racing_on_one_key_make_one_job_per_key(tmp_path: Path, engine: Engine) -> None:
    with engine.stores(tmp_path) as stores:
        url = stores.url()
        ctx = multiprocessing.get_context("spawn")
        start, out = ctx.Barrier(PROCESSES), ctx.Queue()
        processes = [ctx.Process(target=_race, args=(url, start, out)) for _ in range(PROCESSES)]
        for process in processes:
            process.start()
        try:
            reports = [out.get(timeout=120) for _ in processes]
        finally:
            for process in processes:
                process.join(timeout=30)
                if process.exitcode is None:
                    process.kill()
        failures = [detail for status, detail in reports if status != "ok"]
        assert failures == []
        assert [process.exitcode for process in processes] == [0] * PROCESSES
        reader = App(url)
        try:
            stored = {task: reader.jobs.list(task=task) for task in ("by_unique", "by_idempotency")}
        finally:
            reader.close()
    for race, task in enumerate(("by_unique", "by_idempotency")):
        handles = [handle for _, races in reports for handle in races[race]]
        assert len(handles) == PROCESSES * ROUNDS * 3
        [job] = stored[task]
        assert {job_id for job_id, _ in handles} == {job.id}, task
        assert sum(created for _, created in handles) == 1, task
