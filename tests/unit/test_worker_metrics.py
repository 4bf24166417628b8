"""The worker's metrics on the memory engine: each attempt is counted once, by the outcome the
store applied; wait and run times; slots; the rescuer's and the fence's lost claims."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import pytest
from prometheus_client import CollectorRegistry, Histogram

from stagecrew import App, Context, FakeClock, JobState, Retry, Snooze
from stagecrew.errors import JobCancelledError
from stagecrew.job import ClaimedJob
from stagecrew.observability.metrics import BUCKETS, WorkerMetrics
from stagecrew.worker import Worker

OUTCOMES = ("succeeded", "retried", "dead", "cancelled", "snoozed", "released", "lost")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(clock: FakeClock) -> App:
    return App("memory://", clock=clock)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def counted(registry: CollectorRegistry, task: str, queue: str = "default") -> dict[str, float]:
    """The task's `stagecrew_jobs_total` by outcome, left out where there is no series."""
    out = {}
    for outcome in OUTCOMES:
        value = registry.get_sample_value(
            "stagecrew_jobs_total", {"queue": queue, "task": task, "outcome": outcome}
        )
        if value is not None:
            out[outcome] = value
    return out


def only(outcomes: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in outcomes.items() if v}


def drain(app: App, metrics: WorkerMetrics | None) -> int:
    async def main() -> int:
        async with asyncio.timeout(30):
            return await Worker(app, metrics=metrics).drain()

    return asyncio.run(main())


def test_each_attempt_is_counted_once_by_the_outcome_the_store_applied(
    app: App, registry: CollectorRegistry
) -> None:
    @app.task
    def ok(i: int) -> int:
        return i

    @app.task(max_attempts=1)
    def broken(i: int) -> None:
        raise ValueError("nope")

    @app.task
    def flaky(i: int, ctx: Context) -> int:
        if ctx.attempt == 1:
            raise Retry(in_=0)
        return i

    @app.task
    def quits(i: int) -> None:
        raise JobCancelledError("not needed")

    ok.enqueue_many([(i,) for i in range(5)])
    broken.enqueue_many([(i,) for i in range(3)])
    flaky.enqueue_many([(i,) for i in range(2)])
    quits.enqueue(0)
    metrics = WorkerMetrics(registry)
    drain(app, metrics)
    drain(app, metrics)  # the retries, due at once
    assert only(counted(registry, "ok")) == {"succeeded": 5}
    assert only(counted(registry, "broken")) == {"dead": 3}
    assert only(counted(registry, "flaky")) == {"retried": 2, "succeeded": 2}
    assert only(counted(registry, "quits")) == {"cancelled": 1}
    # every outcome's series exists from the first count on, at 0 until it happens
    assert counted(registry, "ok") == {o: 5.0 if o == "succeeded" else 0.0 for o in OUTCOMES}


def test_a_snoozed_attempt_counts_as_snoozed(app: App, registry: CollectorRegistry) -> None:
    @app.task
    def later(ctx: Context) -> None:
        if ctx.attempt == 1 and not ran:
            ran.append(True)
            raise Snooze(0)

    ran: list[bool] = []
    later.enqueue()
    metrics = WorkerMetrics(registry)
    drain(app, metrics)
    drain(app, metrics)
    assert only(counted(registry, "later")) == {"snoozed": 1, "succeeded": 1}


def test_an_outcome_the_store_refuses_counts_as_lost_never_as_its_outcome(
    app: App, clock: FakeClock, registry: CollectorRegistry
) -> None:
    """While the attempt runs its lease expires and the store takes the job back: the fence
    refuses the attempt's success, which is counted lost; the next claim's success counts."""
    runs: list[int] = []

    @app.task
    async def overtaken() -> str:
        runs.append(1)
        if len(runs) == 1:
            clock.advance(31)  # past the lease
            assert app.backend.rescue().requeued == 1
        return "done"

    job = overtaken.enqueue()
    metrics = WorkerMetrics(registry)
    drain(app, metrics)
    assert job.get().state is JobState.SUCCEEDED and len(runs) == 2
    assert only(counted(registry, "overtaken")) == {"lost": 1, "succeeded": 1}


def test_nothing_is_counted_while_metrics_are_off(app: App) -> None:
    @app.task
    def ok() -> None: ...

    ok.enqueue()
    assert drain(app, None) == 1


