"""A stopping worker ends within a bounded time, whatever its store calls do with cancellation.

Python 3.11's `asyncio.wait_for` returns the result of the call it wraps when that call
completes just as a cancellation comes, and the cancellation is lost; redis-py sends every
command through it, so a task cancelled while a command is being sent carries on as if it had
not been. These tests model such a store call (`_loses_its_cancellation`) on the memory engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from stagecrew import App, JobState
from stagecrew.backends.base import Ack, HeartbeatReply
from stagecrew.errors import BackendError
from stagecrew.job import JobRef
from stagecrew.worker import Worker, runner


@pytest.fixture
def app() -> App:
    return App("memory://")


async def _loses_its_cancellation() -> None:
    """Wait until cancelled, then return as if the call had completed."""
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.get_running_loop().create_future()


def _running_task(name: str) -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == name and not t.done()]


async def _stops_by_itself(run: asyncio.Task[int]) -> int:
    """`run`'s exit code, once it returned without being cancelled (a timeout here would cancel
    it, and a worker may end normally after that)."""
    done, _ = await asyncio.wait({run}, timeout=10)
    if not done:
        await _cancel_until_ended()
        pytest.fail("the worker did not stop")
    return run.result()


async def _cancel_until_ended() -> None:
    """Cancel every other task again and again until each ended, so that the test can end."""
    others = asyncio.all_tasks() - {asyncio.current_task()}
    while others:
        for task in others:
            task.cancel()
        await asyncio.wait(others, timeout=0.01)
        others = {task for task in others if not task.done()}


def test_a_heartbeat_that_loses_its_cancellation_still_stops(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    finish = asyncio.Event()

    @app.task
    async def waits() -> None:
        await finish.wait()

    job = waits.enqueue()
    backend = app.backend
    real_heartbeat = backend.heartbeat_async
    in_flight = asyncio.Event()

    async def heartbeat_async(
        worker: str, refs: list[JobRef], lease_seconds: float
    ) -> HeartbeatReply:
        if not in_flight.is_set():  # the first call is still on its way when the worker stops
            in_flight.set()
            await _loses_its_cancellation()
        return await real_heartbeat(worker, refs, lease_seconds)

    backend.heartbeat_async = heartbeat_async  # type: ignore[method-assign]

    async def main() -> None:
        worker = Worker(app, lease_seconds=5, heartbeat_interval=0.01, poll_interval=0.01)
        run = asyncio.create_task(worker.run(install_signal_handlers=False))
        await asyncio.wait_for(in_flight.wait(), 5)
        finish.set()
        while job.state() is not JobState.SUCCEEDED:
            await asyncio.sleep(0.01)
        worker.request_stop()
        assert await _stops_by_itself(run) == runner.EXIT_OK
        assert _running_task("heartbeat") == []

    with caplog.at_level(logging.ERROR, logger="stagecrew.worker"):
        asyncio.run(main())
    assert caplog.records == []


def test_a_completer_whose_store_call_loses_its_cancellation_is_left_after_the_flush_wait(
    app: App, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The store never takes the last outcome: the worker stops once the flush wait is over,
    and the job runs again after its lease, as when the process ends."""
    monkeypatch.setattr(runner, "FINAL_FLUSH_WAIT", 0.2)

    @app.task
    async def quick() -> None:
        return None

    job = quick.enqueue()
    writing = asyncio.Event()

    async def ack_async(acks: list[Ack]) -> list[bool]:
        writing.set()
        await _loses_its_cancellation()
        raise BackendError("the store is down")

    app.backend.ack_async = ack_async  # type: ignore[method-assign]

    async def main() -> None:
        worker = Worker(app, lease_seconds=0.1, heartbeat_interval=0.01, poll_interval=0.01)
        run = asyncio.create_task(worker.run(install_signal_handlers=False))
        await asyncio.wait_for(writing.wait(), 5)
        worker.request_stop()
        assert await _stops_by_itself(run) == runner.EXIT_OK
        assert _running_task("completer") == []

    with caplog.at_level(logging.ERROR, logger="stagecrew.worker"):
        asyncio.run(main())
    errors = [r.getMessage() for r in caplog.records]
    assert "could not write final outcomes; those jobs will run again after lease expiry" in errors
    assert not [e for e in errors if "did not stop" in e], errors
    assert job.state() is JobState.RUNNING  # until its lease expires


def test_a_background_task_that_ignores_being_told_to_stop_is_left_behind_after_a_while(
    app: App, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug of that kind is logged, and does not keep the worker from stopping."""
    monkeypatch.setattr(runner, "BACKGROUND_STOP_WAIT", 0.2)
    rescuing = asyncio.Event()
    release = asyncio.Event()

    async def rescue_async(max_lost: int) -> object:
        rescuing.set()
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()
        raise BackendError("released at the end of the test")

    app.backend.rescue_async = rescue_async  # type: ignore[method-assign]

    async def main() -> None:
        worker = Worker(app, lease_seconds=0.1, rescue_interval=0.01, poll_interval=0.01)
        run = asyncio.create_task(worker.run(install_signal_handlers=False))
        await asyncio.wait_for(rescuing.wait(), 5)
        worker.request_stop()
        try:
            assert await _stops_by_itself(run) == runner.EXIT_OK
        finally:
            release.set()

    with caplog.at_level(logging.ERROR, logger="stagecrew.worker"):
        asyncio.run(main())
    assert [r.getMessage() for r in caplog.records] == [
        "rescue did not stop within 0.2s of being told to; the worker stops without it"
    ]
