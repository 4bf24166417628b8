"""An attempt's last checkpoint and progress are the ones its worker flushed before the outcome.

A sync task that overruns its timeout keeps its thread (a thread cannot be interrupted), and
that thread may go on calling `ctx.checkpoint_state` and `ctx.progress`. Once the worker has
started finishing the attempt, those calls are refused without a store write, so nothing
lands between the final flush and the outcome, nor after it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from stagecrew import App, Context, ErrorKind, JobState, Progress
from stagecrew.job import JobRef
from stagecrew.testing.engines import Engine, engine_params
from stagecrew.worker.runner import Worker


@pytest.fixture(params=engine_params())
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[App]:
    engine: Engine = request.param
    with engine.stores(tmp_path) as stores:
        app = App(stores.url())
        yield app
        app.close()


def _wait_until(condition: object, timeout: float) -> bool:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_a_timed_out_sync_task_writes_no_checkpoint_or_progress_after_the_final_flush(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = app.backend
    thread_writes: list[str] = []
    flushed = threading.Event()
    offered_after_flush = threading.Event()
    ended = threading.Event()
    store_state, store_state_async = backend.store_state, backend.store_state_async
    store_progress = backend.store_progress

    def counted_state(ref: JobRef, value: str) -> bool:  # the task's writes, on its thread
        thread_writes.append(f"state {value}")
        return store_state(ref, value)

    def counted_progress(ref: JobRef, progress: Progress) -> bool:
        thread_writes.append(f"progress {progress.done:g}")
        return store_progress(ref, progress)

    async def final_flush(ref: JobRef, value: str) -> bool:  # the worker's, on its loop
        applied = await store_state_async(ref, value)
        flushed.set()
        # the outcome waits until the task, still running, has tried to write again
        await asyncio.to_thread(offered_after_flush.wait, 10)
        return applied

    monkeypatch.setattr(backend, "store_state", counted_state)
    monkeypatch.setattr(backend, "store_progress", counted_progress)
    monkeypatch.setattr(backend, "store_state_async", final_flush)

    @app.task(timeout=1.0, max_attempts=2)
    def stubborn(ctx: Context) -> None:
        try:
            ctx.checkpoint_state(1)  # written at once
            ctx.progress(1)
            ctx.checkpoint_state(2)  # within a second of the first: kept for the final flush
            ctx.progress(2)
            flushed.wait(10)  # it ignores its timeout and ctx.cancelled
            ctx.checkpoint_state(3)  # a second after the first writes: due, but too late
            ctx.progress(3)
            offered_after_flush.set()
            _wait_until(lambda: handle.state() is not JobState.RUNNING, 10)
            ctx.checkpoint_state(4)  # after the outcome
            ctx.progress(4)
        finally:
            offered_after_flush.set()
            ended.set()

    handle = stubborn.enqueue()
    worker = Worker(app, concurrency=2, stuck_grace=0.1, grace=0.5, lease_seconds=5)
    code = asyncio.run(asyncio.wait_for(worker.run(install_signal_handlers=False), 30))
    assert ended.wait(15)
    assert code == 75  # the stuck thread recycles the worker
    job = handle.get()
    assert job.state is JobState.SCHEDULED
    assert job.errors[-1].kind is ErrorKind.TIMEOUT
    stored = app.jobs.steps(job.id).state
    assert stored is not None
    assert orjson.loads(stored.text) == 2
    assert job.progress is not None
    assert job.progress.done == 2
    assert thread_writes == ["state 1", "progress 1"]


def test_a_checkpoint_write_under_way_when_the_attempt_ends_lands_before_the_outcome(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker waits for the task thread's write in flight, then writes the outcome: the
    write is neither lost to the fence nor stored behind the outcome's back."""
    backend = app.backend
    store_state = backend.store_state
    ended = threading.Event()

    def slow_state(ref: JobRef, value: str) -> bool:
        if value == "2":
            time.sleep(1.0)  # still under way when the attempt times out
        return store_state(ref, value)

    monkeypatch.setattr(backend, "store_state", slow_state)

    @app.task(timeout=1.2, max_attempts=2)
    def stubborn(ctx: Context) -> None:
        try:
            ctx.checkpoint_state(1)  # written at once
            time.sleep(1.0)
            ctx.checkpoint_state(2)  # due: written at once, slowly
        finally:
            ended.set()

    handle = stubborn.enqueue()
    worker = Worker(app, concurrency=2, stuck_grace=0.1, grace=0.5, lease_seconds=5)
    code = asyncio.run(asyncio.wait_for(worker.run(install_signal_handlers=False), 30))
    assert ended.wait(15)
    assert code == 75
    job = handle.get()
    assert job.state is JobState.SCHEDULED
    stored = app.jobs.steps(job.id).state
    assert stored is not None
    assert orjson.loads(stored.text) == 2