def test_wait_is_from_the_due_time_to_the_claim_by_the_stores_clock(
    app: App, clock: FakeClock, registry: CollectorRegistry
) -> None:
    @app.task
    async def nap(seconds: float) -> None:
        await asyncio.sleep(seconds)

    nap.enqueue(0.05)
    nap.options(delay=10).enqueue(0.0)  # due 10 s from now: waits 3 s once due
    clock.advance(3)
    metrics = WorkerMetrics(registry)
    drain(app, metrics)
    clock.advance(10)
    drain(app, metrics)

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"queue": "default", "task": "nap", **labels})

    assert sample("stagecrew_job_wait_seconds_count") == 2
    assert sample("stagecrew_job_wait_seconds_sum") == pytest.approx(3 + 3)
    assert sample("stagecrew_job_wait_seconds_bucket", le="2.5") == 0
    assert sample("stagecrew_job_wait_seconds_bucket", le="5.0") == 2
    assert sample("stagecrew_job_run_seconds_count") == 2
    run_sum = sample("stagecrew_job_run_seconds_sum")
    assert run_sum is not None and 0.05 <= run_sum < 5
    assert sample("stagecrew_job_run_seconds_bucket", le="0.025") == 1  # the one of 0 s


def test_batched_observations_add_up_as_one_observe_each_would() -> None:
    """The flush adds a batch to prometheus-client's series (`metrics._add`); one `observe`
    per value must give the same exposition, bucket by bucket."""
    rng = random.Random(7)
    values = [0.0, *BUCKETS, 1e9, *(rng.expovariate(1.0) for _ in range(300))]
    batched, observed = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("stagecrew_job_run_seconds", "x", ("queue", "task"), buckets=BUCKETS,
                          registry=observed)  # fmt: skip
    metrics = WorkerMetrics(batched)
    job = _claimed("q", "t")
    for value in values:
        metrics.ran(job, value)
        reference.labels("q", "t").observe(value)
    metrics.flush()

    def samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
        return {
            (s.name, s.labels.get("le", "")): s.value
            for family in registry.collect()
            if family.name == "stagecrew_job_run_seconds"
            for s in family.samples
            if not s.name.endswith("_created")
        }

    mine, theirs = samples(batched), samples(observed)
    assert mine.keys() == theirs.keys()
    for key, value in theirs.items():
        assert mine[key] == pytest.approx(value), key


def _claimed(queue: str, task: str) -> ClaimedJob:
    return ClaimedJob(1, task, queue, "[]", 1, 1, 1, 0, 0.0, 0.0, 0.0, 30.0)


async def _until(condition: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.01)
    assert condition(), what


def _run_worker(app: App, main: Callable[[Worker], Awaitable[None]], **options: object) -> None:
    async def run() -> None:
        worker = Worker(app, poll_interval=0.02, **options)  # type: ignore[arg-type]
        task = asyncio.create_task(worker.run(install_signal_handlers=False))
        try:
            await main(worker)
        finally:
            worker.request_stop()
            await asyncio.wait_for(task, 10)

    asyncio.run(run())


def test_slots_and_busy_slots_follow_the_running_jobs(
    app: App, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(WorkerMetrics, "flush_interval", 0.02)
    release = asyncio.Event()

    @app.task
    async def hold() -> None:
        await release.wait()

    hold.enqueue_many([(), ()])

    def gauge(name: str) -> float | None:
        return registry.get_sample_value(name)

    async def main(worker: Worker) -> None:
        await _until(lambda: gauge("stagecrew_worker_busy_slots") == 2, "two jobs running")
        assert gauge("stagecrew_worker_slots") == 5
        release.set()
        await _until(lambda: gauge("stagecrew_worker_busy_slots") == 0, "none running")

    _run_worker(app, main, metrics=WorkerMetrics(registry), concurrency=5)
    assert only(counted(registry, "hold")) == {"succeeded": 2}


def test_jobs_this_workers_rescuer_takes_back_count_as_lost(
    app: App, clock: FakeClock, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    @app.task
    def ok() -> None: ...

    ok.enqueue()
    [_] = app.backend.claim(["default"], "a-worker-that-died", 1, 30)
    clock.advance(31)

    async def main(worker: Worker) -> None:
        await _until(lambda: counted(registry, "ok").get("succeeded") == 1, "rerun")
        await _until(
            lambda: (
                registry.get_sample_value(
                    "stagecrew_jobs_total", {"queue": "", "task": "", "outcome": "lost"}
                )
                == 1
            ),
            "rescue counted",
        )

    monkeypatch.setattr(WorkerMetrics, "flush_interval", 0.02)
    _run_worker(app, main, metrics=WorkerMetrics(registry), rescue_interval=0.02)
    assert only(counted(registry, "ok")) == {"succeeded": 1}
