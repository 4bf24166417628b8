"""SQLite's `wait_finished`: woken by commits, never a poll of the job.

A waiter arms itself (this backend object's commit signal, and `PRAGMA data_version` on
its own connection), reads the job's state once, then only polls the pragma. So counting
the reads of the job's state tells a notification from a poll without a timing assert:
one read, then none until something commits. A store URL with `poll_ms=600000` makes the
pragma poll too rare to matter within a test, so that only this object's own commit
signal can wake the waiter.
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support import threads
from tests.support.processes import start_worker, stop, write_app

from stagecrew import App, JobState
from stagecrew.backends.base import Ack
from stagecrew.backends.ops import Op
from stagecrew.backends.sqlite import SQLiteBackend
from stagecrew.clock import FakeClock
from stagecrew.errors import BackendError
from stagecrew.job import JobRef, NewJob
from stagecrew.worker.runner import Worker

PAYLOAD = '{"args":[1,2],"kwargs":{}}'

HANG = 20.0
"""Seconds after which a call that should have returned counts as hung: far below the
60 s timeouts the waits under test are given."""

NO_POLL = "?poll_ms=600000"
"""A pragma poll every ten minutes: within a test, only the commit signal wakes a waiter."""


class CountingSQLite(SQLiteBackend):
    """The SQLite engine, counting the reads `wait_finished` makes of a job's state."""

    def __init__(self, url: str, clock: FakeClock | None = None) -> None:
        super().__init__(url, clock)
        self.reads = 0
        self.read = threading.Event()
        """Set once a waiter has read the job: from then on it waits."""

    def _finished_or_gone(self, job_id: int) -> Op[bool]:
        self.reads += 1
        answer = yield from super()._finished_or_gone(job_id)
        self.read.set()
        return answer


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "jobs.db"


def store(db_path: Path, clock: FakeClock | None = None, query: str = "") -> CountingSQLite:
    backend = CountingSQLite(f"sqlite:///{db_path}{query}", clock)
    backend.migrate()
    return backend


@pytest.fixture
def backend(db_path: Path) -> Iterator[CountingSQLite]:
    b = store(db_path, FakeClock())
    yield b
    b.close()


@pytest.fixture
def quiet(db_path: Path) -> Iterator[CountingSQLite]:
    """A store whose waiters do not poll the pragma within a test (see `NO_POLL`)."""
    b = store(db_path, FakeClock(), NO_POLL)
    yield b
    b.close()


def running_job(backend: SQLiteBackend, worker: str = "w1", max_attempts: int = 3) -> JobRef:
    backend.enqueue([NewJob("add", PAYLOAD, max_attempts=max_attempts)])
    [job] = backend.claim(["default"], worker, 1, 30.0)
    return job.ref


def in_thread(fn: Callable[[], Any]) -> Callable[[], Any]:
    return threads.in_thread(fn, HANG)


def waited(backend: CountingSQLite) -> None:
    assert backend.read.wait(HANG), "nobody read the job"


def bounded(coroutine: Any) -> Any:
    async def run() -> Any:
        return await asyncio.wait_for(coroutine, HANG)

    return asyncio.run(run())


# -- another process finishes the job -------------------------------------------------------
def _ack_when_told(url: str, job_id: int, token: int, ready: Any, go: Any) -> None:
    """A separate process with its own backend: completes the job once told to, its only
    commit after `ready`."""
    with SQLiteBackend(url) as other:
        other.migrate()  # connected before the waiter starts: the ack is all it writes then
        ready.set()
        if not go.wait(HANG):
            raise SystemExit("never told to ack")
        [applied] = other.ack([Ack.complete(JobRef(job_id, token), "3")])
        if not applied:
            raise SystemExit("the ack was fenced out")


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_wait_finished_returns_once_another_process_acks_the_job(
    backend: CountingSQLite, asynchronous: bool
) -> None:
    ref = running_job(backend)
    ctx = multiprocessing.get_context("spawn")
    ready, go = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_ack_when_told, args=(backend.url, ref.id, ref.token, ready, go))
    child.start()
    try:
        assert ready.wait(HANG), "the other process did not start"
        if asynchronous:

            async def scenario() -> None:
                waiter = asyncio.create_task(backend.wait_finished_async(ref.id, 60))
                while not backend.read.is_set():
                    await asyncio.sleep(0.001)
                go.set()
                await waiter

            bounded(scenario())
        else:
            join = in_thread(lambda: backend.wait_finished(ref.id, 60))
            waited(backend)
            go.set()
            join()
    finally:
        child.join(HANG)
    assert child.exitcode == 0
    assert backend.reads == 1  # the read before the wait; the pragma polls read no job
    job = backend.get(ref.id)
    assert job is not None and job.state is JobState.SUCCEEDED


