"""Rolling deploys on every engine: a job of a task its worker lacks waits for one that has it.

When the web tier deploys first, workers of the previous release meet jobs of
tasks they do not have. They hand each such job back, without counting an
attempt or a lost worker, and it runs as soon as a worker that has the task
claims it; only after `App(unknown_task_window=...)` with no such worker does it
go dead, with the reason. The clock is fake (the store's too), so hours pass in
a moment. Each test gets its own store: a memory store, a SQLite file, a
PostgreSQL schema or a Redis key prefix.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stagecrew import App, ErrorKind, FakeClock, JobState
from stagecrew.job import Job, NewJob
from stagecrew.worker.runner import Worker
from tests.support.stores import fresh_store

Deploy = Callable[..., App]
Drain = Callable[[App], int]


@pytest.fixture(params=["memory", "sqlite", "postgres", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_store(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    """One event loop for the whole test: each store keeps one pool of async connections."""
    with asyncio.Runner() as runner:
        yield runner


@pytest.fixture
def drain(runner: asyncio.Runner) -> Drain:
    def run(app: App) -> int:
        return runner.run(asyncio.wait_for(Worker(app, concurrency=2).drain(), 30))

    return run


@pytest.fixture
def deploy(store_url: str, clock: FakeClock, runner: asyncio.Runner) -> Iterator[Deploy]:
    """`deploy(new=...)`: one release's app on the shared store, with or without the new task."""
    made: list[App] = []

    def make(*, new: bool, **options: Any) -> App:
        app = App(store_url, clock=clock, **options)
        if made and store_url == "memory://":
            app.use_backend(made[0].backend)

        @app.task
        def resize(name: str) -> str:  # every release has it
            return f"resized {name}"

        if new:

            @app.task(max_attempts=3)
            def watermark(name: str) -> str:  # only the new release has it
                return f"watermarked {name}"

        made.append(app)
        return app

    yield make
    for app in reversed(made):
        if store_url != "memory://" or app is made[0]:
            app.close()


def until_due(clock: FakeClock, job: Job) -> None:
    assert job.state is JobState.SCHEDULED, job
    clock.set(max(clock.now(), job.run_at))


def test_a_job_of_a_task_the_worker_does_not_have_is_handed_back_without_counting_an_attempt(
    deploy: Deploy, clock: FakeClock, drain: Drain
) -> None:
    web, old = deploy(new=True), deploy(new=False)
    handed_back_at = clock.now()
    job = web.tasks["watermark"].enqueue("cat.png")
    known = web.tasks["resize"].enqueue("dog.png")

    drain(old)

    waiting = web.jobs.get(job.id)
    assert waiting.state is JobState.SCHEDULED
    assert waiting.attempt == 0 and waiting.lost == 0
    assert handed_back_at < waiting.run_at <= handed_back_at + 5  # a short delay
    (error,) = waiting.errors
    assert error.kind is ErrorKind.UNRUNNABLE and error.type == "UnknownTaskError"
    assert "no task named 'watermark'" in error.message
    assert known.get().result == "resized dog.png"

    delays = []
    for _ in range(6):  # the old worker keeps meeting it: the error is recorded once
        until_due(clock, waiting)
        before = clock.now()
        drain(old)
        waiting = web.jobs.get(job.id)
        delays.append(waiting.run_at - before)
        assert waiting.state is JobState.SCHEDULED
        assert waiting.attempt == 0 and waiting.lost == 0
        assert waiting.errors == (error,)
    assert delays == sorted(delays) and delays[-1] > delays[0]  # growing


def test_a_handed_back_job_runs_as_soon_as_a_worker_that_has_its_task_claims_it(
    deploy: Deploy, clock: FakeClock, drain: Drain
) -> None:
    web, old = deploy(new=True), deploy(new=False)
    job = web.tasks["watermark"].enqueue("cat.png")
    drain(old)
    until_due(clock, web.jobs.get(job.id))

    new = deploy(new=True)
    assert drain(new) == 1

    done = web.jobs.get(job.id)
    assert done.state is JobState.SUCCEEDED
    assert done.result == "watermarked cat.png"
    assert done.attempt == 1  # the hand-backs counted no attempt
    assert [e.kind for e in done.errors] == [ErrorKind.UNRUNNABLE]


def test_a_job_of_a_task_no_worker_has_goes_dead_only_after_the_unknown_task_window(
    deploy: Deploy, clock: FakeClock, drain: Drain
) -> None:
    web, old = deploy(new=True), deploy(new=False, unknown_task_window=600)
    first_handback = clock.now()
    job = web.tasks["watermark"].enqueue("cat.png")

    stored = web.jobs.get(job.id)
    for _ in range(200):
        if stored.state is JobState.SCHEDULED:
            until_due(clock, stored)
        claimed_at = clock.now()
        drain(old)
        stored = web.jobs.get(job.id)
        if stored.state is not JobState.SCHEDULED:
            break
        assert claimed_at - first_handback < 600, "handed back after the window"
    else:
        pytest.fail("still handed back after 200 claims")

    assert stored.state is JobState.DEAD
    assert claimed_at - first_handback >= 600
    assert stored.attempt == 1 and stored.lost == 0
    handback, dead = stored.errors
    assert handback.kind is dead.kind is ErrorKind.UNRUNNABLE
    assert dead.type == "UnknownTaskError"
    assert "no task named 'watermark'" in dead.message and "600" in dead.message


def test_a_job_whose_task_is_unknown_is_dead_at_once_with_a_window_of_zero(
    deploy: Deploy, drain: Drain
) -> None:
    web, old = deploy(new=True), deploy(new=False, unknown_task_window=0)
    job = web.tasks["watermark"].enqueue("cat.png")

    drain(old)

    dead = web.jobs.get(job.id)
    assert dead.state is JobState.DEAD and dead.attempt == 1
    (error,) = dead.errors
    assert error.kind is ErrorKind.UNRUNNABLE and "no task named 'watermark'" in error.message


def test_other_unrunnable_jobs_stay_dead_at_once(deploy: Deploy, drain: Drain) -> None:
    web, old = deploy(new=True), deploy(new=False)
    bad_payload, bad_arguments = old.backend.enqueue(
        [
            NewJob(task="watermark", payload='{"args":["cat.png"'),  # and of an unknown task
            NewJob(task="resize", payload='{"args":[1,2,3],"kwargs":{}}'),
        ]
    )

    drain(old)

    for enqueued, reason in ((bad_payload, "not valid JSON"), (bad_arguments, "do not fit")):
        dead = web.jobs.get(enqueued.id)
        assert dead.state is JobState.DEAD and dead.attempt == 1
        (error,) = dead.errors
        assert error.kind is ErrorKind.UNRUNNABLE and reason in error.message
