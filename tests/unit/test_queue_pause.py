"""A worker and a paused queue: its jobs wait, the worker neither takes them nor spins on them."""

from __future__ import annotations

import asyncio
from typing import Any

from stagecrew import App, JobState
from stagecrew.worker import Worker


def test_an_idle_worker_neither_claims_nor_spins_on_a_paused_queue_with_due_jobs() -> None:
    app = App("memory://")

    @app.task(queue="held")
    async def held() -> str:
        return "held"

    @app.task(queue="open")
    async def control() -> str:
        return "control"

    backend = app.backend
    calls = 0
    real = backend.wait_and_claim

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return await real(*args, **kwargs)

    backend.wait_and_claim = counted  # type: ignore[method-assign]
    backend.pause_queue("held")
    kept = held.enqueue()

    async def main() -> None:
        worker = Worker(app, queues=["held", "open"], poll_interval=600, lease_seconds=5)
        run = asyncio.create_task(worker.run(install_signal_handlers=False))
        # Half a second idle with a due job in a paused queue: a worker that counted it as due
        # would wake every few milliseconds to claim nothing.
        await asyncio.sleep(0.5)
        done = control.enqueue()  # the positive control: the worker does claim
        for _ in range(2000):
            if done.get().state is JobState.SUCCEEDED:
                break
            await asyncio.sleep(0.01)
        worker.request_stop()
        await asyncio.wait_for(run, 5)
        assert done.get().state is JobState.SUCCEEDED

    asyncio.run(main())
    assert kept.get().state is JobState.AVAILABLE
    assert calls <= 5, f"the idle worker called wait_and_claim {calls} times"