# -- this process finishes the job: the commit signal wakes the waiter at once --------------
def test_wait_finished_returns_once_another_thread_acks_the_job(quiet: CountingSQLite) -> None:
    ref = running_job(quiet)
    join = in_thread(lambda: quiet.wait_finished(ref.id, 60))
    waited(quiet)
    assert quiet.ack([Ack.complete(ref, "3")]) == [True]
    join()
    assert quiet.reads == 1


def test_wait_finished_async_returns_once_another_thread_acks_the_job(
    quiet: CountingSQLite,
) -> None:
    ref = running_job(quiet)

    async def scenario() -> None:
        waiter = asyncio.create_task(quiet.wait_finished_async(ref.id, 60))
        while not quiet.read.is_set():
            await asyncio.sleep(0.001)
        await asyncio.to_thread(quiet.ack, [Ack.complete(ref, "3")])
        await waiter

    bounded(scenario())
    assert quiet.reads == 1


def test_wait_finished_async_wakes_for_a_commit_through_its_own_loops_connection(
    backend: CountingSQLite,
) -> None:
    """A synchronous ack on the waiting loop's thread commits through the connection the
    waiter polls, whose `data_version` does not count its own commits: the signal does."""
    ref = running_job(backend)

    async def scenario() -> None:
        waiter = asyncio.create_task(backend.wait_finished_async(ref.id, 60))
        while not backend.read.is_set():
            await asyncio.sleep(0.001)
        assert backend.ack([Ack.complete(ref, "3")]) == [True]  # on this thread
        await waiter

    bounded(scenario())
    assert backend.reads == 1


def _finishing(backend: SQLiteBackend, how: str) -> tuple[int, Callable[[], Any]]:
    """A job, and the call (by this backend) that will make it final in the way `how` names."""
    clock = backend.clock
    assert isinstance(clock, FakeClock)
    if how == "cancel-waiting":
        [new] = backend.enqueue([NewJob("add", PAYLOAD)])
        return new.id, lambda: backend.cancel(new.id)
    ref = running_job(backend, worker="w-dead", max_attempts=1)
    calls: dict[str, Callable[[], Any]] = {
        "complete": lambda: backend.ack([Ack.complete(ref, "3")]),
        "dead-letter": lambda: backend.ack([Ack.dead_letter(ref, threads.boom(ref))]),
        "retry-after-cancel-request": lambda: (
            backend.cancel(ref.id),  # a request only: the job runs on, and nobody wakes
            backend.ack([Ack.retry(ref, threads.boom(ref), delay=5)]),
        ),
        "rescue": lambda: (clock.advance(31), backend.rescue()),
        "release-worker": lambda: backend.release_worker("w-dead"),
    }
    return ref.id, calls[how]


@pytest.mark.parametrize(
    "how",
    [
        "complete",
        "dead-letter",
        "retry-after-cancel-request",
        "cancel-waiting",
        "rescue",
        "release-worker",
    ],
)
def test_every_write_that_finishes_a_job_wakes_its_waiter_at_once(
    quiet: CountingSQLite, how: str
) -> None:
    job_id, finish = _finishing(quiet, how)
    join = in_thread(lambda: quiet.wait_finished(job_id, 60))
    waited(quiet)
    finish()
    join()
    assert quiet.reads == 1
    job = quiet.get(job_id)
    assert job is not None and job.state.is_final


