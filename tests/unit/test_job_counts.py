"""A worker's counts of finished attempts reach the store's history: each outcome as the store
decided it, kept through a store that fails, a name the store would refuse left out."""

from __future__ import annotations

import asyncio
import logging

import pytest

from stagecrew import App, Retry
from stagecrew.backends.job_counts import CountKey
from stagecrew.backends.memory import MemoryBackend
from stagecrew.backends.ops import Op
from stagecrew.clock import FakeClock
from stagecrew.errors import BackendError
from stagecrew.job import ClaimedJob
from stagecrew.observability.history import OutcomeHistory
from stagecrew.testing.kit import TestKit


def claimed(queue: str = "q", task: str = "t") -> ClaimedJob:
    return ClaimedJob(
        id=1,
        task=task,
        queue=queue,
        payload="{}",
        attempt=1,
        token=1,
        max_attempts=3,
        priority=0,
        enqueued_at=0.0,
        run_at=0.0,
        started_at=0.0,
        lease_expires_at=30.0,
    )


def test_a_known_workload_is_counted_by_outcome() -> None:
    app = App("memory://")
    tries: dict[int, int] = {}

    @app.task(queue="email")
    def ok(n: int) -> None: ...

    @app.task(queue="email", max_attempts=1)
    def broken(n: int) -> None:
        raise ValueError("bad input")

    @app.task(queue="reports", backoff=dict(base=1.0, cap=1.0))
    def flaky(n: int) -> None:
        tries[n] = tries.get(n, 0) + 1
        if tries[n] == 1:
            raise Retry(delay=1.0)

    with TestKit(app) as kit:
        for n in range(5):
            ok.enqueue(n)
        for n in range(3):
            broken.enqueue(n)
        for n in range(2):
            flaky.enqueue(n)
        kit.run_until_idle(advance_time=True)
        history = kit.backend.read_counts(7200)
    by_key = {(b.key.task, b.key.outcome): 0 for b in history.buckets}
    for bucket in history.buckets:
        by_key[bucket.key.task, bucket.key.outcome] += bucket.n
    assert by_key == {
        ("ok", "succeeded"): 5,
        ("broken", "dead"): 3,
        ("flaky", "retried"): 2,
        ("flaky", "succeeded"): 2,
    }
    assert history.totals(0.0, queue="reports") == {"retried": 2, "succeeded": 2}


class FailingOnce(MemoryBackend):
    def __init__(self) -> None:
        super().__init__("memory://", FakeClock())
        self.failures = 1

    def _add_counts(self, counts: tuple[tuple[CountKey, int], ...]) -> Op[None]:
        if self.failures:
            self.failures -= 1
            raise BackendError("the store is down")
        return super()._add_counts(counts)


def test_counts_that_could_not_be_written_are_written_with_the_next_flush() -> None:
    backend = FailingOnce()
    history = OutcomeHistory(lambda: backend)
    history.count(claimed(), "succeeded")
    asyncio.run(history.flush())
    assert history.pending == 1 and backend.read_counts().buckets == ()
    history.count(claimed(), "succeeded")
    asyncio.run(history.flush())
    assert history.pending == 0
    assert backend.read_counts().totals(0.0) == {"succeeded": 2}


def test_a_name_the_store_would_refuse_is_left_out_and_the_rest_still_written(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = MemoryBackend("memory://", FakeClock())
    history = OutcomeHistory(lambda: backend)
    caplog.set_level(logging.WARNING, "stagecrew.worker")
    history.count(claimed(task="bad\x00name"), "dead")
    history.count(claimed(), "dead")
    asyncio.run(history.flush())
    assert backend.read_counts().totals(0.0) == {"dead": 1}
    assert any("left out of the job counts" in r.getMessage() for r in caplog.records)


def test_without_a_tracer_provider_no_span_is_made_and_payloads_carry_nothing() -> None:
    from stagecrew.observability import tracing

    assert not tracing.active()  # the API's default provider: tracing is off
    app = App("memory://")

    @app.task
    def plain(n: int) -> None: ...

    handle = plain.enqueue(1)
    assert app.jobs.get(handle.id).payload == '{"args":[1],"kwargs":{}}'


class RefusingOneKey(MemoryBackend):
    """A store that takes every count but those of one key (as a store whose index cannot
    hold that key would), and none at all while it is down."""

    def __init__(self, refused: CountKey) -> None:
        super().__init__("memory://", FakeClock())
        self.refused = refused
        self.down = False
        self.calls = 0

    def _add_counts(self, counts: tuple[tuple[CountKey, int], ...]) -> Op[None]:
        self.calls += 1
        if self.down or any(key == self.refused for key, _ in counts):
            raise BackendError("refused")
        return super()._add_counts(counts)


def test_one_key_the_store_refuses_cannot_keep_the_others_out() -> None:
    bad = CountKey("q", "t", "dead")
    backend = RefusingOneKey(bad)
    history = OutcomeHistory(lambda: backend)
    history.count(claimed(), "dead")
    history.count(claimed(), "succeeded")
    for _ in range(4):
        asyncio.run(history.flush())
    assert backend.read_counts().totals(0.0) == {"succeeded": 1}
    assert history.pending == 0
    history.count(claimed(), "dead")  # no longer counted
    assert history.pending == 0


def test_while_the_store_is_down_no_count_is_dropped() -> None:
    backend = RefusingOneKey(CountKey("-", "-", "-"))
    backend.down = True
    history = OutcomeHistory(lambda: backend)
    history.count(claimed(), "dead")
    history.count(claimed(), "succeeded")
    for _ in range(6):
        asyncio.run(history.flush())
    assert history.pending == 2
    backend.down = False
    asyncio.run(history.flush())
    assert backend.read_counts().totals(0.0) == {"succeeded": 1, "dead": 1}


def test_an_outage_costs_two_calls_a_flush_however_many_keys_wait() -> None:
    backend = RefusingOneKey(CountKey("-", "-", "-"))
    backend.down = True
    history = OutcomeHistory(lambda: backend)
    for outcome in ("dead", "succeeded", "retried", "cancelled"):
        history.count(claimed(), outcome)
    for _ in range(6):
        asyncio.run(history.flush())
    assert history.pending == 4
    assert backend.calls == 3 + 3 * 2  # three batched tries, then two refusals end each pass
