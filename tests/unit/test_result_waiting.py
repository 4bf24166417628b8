"""`result()` and `result_async()` wait on the store's notification of finished jobs.

They read the job, and while it is not final wait on `Backend.wait_finished`, which the
memory engine answers with a condition set by whatever makes a job final (an ack, a
cancel, a rescue, a release of a dead worker's claims), then read it again. So a waiting
caller reads the job exactly twice, however long the job takes: counting reads tells a
notification from a sleep loop without a timing assert.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from stagecrew import (
    App,
    FakeClock,
    InvalidTimeError,
    JobCancelledError,
    JobFailedError,
    JobHandle,
    JobNotFoundError,
    JobState,
)
from stagecrew.backends.base import Ack, Backend
from stagecrew.backends.memory import MemoryBackend
from stagecrew.backends.ops import Op
from stagecrew.job import AttemptError, ErrorKind, Job, JobRef
from stagecrew.worker.runner import Worker

HANG = 10.0
"""Seconds after which a call that should have returned counts as hung: far below the
60 s timeouts given to the calls under test, and below `handle.RECHECK_SECONDS`."""

POLL_WOULD_SHOW = 0.2
"""How long a job stays unfinished while a caller waits: a sleep loop (every 0.05 s) would
read it several times meanwhile; a wait on the notification reads it not at all."""


class WatchedStore(MemoryBackend):
    """The memory engine, counting reads of a job and saying when a finish wait begins."""

    def __init__(self) -> None:
        self.fake_clock = FakeClock()
        super().__init__("memory://", self.fake_clock)
        self.reads = 0
        self.waits = 0
        self.waiting = threading.Event()

    def _get(self, job_id: int) -> Op[Job | None]:
        self.reads += 1
        return super()._get(job_id)

    def _wait_finished(self, job_id: int, timeout: float) -> None:
        self.waits += 1
        self.waiting.set()
        super()._wait_finished(job_id, timeout)

    async def _wait_finished_async(self, job_id: int, timeout: float) -> None:
        self.waits += 1
        self.waiting.set()
        await super()._wait_finished_async(job_id, timeout)


class PollingStore(WatchedStore):
    """An engine that cannot notify: the fallback hooks of `Backend`, a bounded poll."""

    def _wait_finished(self, job_id: int, timeout: float) -> None:
        self.waits += 1
        self.waiting.set()
        Backend._wait_finished(self, job_id, timeout)

    async def _wait_finished_async(self, job_id: int, timeout: float) -> None:
        self.waits += 1
        self.waiting.set()
        await Backend._wait_finished_async(self, job_id, timeout)


def make_app(store: MemoryBackend) -> App:
    app = App("memory://", clock=store.clock)
    app.use_backend(store)

    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(max_attempts=1)
    def once(a: int) -> int:
        return a

    return app


@pytest.fixture
def store() -> WatchedStore:
    return WatchedStore()


@pytest.fixture
def app(store: WatchedStore) -> App:
    return make_app(store)


def claimed(store: Backend, worker: str = "w1") -> JobRef:
    [job] = store.claim(["default"], worker, 1, 30.0)
    return JobRef(job.id, job.token)


def boom(ref: JobRef) -> AttemptError:
    return AttemptError(ref.token, 0.0, ErrorKind.ERROR, "ValueError", "boom")


@contextlib.contextmanager
def meanwhile(store: WatchedStore, finish: Callable[[], object]) -> Iterator[None]:
    """Run `finish` on another thread once a caller waits on the store and a poll had time
    to show; fail if that thread errs or outlives the block."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            if not store.waiting.wait(HANG):
                raise AssertionError("nobody waited for the job to finish")
            time.sleep(POLL_WOULD_SHOW)
            finish()
        except BaseException as exc:  # reported by the test's thread
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join(HANG)
    assert not thread.is_alive()
    if errors:
        raise errors[0]