# -- nothing commits: nothing is read ---------------------------------------------------------
@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_wait_finished_reads_the_job_once_and_waits_out_its_timeout_while_nothing_commits(
    backend: CountingSQLite, asynchronous: bool
) -> None:
    ref = running_job(backend)
    started = time.monotonic()
    if asynchronous:
        bounded(backend.wait_finished_async(ref.id, 0.3))
    else:
        backend.wait_finished(ref.id, 0.3)
    assert time.monotonic() - started >= 0.3  # about 60 pragma polls meanwhile
    assert backend.reads == 1


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_wait_finished_returns_at_once_for_a_final_or_unknown_job(
    quiet: CountingSQLite, asynchronous: bool
) -> None:
    ref = running_job(quiet)
    quiet.ack([Ack.complete(ref, "3")])
    for job_id in (ref.id, 999):
        if asynchronous:
            bounded(quiet.wait_finished_async(job_id, 60))
        else:
            in_thread(functools.partial(quiet.wait_finished, job_id, 60))()
    assert quiet.reads == 2


def test_wait_finished_async_leaves_the_store_thread_to_other_calls(
    quiet: CountingSQLite,
) -> None:
    """The wait polls on the event loop: asynchronous calls made meanwhile do not queue
    behind it on the backend's one store thread."""
    ref = running_job(quiet)

    async def scenario() -> list[JobState]:
        waiter = asyncio.create_task(quiet.wait_finished_async(ref.id, 60))
        while not quiet.read.is_set():
            await asyncio.sleep(0.001)
        states = []
        for _ in range(5):
            job = await quiet.get_async(ref.id)
            assert job is not None
            states.append(job.state)
        await quiet.ack_async([Ack.complete(ref, "3")])
        await waiter
        return states

    assert bounded(scenario()) == [JobState.RUNNING] * 5


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_wait_finished_reports_a_store_that_cannot_be_opened_as_backend_error(
    tmp_path: Path, asynchronous: bool
) -> None:
    expected = r"^wait_finished failed on the SQLite store at .*unable to open"
    broken = SQLiteBackend(f"sqlite:///{tmp_path}/missing/jobs.db")
    with broken, pytest.raises(BackendError, match=expected):
        if asynchronous:
            bounded(broken.wait_finished_async(1, 60))
        else:
            broken.wait_finished(1, 60)


# -- JobHandle.result with a real worker -------------------------------------------------------
def make_app(backend: SQLiteBackend) -> App:
    app = App(backend.url, clock=backend.clock)
    app.use_backend(backend)

    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    return app


@pytest.mark.parametrize("asynchronous", [False, True], ids=["result", "result_async"])
def test_result_returns_the_value_of_a_job_a_worker_in_this_process_finished(
    db_path: Path, asynchronous: bool
) -> None:
    backend = store(db_path, query=NO_POLL)
    app = make_app(backend)
    try:
        handle = app.tasks["add"].enqueue(1, 2)

        def drain_once_waited() -> int:
            waited(backend)
            return asyncio.run(Worker(app, concurrency=1).drain())

        ran = in_thread(drain_once_waited)
        if asynchronous:
            assert bounded(handle.result_async(timeout=60)) == 3
        else:
            assert in_thread(lambda: handle.result(timeout=60))() == 3
        assert ran() == 1
        assert backend.reads == 1  # woken by the worker's ack, not by its claim or a poll
    finally:
        app.close()


WORKER_APP = """
from stagecrew import App

app = App()

@app.task
def add(a: int, b: int) -> int:
    return a + b
"""


@pytest.mark.slow
def test_result_returns_the_value_of_a_job_a_worker_process_finished(
    tmp_path: Path, db_path: Path
) -> None:
    backend = store(db_path)
    app = make_app(backend)
    worker = None
    try:
        handle = app.tasks["add"].enqueue(1, 2)
        app_ref = write_app(tmp_path, "adding_app", WORKER_APP)
        worker = start_worker(tmp_path, app_ref, {"STAGECREW_URL": backend.url}, "--processes", "1")
        assert handle.result(timeout=60) == 3
        # One read per wake-up, and the worker commits only a few times before its ack
        # (a poll of the job would have read it every 5 ms while the worker started).
        assert 1 <= backend.reads <= 10
    finally:
        if worker is not None:
            code, output = stop(worker)
            assert code == 0, output[-3000:]
        app.close()
