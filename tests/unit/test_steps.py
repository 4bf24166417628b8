"""Durable steps, checkpoints and progress as a task sees them (`ctx.step`, `ctx.state`,
`ctx.checkpoint_state`, `ctx.progress`), on the memory engine with the fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import orjson
import pytest

from stagecrew import (
    App,
    Context,
    JobState,
    LeaseLostError,
    Progress,
    Retry,
    SerializationError,
    StepError,
)
from stagecrew.backends.base import JobFilter
from stagecrew.backends.memory import MemoryBackend
from stagecrew.errors import BackendError
from stagecrew.job import JobRef, NewJob
from stagecrew.testing.kit import TestKit
from stagecrew.worker.steps import AttemptSteps


class CountingBackend(MemoryBackend):
    """The memory engine, counting the checkpoint and progress writes that reach it."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.progress_writes: list[float] = []
        self.state_writes: list[str] = []
        self.step_reads = 0

    def _store_progress(self, ref: JobRef, text: str):  # type: ignore[no-untyped-def]
        self.progress_writes.append(float(orjson.loads(text)["done"]))
        return super()._store_progress(ref, text)

    def _store_state(self, ref: JobRef, text: str):  # type: ignore[no-untyped-def]
        self.state_writes.append(text)
        return super()._store_state(ref, text)

    def _read_steps(self, job_id: int):  # type: ignore[no-untyped-def]
        self.step_reads += 1
        return super()._read_steps(job_id)


@pytest.fixture
def app() -> App:
    return App("memory://")


@pytest.fixture
def kit(app: App) -> Iterator[TestKit]:
    with TestKit(app) as kit:
        app._backend = None
        app.use_backend(CountingBackend("memory://", kit.clock))
        yield kit


def counting(kit: TestKit) -> CountingBackend:
    backend = kit.backend
    assert isinstance(backend, CountingBackend)
    return backend


def test_completed_steps_are_not_run_again_when_the_job_retries(app: App, kit: TestKit) -> None:
    ran: list[str] = []

    def effect(name: str, value: int) -> dict[str, int]:
        ran.append(name)
        return {name: value}

    @app.task(max_attempts=3)
    def order(ctx: Context) -> list[object]:
        one = ctx.step("one", effect, "one", 1)
        two = ctx.step("two", effect, "two", 2)
        if ctx.attempt == 1:
            raise Retry(0)
        three = ctx.step("three", effect, "three", 3)
        return [one, two, three]

    handle = order.enqueue()
    kit.run_until_idle(advance_time=True)
    assert handle.result(timeout=0) == [{"one": 1}, {"two": 2}, {"three": 3}]
    assert ran == ["one", "two", "three"]


def test_a_checkpoint_written_before_the_first_step_does_not_hide_the_stored_steps(
    app: App, kit: TestKit
) -> None:
    charges: list[int] = []

    def charge() -> int:
        charges.append(1)
        return len(charges)

    @app.task(max_attempts=3)
    def order(ctx: Context) -> int:
        ctx.checkpoint_state({"attempt": ctx.attempt})
        charged: int = ctx.step("charge", charge)
        if ctx.attempt == 1:
            raise Retry(0)
        return charged

    handle = order.enqueue()
    kit.run_until_idle(advance_time=True)
    assert handle.result(timeout=0) == 1
    assert charges == [1]


def test_a_step_that_raises_is_not_stored_and_runs_again(app: App, kit: TestKit) -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("first call fails")
        return "ok"

    @app.task(max_attempts=3)
    def job(ctx: Context) -> str:
        return str(ctx.step("flaky", flaky))

    handle = job.enqueue()
    kit.run_until_idle(advance_time=True)
    assert handle.result(timeout=0) == "ok"
    assert len(calls) == 2


def test_a_step_name_used_twice_in_one_attempt_is_a_clear_error(app: App, kit: TestKit) -> None:
    @app.task(max_attempts=1)
    def twice(ctx: Context) -> None:
        ctx.step("same", lambda: 1)
        ctx.step("same", lambda: 2)

    handle = twice.enqueue()
    kit.run_until_idle()
    job = handle.get()
    assert job.state is JobState.DEAD
    assert job.last_error is not None and job.last_error.type == "StepError"
    assert "already used in this attempt" in job.last_error.message


