"""chain, group and chord end to end on every engine, run by an in-process worker."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stagecrew import (
    App,
    Context,
    InvalidArgumentsError,
    SerializationError,
    WorkflowCancelledError,
    WorkflowFailedError,
    WorkflowStatus,
    chain,
    chord,
    group,
)
from stagecrew.errors import ConfigurationError
from stagecrew.testing.engines import Engine, engine_params
from stagecrew.worker.runner import Worker


@pytest.fixture(params=engine_params())
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[App]:
    engine: Engine = request.param
    with engine.stores(tmp_path) as stores:
        app = App(stores.url())

        @app.task
        def add(x: int, y: int = 0) -> int:
            return x + y

        @app.task
        def double(x: int) -> int:
            return 2 * x

        @app.task
        async def total(values: list[int]) -> int:
            return sum(values)

        @app.task(max_attempts=1)
        def boom(x: int) -> int:
            raise ValueError(f"boom {x}")

        @app.task
        def member_of(_: object, ctx: Context) -> int:
            return ctx.job_id

        try:
            yield app
        finally:
            app.close()


def run(app: App, rounds: int = 20) -> None:
    """Drain the app's queue until nothing is due (each step's release makes more due)."""
    for _ in range(rounds):
        if asyncio.run(Worker(app, concurrency=4).drain()) == 0:
            return


def task(app: App, name: str) -> Any:
    return next(t for n, t in app.tasks.items() if n.rsplit(".", 1)[-1] == name)


def test_a_chain_feeds_each_result_to_the_next_task(app: App) -> None:
    add, double = task(app, "add"), task(app, "double")
    handle = chain(add.s(1, 2), add.s(10), double.s()).enqueue()
    assert handle.state() is WorkflowStatus.RUNNING
    run(app)
    assert handle.result(timeout=10) == 26
    found = app.workflows.get(handle.id)
    assert [(j.workflow_step, j.result_value) for j in found.members] == [(0, 3), (1, 13), (2, 26)]


def test_a_group_returns_its_results_in_order(app: App) -> None:
    add = task(app, "add")
    handle = group(*(add.s(i, i) for i in range(5))).enqueue()
    run(app)
    assert handle.result(timeout=10) == [0, 2, 4, 6, 8]


def test_a_chain_of_a_task_a_group_and_a_chord_nests(app: App) -> None:
    add, total, double = task(app, "add"), task(app, "total"), task(app, "double")
    handle = chain(add.s(1, 1), chord(group(add.s(1), add.s(2)), total.s()), double.s()).enqueue()
    run(app)
    assert handle.result(timeout=10) == 14  # 2 -> [3, 4] -> 7 -> 14
    assert [s.group for s in handle.get().shape] == [False, True, False, False]


def test_a_chord_runs_its_callback_on_the_list_of_results(app: App) -> None:
    add, total = task(app, "add"), task(app, "total")

    async def scenario() -> Any:
        handle = await chord(group(add.s(1, 1), add.s(2, 2)), total.s()).enqueue_async()
        await Worker(app, concurrency=4).drain()
        await Worker(app, concurrency=4).drain()
        return await handle.result_async(timeout=10)

    assert asyncio.run(scenario()) == 6


def test_a_dead_member_fails_the_chord_and_a_retry_that_fails_again_keeps_it_failed(
    app: App,
) -> None:
    add, boom, total = task(app, "add"), task(app, "boom"), task(app, "total")
    handle = chord(group(add.s(1, 1), boom.s(3)), total.s()).enqueue()
    run(app)
    with pytest.raises(WorkflowFailedError, match="boom 3"):
        handle.result(timeout=10)
    dead = next(j for j in handle.get().members if j.state.value == "dead")
    callback = handle.get().members[-1]
    assert callback.state.value == "scheduled"
    assert app.jobs.requeue([dead.id]) == 1
    run(app)  # boom fails again: still failed, the callback still held
    assert handle.state() is WorkflowStatus.FAILED
    assert handle.get().members[-1].state.value == "scheduled"


def test_cancelling_a_workflow_cancels_its_waiting_members(app: App) -> None:
    add, total = task(app, "add"), task(app, "total")
    handle = chord(group(add.s(1), add.s(2)), total.s()).enqueue()
    cancelled = handle.cancel()
    assert cancelled.status is WorkflowStatus.CANCELLED
    assert {j.state.value for j in cancelled.members} == {"cancelled"}
    run(app)
    with pytest.raises(WorkflowCancelledError):
        handle.result(timeout=1)


def test_bad_signatures_are_refused_and_nothing_is_written(app: App) -> None:
    add, total = task(app, "add"), task(app, "total")
    with pytest.raises(SerializationError):
        add.s(object())
    with pytest.raises(ConfigurationError):
        add.options(delay=5).s(1)
    with pytest.raises(InvalidArgumentsError):
        chain(add.s(1), add.s(1, 2)).enqueue()  # the second gets the first's result too
    with pytest.raises(InvalidArgumentsError):
        chord(group(add.s(1, nope=2)), total.s()).enqueue()
    with pytest.raises(TypeError, match="not supported"):
        group(chain(add.s(1), add.s()))  # type: ignore[arg-type]
    assert app.jobs.list() == []


def test_a_member_knows_its_job(app: App) -> None:
    member_of = task(app, "member_of")
    handle = chain(task(app, "add").s(1), member_of.s()).enqueue()
    run(app)
    assert handle.result(timeout=10) == handle.get().members[1].id