def returns_within(fn: Callable[[], Any], seconds: float = HANG) -> Any:
    """`fn()` run on another thread; fails the test instead of hanging it."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(("value", fn()))
        except BaseException as exc:
            outcome.append(("error", exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still waiting after {seconds}s"
    [(kind, value)] = outcome
    if kind == "error":
        raise value
    return value


def run(coroutine: Any) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coroutine, HANG)

    return asyncio.run(bounded())


# -- a finish wakes the waiting caller at once, without any poll ---------------------------
def test_result_returns_the_value_when_another_thread_acks_without_polling_the_store(
    app: App, store: WatchedStore
) -> None:
    handle = app.tasks["add"].enqueue(1, 2)
    ref = claimed(store)
    store.reads = 0
    with meanwhile(store, lambda: store.ack([Ack.complete(ref, "3")])):
        assert handle.result(timeout=60) == 3
    assert (store.reads, store.waits) == (2, 1)  # the read before the wait, the one after


def test_result_async_returns_the_value_when_another_thread_acks_without_polling_the_store(
    app: App, store: WatchedStore
) -> None:
    handle = app.tasks["add"].enqueue(1, 2)
    ref = claimed(store)
    store.reads = 0
    with meanwhile(store, lambda: store.ack([Ack.complete(ref, "3")])):
        assert run(handle.result_async(timeout=60)) == 3
    assert (store.reads, store.waits) == (2, 1)


def test_result_async_returns_as_soon_as_a_worker_on_its_loop_finishes_the_job(
    app: App, store: WatchedStore
) -> None:
    async def scenario() -> tuple[Any, int]:
        handle = await app.tasks["add"].enqueue_async(1, 2)
        store.reads = 0
        result = asyncio.create_task(handle.result_async(timeout=60))
        while not store.waiting.is_set():
            await asyncio.sleep(0)
        ran = await Worker(app, concurrency=1).drain()
        return await result, ran

    assert run(scenario()) == (3, 1)
    assert (store.reads, store.waits) == (2, 1)


def test_result_returns_as_soon_as_a_worker_in_another_thread_finishes_the_job(
    app: App, store: WatchedStore
) -> None:
    handle = app.tasks["add"].enqueue(1, 2)
    store.reads = 0
    with meanwhile(store, lambda: asyncio.run(Worker(app, concurrency=1).drain())):
        assert handle.result(timeout=60) == 3
    assert (store.reads, store.waits) == (2, 1)


def test_a_job_already_finished_is_returned_without_waiting(app: App, store: WatchedStore) -> None:
    handle = app.tasks["add"].enqueue(1, 2)
    store.ack([Ack.complete(claimed(store), "3")])
    assert handle.result(timeout=0) == 3
    assert run(handle.result_async(timeout=0)) == 3
    assert store.waits == 0


# -- the documented errors ------------------------------------------------------------------
@pytest.mark.parametrize("asynchronous", [False, True], ids=["result", "result_async"])
def test_result_raises_job_failed_when_the_job_is_dead_lettered_while_waiting(
    app: App, store: WatchedStore, asynchronous: bool
) -> None:
    handle = app.tasks["add"].enqueue(1, 2)
    ref = claimed(store)

    def dead_letter() -> None:
        store.ack([Ack.dead_letter(ref, boom(ref))])

    expected = r"^job 1 \(add\) is dead: ValueError: boom$"
    with meanwhile(store, dead_letter), pytest.raises(JobFailedError, match=expected):
        run(handle.result_async(timeout=60)) if asynchronous else handle.result(timeout=60)
    assert store.waits == 1


@pytest.mark.parametrize("asynchronous", [False, True], ids=["result", "result_async"])
def test_result_raises_job_cancelled_when_the_waiting_job_is_cancelled(
    app: App, store: WatchedStore, asynchronous: bool
) -> None:
    handle = app.tasks["add"].enqueue(1, 2)
    expected = r"^job 1 \(add\) was cancelled$"
    with meanwhile(store, handle.cancel), pytest.raises(JobCancelledError, match=expected):
        run(handle.result_async(timeout=60)) if asynchronous else handle.result(timeout=60)
    assert (store.reads, store.waits) == (2, 1)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["result", "result_async"])
def test_a_running_job_cancelled_at_its_next_outcome_wakes_the_waiting_caller(
    app: App, store: WatchedStore, asynchronous: bool
) -> None:
    handle = app.tasks["add"].enqueue(1, 2)
    ref = claimed(store)
    handle.cancel()  # a request only: the job keeps running until its worker answers

    def retry() -> None:
        store.ack([Ack.retry(ref, boom(ref), delay=5)])

    with meanwhile(store, retry), pytest.raises(JobCancelledError):
        run(handle.result_async(timeout=60)) if asynchronous else handle.result(timeout=60)


@pytest.mark.parametrize("settle", ["rescue", "release_worker"])
@pytest.mark.parametrize("asynchronous", [False, True], ids=["result", "result_async"])
def test_a_lost_worker_whose_job_goes_dead_wakes_the_waiting_caller(
    app: App, store: WatchedStore, settle: str, asynchronous: bool
) -> None:
    handle = app.tasks["once"].enqueue(7)
    claimed(store, worker="w-dead")

    def lose_the_worker() -> None:
        if settle == "rescue":
            store.fake_clock.advance(31)
            assert store.rescue().dead == 1
        else:
            assert store.release_worker("w-dead").dead == 1

    expected = "is dead: WorkerLost: worker w-dead lost its lease"
    with meanwhile(store, lose_the_worker), pytest.raises(JobFailedError, match=expected):
        run(handle.result_async(timeout=60)) if asynchronous else handle.result(timeout=60)
    assert store.waits == 1


def test_a_job_rescued_back_to_available_does_not_wake_the_caller_for_nothing(
    app: App, store: WatchedStore
) -> None:
    handle = app.tasks["add"].enqueue(1, 2)
    claimed(store, worker="w-dead")

    def rescue_then_finish() -> None:
        assert store.release_worker("w-dead").requeued == 1
        time.sleep(POLL_WOULD_SHOW)
        store.ack([Ack.complete(claimed(store, worker="w2"), "3")])

    store.reads = 0
    with meanwhile(store, rescue_then_finish):
        assert handle.result(timeout=60) == 3
    assert (store.reads, store.waits) == (2, 1)


def test_a_job_deleted_while_waited_for_raises_job_not_found(app: App) -> None:
    handle = JobHandle(app, 42)
    with pytest.raises(JobNotFoundError, match="no job with id 42"):
        handle.result(timeout=60)
    with pytest.raises(JobNotFoundError, match="no job with id 42"):
        run(handle.result_async(timeout=60))


# -- timeouts, in real time ------------------------------------------------------------------
@pytest.mark.parametrize("timeout", [0, 0.05])
def test_result_raises_timeout_error_for_a_job_that_does_not_finish_in_time(
    app: App, store: WatchedStore, timeout: float
) -> None:
    handle = app.tasks["add"].enqueue(1, 2)
    message = rf"^job 1 is still available after {timeout}s$"
    with pytest.raises(TimeoutError, match=message):
        handle.result(timeout=timeout)
    with pytest.raises(TimeoutError, match=message):
        run(handle.result_async(timeout=timeout))
    assert store.waits == (0 if timeout == 0 else 2)
    assert handle.state() is JobState.AVAILABLE


def test_result_still_accepts_poll_interval(app: App, store: WatchedStore) -> None:
    handle = app.tasks["add"].enqueue(1, 2)
    store.ack([Ack.complete(claimed(store), "3")])
    assert handle.result(timeout=1, poll_interval=0.5) == 3


@pytest.mark.parametrize("timeout", [math.nan, "10"], ids=["nan", "text"])
def test_result_refuses_a_timeout_that_is_not_a_number_of_seconds(app: App, timeout: Any) -> None:
    handle = app.tasks["add"].enqueue(1, 2)
    with pytest.raises((ValueError, TypeError)):
        handle.result(timeout=timeout)
    with pytest.raises((ValueError, TypeError)):
        run(handle.result_async(timeout=timeout))


# -- the race: a job that finishes between the read and the wait ---------------------------
def test_a_job_that_finishes_between_the_read_and_the_wait_does_not_hang_result(
    app: App, store: WatchedStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = app.tasks["add"].enqueue(1, 2)
    ref = claimed(store)
    read = app.jobs.get

    def read_then_finish(job_id: int) -> Job:
        job = read(job_id)
        if job.state is JobState.RUNNING:
            store.ack([Ack.complete(ref, "3")])  # after the read, before the wait
        return job

    monkeypatch.setattr(app.jobs, "get", read_then_finish)
    assert returns_within(lambda: handle.result(timeout=60)) == 3
    assert store.waits == 1


def test_a_job_that_finishes_between_the_read_and_the_wait_does_not_hang_result_async(
    app: App, store: WatchedStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = app.tasks["add"].enqueue(1, 2)
    ref = claimed(store)
    read = app.jobs.get_async

    async def read_then_finish(job_id: int) -> Job:
        job = await read(job_id)
        if job.state is JobState.RUNNING:
            store.ack([Ack.complete(ref, "3")])
        return job

    monkeypatch.setattr(app.jobs, "get_async", read_then_finish)
    assert run(handle.result_async(timeout=60)) == 3  # run() fails after HANG seconds
    assert store.waits == 1


# -- the operation itself ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "asynchronous", [False, True], ids=["wait_finished", "wait_finished_async"]
)
def test_wait_finished_returns_at_once_for_a_final_or_unknown_job(
    app: App, store: WatchedStore, asynchronous: bool
) -> None:
    handle = app.tasks["add"].enqueue(1, 2)
    store.ack([Ack.complete(claimed(store), "3")])
    for job_id in (handle.id, 999):
        if asynchronous:
            run(store.wait_finished_async(job_id, 60))
        else:
            returns_within(lambda job_id=job_id: store.wait_finished(job_id, 60))


@pytest.mark.parametrize(
    "asynchronous", [False, True], ids=["wait_finished", "wait_finished_async"]
)
def test_wait_finished_returns_after_its_timeout_when_the_job_stays_unfinished(
    app: App, store: WatchedStore, asynchronous: bool
) -> None:
    handle = app.tasks["add"].enqueue(1, 2)
    started = time.monotonic()
    if asynchronous:
        run(store.wait_finished_async(handle.id, 0.05))
    else:
        store.wait_finished(handle.id, 0.05)
    assert time.monotonic() - started >= 0.05
    assert store._finish_waiters == {}  # an async waiter leaves nothing behind


@pytest.mark.parametrize("timeout", [math.nan, math.inf, -1.0])
def test_wait_finished_refuses_a_timeout_that_is_not_finite_seconds(
    store: WatchedStore, timeout: float
) -> None:
    with pytest.raises(InvalidTimeError, match="wait_finished: timeout"):
        store.wait_finished(1, timeout)
    with pytest.raises(InvalidTimeError, match="wait_finished: timeout"):
        run(store.wait_finished_async(1, timeout))


def test_one_finish_wakes_every_caller_waiting_for_that_job_on_any_loop(
    app: App, store: WatchedStore
) -> None:
    handle = app.tasks["add"].enqueue(1, 2)
    ref = claimed(store)
    results: list[Any] = []
    callers = [
        threading.Thread(target=lambda: results.append(handle.result(timeout=60))),
        threading.Thread(target=lambda: results.append(run(handle.result_async(timeout=60)))),
        threading.Thread(target=lambda: results.append(run(handle.result_async(timeout=60)))),
    ]
    for caller in callers:
        caller.start()
    deadline = time.monotonic() + HANG
    while store.waits < len(callers) and time.monotonic() < deadline:
        time.sleep(0.01)
    store.ack([Ack.complete(ref, "3")])
    for caller in callers:
        caller.join(HANG)
    assert results == [3, 3, 3]


# -- the fallback for an engine that cannot notify ------------------------------------------
@pytest.mark.parametrize("asynchronous", [False, True], ids=["result", "result_async"])
def test_an_engine_that_cannot_notify_still_returns_the_result_by_polling(
    asynchronous: bool,
) -> None:
    store = PollingStore()
    app = make_app(store)
    handle = app.tasks["add"].enqueue(1, 2)
    ref = claimed(store)
    store.reads = 0
    with meanwhile(store, lambda: store.ack([Ack.complete(ref, "3")])):
        value = run(handle.result_async(timeout=60)) if asynchronous else handle.result(timeout=60)
    assert value == 3
    assert store.reads >= 3  # the poll read the job at least once before the last read