@pytest.mark.parametrize("value", [float("nan"), {1, 2}, object(), "x" * (1024 * 1024 + 1)])
def test_a_result_that_cannot_be_stored_fails_the_attempt_and_nothing_is_stored(
    app: App, kit: TestKit, value: object
) -> None:
    @app.task(max_attempts=2)
    def bad(ctx: Context) -> str:
        ctx.step("fine", lambda: "kept")
        if ctx.attempt == 1:
            ctx.step("bad", lambda: value)
        return "done"

    handle = bad.enqueue()
    kit.run_until_idle(advance_time=True)
    job = handle.get()
    assert job.state is JobState.SUCCEEDED  # the job is not lost: its retry succeeded
    assert job.errors[0].type in (SerializationError.__name__, "PayloadTooLargeError")
    assert list(kit.backend.read_steps(job.id).steps) == ["fine"]


def test_async_steps_take_coroutine_and_plain_functions(app: App, kit: TestKit) -> None:
    ran: list[str] = []

    async def fetch(n: int) -> int:
        ran.append("fetch")
        await asyncio.sleep(0)
        return n * 2

    def plain(n: int) -> int:
        ran.append("plain")
        return n + 1

    @app.task(max_attempts=2)
    async def job(ctx: Context) -> list[int]:
        a = await ctx.step_async("fetch", fetch, 5)
        b = await ctx.step_async("plain", plain, 5)
        if ctx.attempt == 1:
            raise Retry(0)
        return [a, b]

    handle = job.enqueue()
    kit.run_until_idle(advance_time=True)
    assert handle.result(timeout=0) == [10, 6]
    assert ran == ["fetch", "plain"]


def test_the_blocking_step_in_an_async_task_is_refused(app: App, kit: TestKit) -> None:
    @app.task(max_attempts=1)
    async def job(ctx: Context) -> None:
        ctx.step("blocking", lambda: 1)

    handle = job.enqueue()
    kit.run_until_idle()
    error = handle.get().last_error
    assert error is not None and error.type == StepError.__name__
    assert "step_async" in error.message


def test_a_job_without_steps_never_reads_them(app: App, kit: TestKit) -> None:
    @app.task
    def plain(ctx: Context) -> int:
        return ctx.attempt

    for _ in range(3):
        plain.enqueue()
    kit.run_until_idle()
    assert counting(kit).step_reads == 0


def test_steps_are_read_once_per_attempt(app: App, kit: TestKit) -> None:
    @app.task
    def many(ctx: Context) -> int:
        return sum(ctx.step(f"s{i}", lambda i=i: i) for i in range(5)) + (ctx.state or 0)

    many.enqueue()
    kit.run_until_idle()
    assert counting(kit).step_reads == 1


def test_a_checkpointed_loop_resumes_from_its_last_cursor(app: App, kit: TestKit) -> None:
    seen: list[int] = []

    @app.task(max_attempts=2)
    def import_rows(ctx: Context) -> int:
        cursor = ctx.state or 0
        for row in range(cursor, 10):
            seen.append(row)
            ctx.checkpoint_state(row + 1)
            kit.clock.advance(1.0)  # each row takes a second: every checkpoint is written
            if ctx.attempt == 1 and row == 5:
                raise RuntimeError("crash mid-import")
        return len(seen)

    handle = import_rows.enqueue()
    kit.run_until_idle(advance_time=True)
    assert seen == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert handle.result(timeout=0) == 10


