"""Every producer and inspection call has an async form that does what its sync form does."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from stagecrew import (
    App,
    ConfigurationError,
    FakeClock,
    InvalidArgumentsError,
    JobNotFoundError,
    JobState,
    SerializationError,
    UnknownTaskError,
    call,
)
from stagecrew.backends.base import Ack
from stagecrew.job import AttemptError, ErrorKind, JobRef


def make_app(clock: FakeClock | None = None) -> App:
    app = App("memory://", clock=clock or FakeClock())

    @app.task(queue="images", max_attempts=5)
    def resize(path: str, width: int = 100) -> str:
        return f"{path}@{width}"

    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    return app


def populated() -> App:
    """An app whose store holds a job in every state, built the same way each time."""
    clock = FakeClock()
    app = make_app(clock)
    resize, add = app.tasks["resize"], app.tasks["add"]
    resize.enqueue_many([("a.png", 1), ("b.png", 2), ("c.png", 3)])
    add.enqueue_many([(1, 2), (3, 4), (5, 6)])
    resize.options(delay=60).enqueue("later.png")
    backend = app.backend
    first, second = backend.claim(["default"], "w1", 2, 30.0)
    error = AttemptError(1, app.clock.now(), ErrorKind.ERROR, "ValueError", "boom")
    backend.ack(
        [
            Ack.complete(JobRef(first.id, first.token), "3"),
            Ack.dead_letter(JobRef(second.id, second.token), error),
        ]
    )
    [running] = backend.claim(["images"], "w1", 1, 30.0)
    app.jobs.cancel(running.id + 1)  # an available job: cancelled at once
    clock.advance(3600)
    return app


def run(coroutine: Awaitable[Any]) -> Any:
    return asyncio.run(_awaited(coroutine))


async def _awaited(coroutine: Awaitable[Any]) -> Any:
    return await coroutine


Sync = Callable[[App], Any]
Async = Callable[[App], Awaitable[Any]]

TWINS: list[tuple[str, Sync, Async]] = [
    ("get", lambda app: app.jobs.get(4), lambda app: app.jobs.get_async(4)),
    ("list", lambda app: app.jobs.list(), lambda app: app.jobs.list_async()),
    (
        "list-filtered",
        lambda app: app.jobs.list(state="available", queue="images", limit=1, before_id=4),
        lambda app: app.jobs.list_async(state="available", queue="images", limit=1, before_id=4),
    ),
    (
        "list-by-task",
        lambda app: app.jobs.list(task="add", state=JobState.DEAD),
        lambda app: app.jobs.list_async(task="add", state=JobState.DEAD),
    ),
    ("cancel-waiting", lambda app: app.jobs.cancel(6), lambda app: app.jobs.cancel_async(6)),
    ("cancel-running", lambda app: app.jobs.cancel(1), lambda app: app.jobs.cancel_async(1)),
    ("cancel-finished", lambda app: app.jobs.cancel(4), lambda app: app.jobs.cancel_async(4)),
    (
        "requeue-ids",
        lambda app: app.jobs.requeue([2, 5]),
        lambda app: app.jobs.requeue_async([2, 5]),
    ),
    (
        "requeue-all-dead",
        lambda app: app.jobs.requeue(all_dead=True, task="add", queue="default"),
        lambda app: app.jobs.requeue_async(all_dead=True, task="add", queue="default"),
    ),
    ("purge-dead", lambda app: app.jobs.purge(), lambda app: app.jobs.purge_async()),
    (
        "purge-older-than",
        lambda app: app.jobs.purge(state="succeeded", older_than=60, task="add"),
        lambda app: app.jobs.purge_async(state="succeeded", older_than=60, task="add"),
    ),
    (
        "purge-none-old-enough",
        lambda app: app.jobs.purge(state="cancelled", older_than=7200),
        lambda app: app.jobs.purge_async(state="cancelled", older_than=7200),
    ),
    ("stats", lambda app: app.jobs.stats(), lambda app: app.jobs.stats_async()),
    (
        "handle-get",
        lambda app: app.tasks["add"].enqueue(1, 1).get(),
        lambda app: _enqueued_then(app, "get_async"),
    ),
    (
        "handle-state",
        lambda app: app.tasks["add"].enqueue(1, 1).state(),
        lambda app: _enqueued_then(app, "state_async"),
    ),
    (
        "handle-cancel",
        lambda app: app.tasks["add"].enqueue(1, 1).cancel(),
        lambda app: _enqueued_then(app, "cancel_async"),
    ),
]


async def _enqueued_then(app: App, method: str) -> Any:
    handle = await app.tasks["add"].enqueue_async(1, 1)
    return await getattr(handle, method)()


@pytest.mark.parametrize(
    ("sync", "asynchronous"), [t[1:] for t in TWINS], ids=[t[0] for t in TWINS]
)
def test_each_async_inspection_call_answers_and_changes_what_its_sync_form_does(
    sync: Sync, asynchronous: Async
) -> None:
    by_sync, by_async = populated(), populated()
    assert by_sync.jobs.list() == by_async.jobs.list()
    answer = sync(by_sync)
    assert run(asynchronous(by_async)) == answer
    assert by_async.jobs.list(limit=1000) == by_sync.jobs.list(limit=1000)


def test_async_get_and_cancel_of_an_unknown_job_raise_job_not_found() -> None:
    app = make_app()
    with pytest.raises(JobNotFoundError, match="no job with id 99"):
        run(app.jobs.get_async(99))
    with pytest.raises(JobNotFoundError, match="no job with id 99"):
        run(app.jobs.cancel_async(99))


def test_async_requeue_without_ids_or_all_dead_is_refused() -> None:
    app = populated()
    with pytest.raises(ConfigurationError, match="name job ids to requeue"):
        run(app.jobs.requeue_async())
    assert app.jobs.list(state="dead") != []


def test_enqueue_many_async_writes_all_jobs_in_order_in_one_call() -> None:
    by_sync, by_async = make_app(), make_app()
    calls = [("a.png", 1), ["b.png", 2], call("c.png", width=3), {"path": "d.png"}]
    sync_handles = by_sync.tasks["resize"].enqueue_many(calls)
    async_handles = run(by_async.tasks["resize"].enqueue_many_async(calls))
    assert [h.id for h in async_handles] == [h.id for h in sync_handles]
    assert all(h.created and h.app is by_async for h in async_handles)
    assert by_async.jobs.list() == by_sync.jobs.list()
    assert [j.args for j in reversed(by_async.jobs.list())] == [
        ["a.png", 1],
        ["b.png", 2],
        ["c.png"],
        [],
    ]


def test_bound_enqueue_many_async_applies_the_options_to_every_job() -> None:
    by_sync, by_async = make_app(), make_app()
    options: dict[str, Any] = {"queue": "thumbs", "priority": -5, "delay": 60, "max_attempts": 2}
    by_sync.tasks["resize"].options(**options).enqueue_many([("a.png",), ("b.png",)])
    bound = by_async.tasks["resize"].options(**options)
    run(bound.enqueue_many_async([("a.png",), ("b.png",)]))
    stored = by_async.jobs.list()
    assert stored == by_sync.jobs.list()
    assert {(j.queue, j.priority, j.state, j.max_attempts) for j in stored} == {
        ("thumbs", -5, JobState.SCHEDULED, 2)
    }


def test_enqueue_many_async_with_a_repeated_idempotency_key_stores_one_job() -> None:
    app = make_app()
    bound = app.tasks["add"].options(idempotency_key="order-1")
    first, second = run(bound.enqueue_many_async([(1, 2), (3, 4)]))
    assert first.created and not second.created and second.id == first.id
    [again] = run(bound.enqueue_many_async([(5, 6)]))
    assert not again.created and again.id == first.id
    assert len(app.jobs.list()) == 1


@pytest.mark.parametrize(
    ("calls", "error"),
    [
        ([(1, 2), (3,)], InvalidArgumentsError),
        ([(1, 2), (3, object())], SerializationError),
    ],
    ids=["arguments-do-not-bind", "not-json"],
)
def test_enqueue_many_async_writes_nothing_when_one_job_is_invalid(
    calls: list[Any], error: type[Exception]
) -> None:
    app = make_app()
    with pytest.raises(error):
        app.tasks["add"].enqueue_many(calls)
    with pytest.raises(error):
        run(app.tasks["add"].enqueue_many_async(calls))
    assert app.jobs.list() == []


def test_enqueue_many_async_of_nothing_writes_nothing() -> None:
    app = make_app()
    assert run(app.tasks["add"].enqueue_many_async([])) == []
    assert run(app.tasks["add"].options(priority=1).enqueue_many_async(iter([]))) == []
    assert app.jobs.list() == []


def test_app_enqueue_async_by_name_is_app_enqueue() -> None:
    by_sync, by_async = make_app(), make_app()
    sync_handle = by_sync.enqueue("resize", ["a.png"], {"width": 3}, priority=2)
    async_handle = run(by_async.enqueue_async("resize", ["a.png"], {"width": 3}, priority=2))
    assert async_handle.id == sync_handle.id and async_handle.created
    assert by_async.jobs.list() == by_sync.jobs.list()


def test_app_enqueue_async_of_an_unknown_task_is_refused() -> None:
    app = make_app()
    with pytest.raises(UnknownTaskError, match="no task named 'nope'"):
        run(app.enqueue_async("nope", ["x"]))
    assert app.jobs.list() == []
