"""Worker behaviour on the memory engine with a fake clock: retries, DLQ, timeouts, cancels."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta

import pytest

from stagecrew import (
    App,
    Cancel,
    Context,
    ErrorKind,
    FakeClock,
    JobCancelledError,
    JobHandle,
    JobState,
    Retry,
)
from stagecrew.backends.base import Ack, JobFilter
from stagecrew.errors import BackendError, ConfigurationError
from stagecrew.job import ClaimedJob, NewJob
from stagecrew.testing.kit import TestKit
from stagecrew.worker import Worker, runner


@pytest.fixture
def app() -> App:
    return App("memory://")


@pytest.fixture
def kit(app: App) -> TestKit:
    with TestKit(app) as kit:
        yield kit


def test_job_is_acked_with_its_result(app: App, kit: TestKit) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    job = add.enqueue(2, 3)
    assert kit.run_until_idle() == 1
    stored = job.get()
    assert stored.state is JobState.SUCCEEDED
    assert stored.result == 5
    assert stored.finished_at is not None and stored.started_at is not None


def test_failing_job_retries_with_backoff_then_goes_dead_with_every_error(
    app: App, kit: TestKit
) -> None:
    @app.task(max_attempts=3, backoff={"base": 10, "factor": 2, "cap": 100})
    def broken() -> None:
        raise ValueError("nope")

    job = broken.enqueue()
    kit.run_until_idle()
    after_first = job.get()
    assert after_first.state is JobState.SCHEDULED
    assert kit.clock.now() <= after_first.run_at <= kit.clock.now() + 20  # ceiling 10*2^1
    kit.run_until_idle(advance_time=True)
    dead = job.get()
    assert dead.state is JobState.DEAD
    assert dead.attempt == 3
    assert [e.attempt for e in dead.errors] == [1, 2, 3]
    assert all(e.type == "ValueError" and "nope" in e.traceback for e in dead.errors)


def test_dont_retry_on_sends_the_job_straight_to_the_dlq(app: App, kit: TestKit) -> None:
    @app.task(max_attempts=10, dont_retry_on=(KeyError,))
    def lookup() -> None:
        raise KeyError("missing")

    job = lookup.enqueue()
    kit.run_until_idle(advance_time=True)
    assert job.get().state is JobState.DEAD
    assert job.get().attempt == 1


def test_retry_on_limits_which_errors_retry(app: App, kit: TestKit) -> None:
    @app.task(max_attempts=5, retry_on=(ConnectionError,))
    def call_api() -> None:
        raise RuntimeError("bug")

    job = call_api.enqueue()
    kit.run_until_idle(advance_time=True)
    assert job.get().state is JobState.DEAD and job.get().attempt == 1


def test_task_can_choose_its_own_retry_delay(app: App, kit: TestKit) -> None:
    @app.task(max_attempts=3)
    def poll(ctx: Context) -> str:
        if ctx.attempt == 1:
            raise Retry(in_=120)
        return "ready"

    job = poll.enqueue()
    kit.run_until_idle()
    assert job.get().run_at == kit.clock.now() + 120
    kit.clock.advance(119)
    kit.run_until_idle()
    assert job.get().state is JobState.SCHEDULED
    kit.clock.advance(1)
    kit.run_until_idle()
    assert job.get().result == "ready"


def test_delayed_job_does_not_run_before_its_time(app: App, kit: TestKit) -> None:
    ran: list[float] = []

    @app.task
    def tick() -> None:
        ran.append(kit.clock.now())

    start = kit.clock.now()
    tick.options(delay=30).enqueue()
    assert kit.run_until_idle() == 0
    kit.clock.advance(29.9)
    assert kit.run_until_idle() == 0
    kit.clock.advance(0.1)
    assert kit.run_until_idle() == 1
    assert ran == [start + 30]


def test_async_job_over_its_timeout_is_cancelled_and_retried(app: App, kit: TestKit) -> None:
    finished = []

    @app.task(timeout=0.05, max_attempts=2)
    async def slow() -> None:
        await asyncio.sleep(30)
        finished.append(True)

    job = slow.enqueue()
    kit.run_until_idle(advance_time=True)
    dead = job.get()
    assert dead.state is JobState.DEAD
    assert [e.kind for e in dead.errors] == [ErrorKind.TIMEOUT, ErrorKind.TIMEOUT]
    assert finished == []


def test_timeout_error_raised_by_the_task_itself_is_an_ordinary_error(
    app: App, kit: TestKit
) -> None:
    @app.task(timeout=30, max_attempts=1)
    async def call() -> None:
        raise TimeoutError("upstream timed out")

    job = call.enqueue()
    kit.run_until_idle()
    assert job.get().errors[0].kind is ErrorKind.ERROR


def test_sync_job_over_its_timeout_sees_cancelled_and_its_attempt_fails(
    app: App, kit: TestKit
) -> None:
    saw_cancel = threading.Event()

    @app.task(timeout=0.05, max_attempts=1)
    def crunch(ctx: Context) -> str:
        while not ctx.cancelled:
            time.sleep(0.005)
        saw_cancel.set()
        return "partial"

    job = crunch.enqueue()
    kit.run_until_idle()
    assert saw_cancel.is_set()
    stored = job.get()
    assert stored.state is JobState.DEAD
    assert stored.errors[0].kind is ErrorKind.TIMEOUT
    assert stored.result is None


def test_sync_job_that_ignores_its_timeout_recycles_the_worker(app: App) -> None:
    release = threading.Event()

    @app.task(timeout=0.05, max_attempts=2)
    def stubborn() -> None:
        release.wait(10)

    job = stubborn.enqueue()

    async def main() -> int:
        worker = Worker(app, concurrency=2, stuck_grace=0.1, grace=0.5, lease_seconds=5)
        return await worker.run(install_signal_handlers=False)

    try:
        code = asyncio.run(asyncio.wait_for(main(), 10))
    finally:
        release.set()
    assert code == 75
    stored = job.get()
    assert stored.state is JobState.SCHEDULED
    assert stored.errors[0].kind is ErrorKind.TIMEOUT
    assert "recycled" in stored.errors[0].message


def test_unrunnable_jobs_are_dead_lettered_and_the_worker_keeps_going(
    app: App, kit: TestKit
) -> None:
    """A bad payload is dead at once; an unknown task once `unknown_task_window` has passed."""

    @app.task
    def good() -> str:
        return "fine"

    kit.backend.enqueue([NewJob(task="vanished", payload='{"args":[],"kwargs":{}}')])
    kit.backend.enqueue([NewJob(task="good", payload="{not json")])
    kit.backend.enqueue([NewJob(task="good", payload='{"args":[1,2,3],"kwargs":{}}')])
    ok = good.enqueue()
    kit.run_until_idle(advance_time=True)
    dead = kit.jobs(state="dead")
    assert len(dead) == 3
    assert all(j.attempt == 1 and j.errors[0].kind is ErrorKind.UNRUNNABLE for j in dead)
    reasons = " ".join(j.errors[0].message for j in dead)
    assert "no task named 'vanished'" in reasons
    assert "not valid JSON" in reasons
    assert "arguments do not fit" in reasons
    assert ok.get().state is JobState.SUCCEEDED


@pytest.mark.parametrize("window", [-1.0, float("nan"), float("inf"), "soon"])
def test_unknown_task_window_must_be_a_finite_number_of_seconds(window: object) -> None:
    with pytest.raises(ConfigurationError, match="unknown_task_window"):
        App("memory://", unknown_task_window=window)  # type: ignore[arg-type]


def test_unknown_task_window_takes_a_timedelta() -> None:
    assert App("memory://", unknown_task_window=timedelta(minutes=5)).unknown_task_window == 300


def test_a_job_of_an_unknown_task_is_handed_back_even_when_its_errors_cannot_be_read(
    app: App, kit: TestKit
) -> None:
    """The read that finds when the wait began is not worth a lost worker: hand back anyway."""

    async def unreadable(job_id: int) -> None:
        raise BackendError("the store is down")

    kit.backend.get_async = unreadable  # type: ignore[method-assign]
    (job,) = kit.backend.enqueue([NewJob(task="newer", payload='{"args":[],"kwargs":{}}')])

    kit.run_until_idle()

    waiting = app.jobs.get(job.id)
    assert waiting.state is JobState.SCHEDULED
    assert waiting.attempt == 0 and waiting.lost == 0 and waiting.errors == ()


def test_unserializable_result_dead_letters_the_job(app: App, kit: TestKit) -> None:
    @app.task(max_attempts=5)
    def make() -> object:
        return object()

    job = make.enqueue()
    kit.run_until_idle(advance_time=True)
    assert job.get().state is JobState.DEAD
    assert "cannot be stored as JSON" in job.get().errors[0].message


def test_task_raising_cancel_is_cancelled_not_dead(app: App, kit: TestKit) -> None:
    @app.task
    def obsolete() -> None:
        raise Cancel("order was deleted")

    job = obsolete.enqueue()
    kit.run_until_idle()
    assert job.get().state is JobState.CANCELLED


def test_task_raising_the_cancellation_of_another_job_fails_instead_of_ending_cancelled(
    app: App, kit: TestKit
) -> None:
    """`JobCancelledError` from `result()` of another job reports that job's end: for the
    task that let it through it is a failure like any other, retried as usual."""

    @app.task
    def child() -> None: ...

    @app.task(max_attempts=2)
    def parent(child_id: int) -> None:
        JobHandle(app, child_id).result(timeout=5)

    cancelled = child.enqueue()
    app.jobs.cancel(cancelled.id)
    job = parent.enqueue(cancelled.id)
    kit.run_until_idle(advance_time=True)
    stored = job.get()
    assert stored.state is JobState.DEAD
    assert [e.kind for e in stored.errors] == [ErrorKind.ERROR, ErrorKind.ERROR]
    assert all(e.type == "JobCancelledError" for e in stored.errors)


def test_task_raising_job_cancelled_error_about_itself_is_cancelled(app: App, kit: TestKit) -> None:
    @app.task
    def obsolete() -> None:
        raise JobCancelledError("order was deleted")

    job = obsolete.enqueue()
    kit.run_until_idle()
    assert job.get().state is JobState.CANCELLED
    assert job.get().errors[-1].message == "order was deleted"


def test_cancelled_waiting_job_never_runs(app: App, kit: TestKit) -> None:
    ran = []

    @app.task
    def work() -> None:
        ran.append(1)

    job = work.enqueue()
    app.jobs.cancel(job.id)
    kit.run_until_idle(advance_time=True)
    assert ran == []
    assert job.get().state is JobState.CANCELLED


def _run_worker_until(app: App, done: asyncio.Event | None = None, **kw: float) -> Worker:
    worker = Worker(app, concurrency=4, heartbeat_interval=0.01, poll_interval=0.01, **kw)  # type: ignore[arg-type]
    return worker


def test_running_async_job_is_cancelled_at_once(app: App) -> None:
    started = asyncio.Event()

    @app.task
    async def long() -> None:
        started.set()
        await asyncio.sleep(60)

    job = long.enqueue()

    async def main() -> None:
        worker = _run_worker_until(app, lease_seconds=5)
        run = asyncio.create_task(worker.run(install_signal_handlers=False))
        await asyncio.wait_for(started.wait(), 5)
        app.jobs.cancel(job.id)
        while app.jobs.get(job.id).state is JobState.RUNNING:
            await asyncio.sleep(0.01)
        worker.request_stop()
        await asyncio.wait_for(run, 5)

    asyncio.run(main())
    stored = job.get()
    assert stored.state is JobState.CANCELLED
    assert stored.errors[-1].kind is ErrorKind.CANCELLED


def test_running_sync_job_sees_cancelled_and_its_result_is_discarded(app: App) -> None:
    started = threading.Event()

    @app.task
    def long(ctx: Context) -> str:
        started.set()
        while not ctx.cancelled:
            time.sleep(0.005)
        return "should be discarded"

    job = long.enqueue()

    async def main() -> None:
        worker = _run_worker_until(app, lease_seconds=5)
        run = asyncio.create_task(worker.run(install_signal_handlers=False))
        await asyncio.to_thread(started.wait, 5)
        app.jobs.cancel(job.id)
        while app.jobs.get(job.id).state is JobState.RUNNING:
            await asyncio.sleep(0.01)
        worker.request_stop()
        await asyncio.wait_for(run, 5)

    asyncio.run(main())
    stored = job.get()
    assert stored.state is JobState.CANCELLED
    assert stored.result is None


def test_graceful_stop_finishes_running_jobs_within_grace(app: App) -> None:
    started = asyncio.Event()

    @app.task
    async def short() -> str:
        started.set()
        await asyncio.sleep(0.1)
        return "done"

    job = short.enqueue()

    async def main() -> None:
        worker = _run_worker_until(app, lease_seconds=5, grace=5)
        run = asyncio.create_task(worker.run(install_signal_handlers=False))
        await asyncio.wait_for(started.wait(), 5)
        worker.request_stop()
        assert await asyncio.wait_for(run, 5) == 0

    asyncio.run(main())
    assert job.get().state is JobState.SUCCEEDED


def test_shutdown_hands_unfinished_jobs_back_without_burning_an_attempt(app: App) -> None:
    started = asyncio.Event()
    sync_started = threading.Event()
    stop_sync = threading.Event()

    @app.task(max_attempts=1)
    async def endless() -> None:
        started.set()
        await asyncio.sleep(60)

    @app.task(max_attempts=1)
    def endless_sync() -> None:
        sync_started.set()
        stop_sync.wait(10)

    a = endless.enqueue()
    s = endless_sync.enqueue()
    waiting = [endless.enqueue() for _ in range(3)]

    async def main() -> None:
        worker = Worker(app, concurrency=2, lease_seconds=5, grace=0.1, poll_interval=0.01)
        run = asyncio.create_task(worker.run(install_signal_handlers=False))
        await asyncio.wait_for(started.wait(), 5)
        await asyncio.to_thread(sync_started.wait, 5)
        worker.request_stop()
        await asyncio.wait_for(run, 10)

    try:
        asyncio.run(main())
    finally:
        stop_sync.set()
    for job in (a, s, *waiting):
        stored = job.get()
        assert stored.state is JobState.AVAILABLE, stored
        assert stored.attempt == 0
        assert stored.errors == ()
    assert app.backend.list_jobs(JobFilter(states=frozenset({JobState.RUNNING}))) == []


def test_log_lines_written_by_a_job_carry_its_id(
    app: App, kit: TestKit, caplog: pytest.LogCaptureFixture
) -> None:
    @app.task
    def chatty(ctx: Context) -> None:
        ctx.log.info("hello from the job")

    job = chatty.enqueue()
    with caplog.at_level("INFO", logger="stagecrew.job"):
        kit.run_until_idle()
    record = next(r for r in caplog.records if "hello from the job" in r.getMessage())
    assert f"job {job.id}" in record.getMessage()
    assert record.job_id == job.id  # type: ignore[attr-defined]


def test_fake_clock_drives_the_store_the_backoff_and_the_worker() -> None:
    clock = FakeClock(1_000_000.0)
    app = App("memory://", clock=clock)

    @app.task(max_attempts=2, backoff={"base": 3600, "factor": 1, "cap": 3600})
    def once_an_hour(ctx: Context) -> int:
        if ctx.attempt == 1:
            raise ConnectionError("down")
        return ctx.attempt

    with TestKit(app, clock=clock) as kit:
        job = once_an_hour.enqueue()
        kit.run_until_idle()
        retry_at = job.get().run_at
        assert 1_000_000.0 <= retry_at <= 1_000_000.0 + 3600
        kit.clock.set(retry_at)
        kit.run_until_idle()
        assert job.get().result == 2
        assert job.get().finished_at == retry_at


def test_idle_worker_wakes_for_a_delayed_job_without_waiting_a_whole_poll_interval() -> None:
    app = App("memory://")

    @app.task
    async def soon() -> str:
        return "ran"

    job = soon.options(delay=0.2).enqueue()

    async def main() -> None:
        worker = Worker(app, poll_interval=600, lease_seconds=5)
        run = asyncio.create_task(worker.run(install_signal_handlers=False))
        for _ in range(2000):  # up to ~20 s, far below the 600 s poll interval
            if app.jobs.get(job.id).state is JobState.SUCCEEDED:
                break
            await asyncio.sleep(0.01)
        worker.request_stop()
        await asyncio.wait_for(run, 5)

    asyncio.run(main())
    assert job.get().state is JobState.SUCCEEDED


def test_worker_stops_claiming_while_the_store_is_slow_to_take_outcomes(app: App) -> None:
    """Finished jobs keep their lease until their outcome is written: claims must not run ahead."""

    @app.task
    async def quick(i: int) -> int:
        return i

    quick.enqueue_many([(i,) for i in range(200)])
    backend = app.backend
    real_ack = backend.ack_async
    most_leased = 0

    async def slow_ack(acks):  # type: ignore[no-untyped-def]
        nonlocal most_leased
        running = backend.list_jobs(JobFilter(states=frozenset({JobState.RUNNING})))
        most_leased = max(most_leased, len(running))
        await asyncio.sleep(0.05)
        return await real_ack(acks)

    backend.ack_async = slow_ack  # type: ignore[method-assign]

    async def main() -> int:
        worker = Worker(app, concurrency=5, lease_seconds=30)
        return await worker.drain()

    assert asyncio.run(main()) == 200
    assert 0 < most_leased <= 10  # concurrency plus at most as many outcomes in flight


def test_without_an_app_reference_a_poison_suspect_runs_at_once_beside_other_jobs(
    app: App, kit: TestKit
) -> None:
    """An embedded worker cannot run a suspect in a process of its own: it never holds it back.

    The neighbour finishes only once both suspects ran, so a worker that kept a
    suspect waiting (leased) for its other jobs would leave the neighbour to give up.
    """
    suspects_done = threading.Semaphore(0)

    @app.task
    def suspect() -> None:
        suspects_done.release()

    @app.task
    def neighbour() -> bool:
        return all(suspects_done.acquire(timeout=10) for _ in range(2))

    suspects = [suspect.enqueue() for _ in range(2)]
    for _ in range(app.max_worker_losses - 1):  # two workers died while they ran
        claimed = app.backend.claim([app.default_queue], "gone", 10, 30)
        assert {c.id for c in claimed} == {s.id for s in suspects}
        kit.clock.advance(31)
        app.backend.rescue(app.max_worker_losses)
    beside = neighbour.enqueue()

    assert kit.run_until_idle() == 3
    assert beside.get().result is True
    for job in suspects:
        stored = job.get()
        assert stored.state is JobState.SUCCEEDED
        assert (stored.attempt, stored.lost) == (3, 2)


def test_a_heartbeat_reporting_a_lease_lost_drops_that_claims_outcome_waiting_to_be_written(
    app: App, kit: TestKit
) -> None:
    """The outcome waits behind a store outage; meanwhile the job is dead-lettered, re-run and
    claimed elsewhere as attempt 1 again. Once the store is back, the outcome is never sent."""

    @app.task(max_attempts=1)
    async def quick() -> str:
        return "from the stale worker"

    job = quick.enqueue()
    backend = app.backend
    real_ack, real_heartbeat = backend.ack_async, backend.heartbeat_async
    store_down = True
    sent: list[list[Ack]] = []
    failed_once = asyncio.Event()
    lost_reported = asyncio.Event()

    async def ack_async(acks):  # type: ignore[no-untyped-def]
        sent.append(list(acks))
        if store_down:
            failed_once.set()
            raise BackendError("the store is down")
        return await real_ack(acks)

    async def heartbeat_async(worker, refs, lease):  # type: ignore[no-untyped-def]
        reply = await real_heartbeat(worker, refs, lease)
        if job.id in reply.lost:
            lost_reported.set()
        return reply

    backend.ack_async = ack_async  # type: ignore[method-assign]
    backend.heartbeat_async = heartbeat_async  # type: ignore[method-assign]

    async def main() -> ClaimedJob:
        nonlocal store_down
        worker = Worker(app, lease_seconds=5, heartbeat_interval=0.01, poll_interval=0.01)
        run = asyncio.create_task(worker.run(install_signal_handlers=False))
        await asyncio.wait_for(failed_once.wait(), 5)
        kit.clock.advance(6)  # the stale worker's lease runs out: DLQ, `dlq requeue`, claimed again
        backend.rescue()
        assert backend.requeue(JobFilter(ids=frozenset({job.id}))) == 1
        [other] = backend.claim([app.default_queue], "another-worker", 1, 30)
        await asyncio.wait_for(lost_reported.wait(), 5)
        already_sent = len(sent)
        store_down = False
        worker.request_stop()
        await asyncio.wait_for(run, 10)
        stale = [a for batch in sent[already_sent:] for a in batch if a.ref.id == job.id]
        assert stale == []
        return other

    other = asyncio.run(main())
    assert other.attempt == 1
    stored = job.get()
    assert (stored.state, stored.lease_owner, stored.result) == (
        JobState.RUNNING,
        "another-worker",
        None,
    )


def test_drain_raises_instead_of_waiting_for_ever_on_an_outcome_the_store_never_takes(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "DRAIN_GIVE_UP", 1.0)

    @app.task
    def ok(i: int) -> int:
        return i

    bad = ok.enqueue(0)
    ok.enqueue(1)
    real_ack = app.backend.ack_async

    async def ack_async(acks):  # type: ignore[no-untyped-def]
        if any(a.ref.id == bad.id for a in acks):
            raise BackendError("the store refuses this one")
        return await real_ack(acks)

    app.backend.ack_async = ack_async  # type: ignore[method-assign]

    async def main() -> None:
        async with asyncio.timeout(30):  # a hang fails here, not at the suite's timeout
            await Worker(app, concurrency=2).drain()

    with pytest.raises(BackendError, match="drain gave up"):
        asyncio.run(main())
    assert bad.get().state is JobState.RUNNING  # leased: it runs again once the lease expires


def test_a_lost_claim_still_running_never_touches_the_same_workers_newer_claim_of_its_job(
    kit: TestKit,
) -> None:
    """Claim 1 of a sync job loses its lease while its thread still runs; the same worker
    claims the job again. When claim 1's thread returns, claim 2 must still be heartbeated
    and its outcome written."""
    app = kit.app
    first_started, release_first = threading.Event(), threading.Event()
    second_started, blocker_started, release_blocker = (
        threading.Event(),
        threading.Event(),
        threading.Event(),
    )
    go_second = threading.Event()

    @app.task
    def slow(name: str) -> str:
        if name == "blocker":
            blocker_started.set()
            release_blocker.wait(20)
            return name
        if not first_started.is_set():
            first_started.set()
            release_first.wait(20)
            return "claim 1"
        second_started.set()
        go_second.wait(20)
        return "claim 2"

    job = slow.enqueue("job")
    heartbeats_fail = False
    lost_reported = asyncio.Event()
    real_heartbeat = app.backend.heartbeat_async

    async def heartbeat_async(worker, refs, lease):  # type: ignore[no-untyped-def]
        if heartbeats_fail:
            raise BackendError("the store is unreachable")
        reply = await real_heartbeat(worker, refs, lease)
        if job.id in reply.lost:
            lost_reported.set()
        return reply

    app.backend.heartbeat_async = heartbeat_async  # type: ignore[method-assign]

    async def until(event: threading.Event) -> None:
        while not event.is_set():
            await asyncio.sleep(0.01)

    async def main() -> None:
        nonlocal heartbeats_fail
        worker = Worker(
            app, concurrency=2, heartbeat_interval=0.02, poll_interval=0.02, rescue_interval=1e6
        )
        run = asyncio.create_task(worker.run(install_signal_handlers=False))
        async with asyncio.timeout(30):
            await until(first_started)
            first = worker._inflight[job.id]
            heartbeats_fail = True
            kit.clock.advance(31)  # claim 1's lease runs out unrenewed
            slow.enqueue("blocker")  # fills the second slot, its lease fresh
            await until(blocker_started)
            assert app.backend.rescue().requeued == 1  # claim 1 only
            heartbeats_fail = False
            await lost_reported.wait()
            release_blocker.set()  # the slot frees: the job is claimed again, claim 2
            await until(second_started)
            release_first.set()
            assert first.task is not None
            await first.task  # claim 1's thread returned and its flight ended
            go_second.set()
            while job.get().state is JobState.RUNNING:
                await asyncio.sleep(0.01)
        worker.request_stop()
        await run

    asyncio.run(main())
    stored = job.get()
    assert (stored.state, stored.result, stored.claims) == (JobState.SUCCEEDED, "claim 2", 2)