def test_progress_writes_are_rate_limited_and_the_last_value_is_always_written(
    app: App, kit: TestKit
) -> None:
    @app.task
    def busy(ctx: Context) -> None:
        for done in range(1, 101):
            ctx.progress(done, 100, "rows")  # no time passes: one write, then pending
        kit.clock.advance(0.5)
        ctx.progress(101, 200)  # still within the second: pending
        kit.clock.advance(0.5)
        ctx.progress(102, 200)  # a second after the first write: written at once
        ctx.progress(103, 200, "last")  # pending, written when the attempt ends

    handle = busy.enqueue()
    kit.run_until_idle()
    assert counting(kit).progress_writes == [1, 102, 103]
    assert handle.progress() == Progress(103, 200, "last", kit.clock.now())
    assert asyncio.run(handle.progress_async()) == handle.progress()


def test_checkpoint_writes_are_rate_limited_in_async_tasks_too(app: App, kit: TestKit) -> None:
    @app.task
    async def busy(ctx: Context) -> None:
        for cursor in range(50):
            ctx.checkpoint_state({"cursor": cursor})
            ctx.progress(cursor)
            await asyncio.sleep(0)
        kit.clock.advance(1.0)
        ctx.checkpoint_state({"cursor": 50})
        await asyncio.sleep(0)
        ctx.checkpoint_state({"cursor": 51})

    handle = busy.enqueue()
    kit.run_until_idle()
    writes = counting(kit).state_writes
    assert [w.replace(" ", "") for w in writes] == [
        '{"cursor":0}',
        '{"cursor":50}',
        '{"cursor":51}',
    ]
    assert counting(kit).progress_writes == [0, 49]
    state = kit.backend.read_steps(handle.id).state
    assert state is not None and state.text.replace(" ", "") == '{"cursor":51}'


def test_a_rerun_from_the_dead_letter_queue_resumes_after_its_completed_steps(
    app: App, kit: TestKit
) -> None:
    ran: list[str] = []
    failing = [True]

    @app.task(max_attempts=1)
    def job(ctx: Context) -> str:
        ctx.step("charge", lambda: ran.append("charge"))
        if failing[0]:
            raise RuntimeError("ship failed")
        ran.append("ship")
        return "shipped"

    handle = job.enqueue()
    kit.run_until_idle()
    assert handle.state() is JobState.DEAD
    failing[0] = False
    assert kit.backend.requeue(JobFilter(ids=frozenset({handle.id}))) == 1
    kit.run_until_idle()
    assert handle.result(timeout=0) == "shipped"
    assert ran == ["charge", "ship"]


def test_a_stale_attempt_cannot_store_a_step_and_stops_with_lease_lost(kit: TestKit) -> None:
    backend = kit.backend
    [entry] = backend.enqueue([NewJob(task="t", payload="{}")])
    [claimed] = backend.claim(["default"], "w", 1, 30.0)
    kit.clock.advance(31.0)
    backend.rescue()
    backend.claim(["default"], "w2", 1, 30.0)
    stale = AttemptSteps(backend, claimed.ref, kit.clock, on_loop=False)
    ran: list[int] = []
    with pytest.raises(LeaseLostError):
        stale.step("a", lambda: ran.append(1))
    assert ran == [1]  # the function ran, its result was refused
    assert backend.read_steps(entry.id).steps == {}
    with pytest.raises(LeaseLostError):
        stale.progress(1, None, None)


class FailingProgressBackend(CountingBackend):
    """Progress writes fail as a store that is down would; the first fails, the rest pass."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.failures = 1

    def _store_progress(self, ref: JobRef, text: str):  # type: ignore[no-untyped-def]
        if self.failures:
            self.failures -= 1
            raise BackendError("store_progress failed: the store is down")
        return super()._store_progress(ref, text)


def test_a_failed_progress_write_does_not_fail_the_job_and_is_written_at_the_end(
    app: App,
) -> None:
    with TestKit(app) as kit:
        app._backend = None
        app.use_backend(FailingProgressBackend("memory://", kit.clock))

        @app.task(max_attempts=1)
        def busy(ctx: Context) -> str:
            ctx.progress(5, 10)  # the store fails this one
            return "done"

        handle = busy.enqueue()
        kit.run_until_idle()
        assert handle.result(timeout=0) == "done"
        progress = handle.progress()
        assert progress is not None and (progress.done, progress.total) == (5, 10)
