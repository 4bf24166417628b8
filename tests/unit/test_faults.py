"""The crash-point hook: parsed once from STAGECREW_FAULT, fired exactly where it says."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from stagecrew import App, JobState
from stagecrew.errors import ConfigurationError
from stagecrew.worker import Worker
from stagecrew.worker.faults import FaultPoint, Faults


def test_the_environment_variable_names_points_and_probabilities() -> None:
    faults = Faults.from_env({"STAGECREW_FAULT": "after_claim:0.05, during_ack:1"})
    assert faults is not None
    assert dict(faults.chances) == {FaultPoint.AFTER_CLAIM: 0.05, FaultPoint.DURING_ACK: 1.0}
    assert Faults.from_env({}) is None
    assert Faults.from_env({"STAGECREW_FAULT": " "}) is None


@pytest.mark.parametrize("text", ["after_lunch:0.1", "before_ack:x", "before_ack:1.5"])
def test_a_malformed_fault_setting_is_refused(text: str) -> None:
    with pytest.raises(ConfigurationError, match="STAGECREW_FAULT"):
        Faults.parse(text)


def test_a_worker_without_the_variable_injects_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STAGECREW_FAULT", raising=False)
    assert Worker(App("memory://")).faults is None
    monkeypatch.setenv("STAGECREW_FAULT", "before_ack:0.5")
    faults = Worker(App("memory://")).faults
    assert faults is not None and faults.chances == {FaultPoint.BEFORE_ACK: 0.5}


def _run_until(worker: Worker, done: threading.Event) -> None:
    async def main() -> None:
        task = asyncio.create_task(worker.run(install_signal_handlers=False))
        while not done.is_set() and not task.done():
            await asyncio.sleep(0.01)
        worker.request_stop()
        await task

    asyncio.run(main())


@pytest.mark.parametrize(
    ("point", "states_when_hit"),
    [
        (FaultPoint.AFTER_CLAIM, {JobState.RUNNING}),
        (FaultPoint.BEFORE_ACK, {JobState.RUNNING}),
        # the kill lands a few milliseconds into the write: before or after it is applied
        (FaultPoint.DURING_ACK, {JobState.RUNNING, JobState.SUCCEEDED}),
    ],
)
def test_each_point_fires_after_the_claim_and_no_later_than_the_ack(
    point: FaultPoint, states_when_hit: set[JobState]
) -> None:
    app = App("memory://")
    ran: list[int] = []

    @app.task
    def work(i: int) -> int:
        ran.append(i)
        return i

    job = work.enqueue(1)
    hits: list[tuple[FaultPoint, JobState, list[int]]] = []
    done = threading.Event()

    def kill(at: FaultPoint) -> None:
        hits.append((at, app.jobs.get(job.id).state, list(ran)))
        done.set()

    faults = Faults({point: 1.0}, kill=kill)
    _run_until(Worker(app, poll_interval=0.01, faults=faults), done)
    deadline = time.monotonic() + 2
    while not hits and time.monotonic() < deadline:
        time.sleep(0.01)
    at, state, ran_before = hits[0]
    assert at is point
    assert state in states_when_hit
    assert ran_before == ([] if point is FaultPoint.AFTER_CLAIM else [1])
