"""The scheduler on the fake clock: first run, catch-up modes, restarts, pause, removed
schedules, and several schedulers sharing one store."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from stagecrew import App, FakeClock, JobState
from stagecrew.maintenance.scheduler import Scheduler
from stagecrew.schedule import scheduled_tick
from stagecrew.worker import Worker

START = datetime(2025, 3, 3, 9, 0, 30, tzinfo=UTC)  # a Monday, half a minute past 09:00


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def app(clock: FakeClock) -> App:
    app = App("memory://", clock=clock)

    @app.task
    def report(region: str = "eu") -> str:
        return region

    return app


def ticks_of(app: App) -> list[datetime]:
    jobs = sorted(app.jobs.list(limit=10_000), key=lambda j: j.id)
    found = [scheduled_tick(job) for job in jobs]
    assert None not in found
    return [t for t in found if t is not None]


def at(hour: int, minute: int, second: int = 0, day: int = 3) -> datetime:
    return datetime(2025, 3, day, hour, minute, second, tzinfo=UTC)


def test_the_first_run_starts_from_now_without_back_fill(app: App, clock: FakeClock) -> None:
    app.schedule("report", cron="*/5 * * * *")
    scheduler = Scheduler(app)
    assert scheduler.fire_due().fired == {}
    clock.set(at(9, 4, 59))
    assert scheduler.fire_due().fired == {}
    clock.set(at(9, 5, 1))
    assert list(scheduler.fire_due().fired) == ["report"]
    assert ticks_of(app) == [at(9, 5)]


def test_the_job_gets_the_schedule_arguments_and_knows_its_tick(app: App, clock: FakeClock) -> None:
    app.schedule("report", every=60, kwargs={"region": "us"}, name="digest-us", priority=3)
    scheduler = Scheduler(app)
    scheduler.fire_due()
    clock.advance(60)
    [job_id] = scheduler.fire_due().fired["digest-us"]
    job = app.jobs.get(job_id)
    assert job.payload == '{"args":[],"kwargs":{"region":"us"}}'
    assert job.priority == 3
    assert job.idempotency_key == "schedule:digest-us:2025-03-03T09:01:00+00:00"
    assert scheduled_tick(job) == at(9, 1)


def run_outage(app: App, clock: FakeClock, **options: object) -> list[datetime]:
    app.schedule("report", cron="*/10 * * * *", **options)  # type: ignore[arg-type]
    scheduler = Scheduler(app)
    scheduler.fire_due()
    clock.set(at(9, 10, 2))
    scheduler.fire_due()  # fires 09:10
    clock.set(at(10, 25))  # down from 09:10 to 10:25: 09:20 ... 10:20 missed
    scheduler.fire_due()
    return ticks_of(app)


def test_catch_up_latest_makes_one_job_for_the_missed_period(app: App, clock: FakeClock) -> None:
    assert run_outage(app, clock) == [at(9, 10), at(10, 20)]


def test_catch_up_all_fires_every_missed_tick(app: App, clock: FakeClock) -> None:
    assert run_outage(app, clock, catch_up="all") == [at(9, 10)] + [
        at(9, 20) + timedelta(minutes=10 * i) for i in range(7)
    ]


def test_catch_up_all_is_bounded_by_max_catch_up(app: App, clock: FakeClock) -> None:
    assert run_outage(app, clock, catch_up="all", max_catch_up=2) == [
        at(9, 10),
        at(10, 0),
        at(10, 10),
        at(10, 20),
    ]


def test_catch_up_skip_passes_over_missed_ticks(app: App, clock: FakeClock) -> None:
    assert run_outage(app, clock, catch_up="skip") == [at(9, 10)]
    clock.set(at(10, 30, 5))
    Scheduler(app).fire_due()
    assert ticks_of(app) == [at(9, 10), at(10, 30)]  # on time again: it fires


def test_catch_up_skip_still_fires_a_tick_seen_a_little_late(app: App, clock: FakeClock) -> None:
    app.schedule("report", cron="*/10 * * * *", catch_up="skip")
    scheduler = Scheduler(app)
    scheduler.fire_due()
    clock.set(at(9, 10, 40))
    scheduler.fire_due()
    assert ticks_of(app) == [at(9, 10)]


def test_every_keeps_its_grid_across_a_restart(app: App, clock: FakeClock) -> None:
    app.schedule("report", every=timedelta(minutes=15), catch_up="all")
    Scheduler(app).fire_due()
    clock.set(at(9, 15, 7))
    Scheduler(app).fire_due()
    clock.set(at(9, 52, 40))  # a restart, with a new scheduler, at an odd time
    Scheduler(app).fire_due()
    assert ticks_of(app) == [at(9, 15), at(9, 30), at(9, 45)]


def test_a_paused_schedule_does_not_fire_and_resume_skips_the_pause(
    app: App, clock: FakeClock
) -> None:
    app.schedule("report", every=60)
    scheduler = Scheduler(app)
    scheduler.fire_due()
    app.backend.pause_schedule("report", "default")
    clock.advance(600)
    assert scheduler.fire_due().fired == {}
    app.backend.resume_schedule("report", "default")
    assert scheduler.fire_due().fired == {}  # the ticks of the pause are passed over
    clock.advance(60)
    assert list(scheduler.fire_due().fired) == ["report"]
    assert len(ticks_of(app)) == 1


def test_a_schedule_removed_from_code_stops_and_is_reported(
    app: App, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    app.schedule("report", every=60, name="old")
    Scheduler(app).fire_due()
    del app.schedules["old"]
    clock.advance(600)
    with caplog.at_level(logging.WARNING, logger="stagecrew.scheduler"):
        report = Scheduler(app).fire_due()
    assert report.orphaned == ["old"] and report.fired == {}
    assert "no longer in the app's code" in caplog.text
    assert ticks_of(app) == []


def test_next_fire_is_the_earliest_due_tick(app: App, clock: FakeClock) -> None:
    app.schedule("report", cron="0 * * * *", name="hourly")
    app.schedule("report", cron="*/7 * * * *", name="seventh")
    report = Scheduler(app).fire_due()
    assert report.next_fire == at(9, 7).timestamp()


def simulate_day(app: App, clock: FakeClock, schedulers: int, seed: int) -> Counter[datetime]:
    """Several schedulers take overlapping passes at random times for a day: each of a
    random group reads the store, then they send their requests in a random order, so
    that several request the same tick from the same state.

    Besides one job per tick, no two passes may both have fired a tick: the idempotency
    key would hide that as one job, so the ids each pass reports are counted too.
    """
    rng = random.Random(seed)
    fleet = [Scheduler(app) for _ in range(schedulers)]
    end = clock.now() + 86_400
    fired: Counter[int] = Counter()
    while clock.now() < end:
        clock.advance(rng.uniform(0.5, 90.0))
        group = rng.sample(fleet, k=rng.randint(1, schedulers))
        pending = []
        for scheduler in group:
            pending.append((scheduler, scheduler.plan()))
            if rng.random() < 0.3:
                clock.advance(rng.uniform(0.0, 30.0))
        rng.shuffle(pending)
        for scheduler, planned in pending:
            for ids in scheduler.send(planned).fired.values():
                fired.update(ids)
    assert fired and max(fired.values()) == 1, "a tick was fired by two passes"
    return Counter(ticks_of(app))


def test_several_schedulers_over_a_day_make_one_job_per_tick(app: App, clock: FakeClock) -> None:
    app.schedule("report", cron="*/7 * * * *", catch_up="all", name="seventh")
    counts = simulate_day(app, clock, schedulers=4, seed=7)
    assert max(counts.values()) == 1
    timing = app.schedules["seventh"].timing
    first, last = min(counts).timestamp(), max(counts).timestamp()
    expected = [first, *timing.due(first, last, 10_000)]
    assert sorted(t.timestamp() for t in counts) == expected  # catch_up="all": none lost


def test_a_worker_runs_the_scheduler_and_stops_with_it(app: App, clock: FakeClock) -> None:
    app.schedule("report", every=1, name="each-second")

    async def scenario() -> list[int]:
        worker = Worker(app, concurrency=1, poll_interval=0.05)
        running = asyncio.create_task(worker.run(install_signal_handlers=False))
        deadline = time.monotonic() + 20
        while not app.backend.list_schedules() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # the first pass records its start: no job
        clock.advance(1.0)
        while not app.jobs.list(state=JobState.SUCCEEDED) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        worker.request_stop()
        await asyncio.wait_for(running, 20)
        return [job.id for job in app.jobs.list(state=JobState.SUCCEEDED)]

    assert len(asyncio.run(scenario())) == 1


def test_a_worker_told_not_to_runs_no_scheduler(app: App) -> None:
    app.schedule("report", every=1)

    async def scenario() -> None:
        worker = Worker(app, concurrency=1, run_schedules=False)
        running = asyncio.create_task(worker.run(install_signal_handlers=False))
        await asyncio.sleep(0.2)
        worker.request_stop()
        await asyncio.wait_for(running, 20)

    asyncio.run(scenario())
    assert app.backend.list_schedules() == []
