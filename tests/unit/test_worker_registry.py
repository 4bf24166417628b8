"""The worker registry from the outside: a worker's presence (its beats, its last beat, its
title), the producer's warning about a queue no live worker serves, and how `stagecrew stats`
marks such a queue."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
import setproctitle
from click.testing import CliRunner

from stagecrew import App
from stagecrew.backends.worker_registry import WorkerBeat, WorkerInfo, WorkerStatus
from stagecrew.cli.main import main
from stagecrew.clock import FakeClock
from stagecrew.errors import BackendError
from stagecrew.observability.presence import BEATS_PER_TTL, Presence, process_title
from stagecrew.worker.runner import Worker


def serving(app: App, *queues: str, worker_id: str = "w1") -> None:
    info = WorkerInfo("host", 1, queues, 4, 0, "1.0")
    app.backend.record_worker(WorkerBeat(worker_id, info, 60.0))


@pytest.fixture
def sqlite_app(tmp_path: Path) -> App:
    app = App(f"sqlite:///{tmp_path / 'jobs.db'}")

    @app.task(queue="emial")
    def typo() -> None: ...

    @app.task(queue="email")
    def send() -> None: ...

    return app


def unserved_warnings(caplog: pytest.LogCaptureFixture, app: App | None = None) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "stagecrew.producer" and r.levelno == logging.WARNING
    ]


def test_enqueueing_to_a_queue_no_live_worker_serves_warns_once_per_queue(
    sqlite_app: App, caplog: pytest.LogCaptureFixture
) -> None:
    serving(sqlite_app, "email", "default")
    caplog.set_level(logging.WARNING, "stagecrew.producer")
    sqlite_app.enqueue("send")
    assert unserved_warnings(caplog, sqlite_app) == []
    sqlite_app.enqueue("typo")
    sqlite_app.enqueue("typo")
    [warning] = unserved_warnings(caplog, sqlite_app)
    assert "'emial'" in warning and "live workers serve: default, email" in warning


def test_the_async_enqueue_warns_alike(sqlite_app: App, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "stagecrew.producer")

    async def produce() -> None:
        await sqlite_app.enqueue_async("typo")
        await sqlite_app.enqueue_async("typo")
        await sqlite_app._unserved.settled()

    asyncio.run(produce())
    [warning] = unserved_warnings(caplog, sqlite_app)
    assert "'emial'" in warning and "none is alive" in warning


def test_a_worker_that_stopped_serves_no_queue(
    sqlite_app: App, caplog: pytest.LogCaptureFixture
) -> None:
    info = WorkerInfo("host", 1, ("email",), 4, 0, "1.0")
    sqlite_app.backend.record_worker(WorkerBeat("w1", info, 60.0, stopped=True))
    caplog.set_level(logging.WARNING, "stagecrew.producer")
    sqlite_app.enqueue("send")
    assert len(unserved_warnings(caplog, sqlite_app)) == 1


def test_a_registry_that_cannot_be_read_does_not_fail_the_enqueue(
    sqlite_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> None:
        raise BackendError("the store went away")

    monkeypatch.setattr(sqlite_app.backend, "_list_workers", broken)
    handle = sqlite_app.enqueue("typo")
    assert sqlite_app.jobs.get(handle.id).task == "typo"


def test_a_store_of_this_process_alone_is_not_checked(caplog: pytest.LogCaptureFixture) -> None:
    app = App("memory://")

    @app.task(queue="nowhere")
    def lonely() -> None: ...

    caplog.set_level(logging.WARNING, "stagecrew.producer")
    lonely.enqueue()
    assert unserved_warnings(caplog, app) == []


def test_stats_marks_a_queue_with_waiting_jobs_that_no_live_worker_serves(
    sqlite_app: App,
) -> None:
    serving(sqlite_app, "email")
    sqlite_app.enqueue("send")
    sqlite_app.enqueue("typo")
    url = sqlite_app.url
    sqlite_app.close()
    result = CliRunner().invoke(main, ["stats", "--url", url], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "emial (no live worker)" in result.stdout
    assert "email (no live worker)" not in result.stdout
    assert "no live worker serves: emial" in result.stdout
    data = CliRunner().invoke(main, ["stats", "--url", url, "--json"]).stdout
    assert {q["queue"]: q["served"] for q in json.loads(data)} == {"email": True, "emial": False}


def test_a_presence_beats_while_it_runs_and_says_when_it_stops() -> None:
    clock = FakeClock()
    app = App("memory://", clock=clock)
    busy = [2]
    presence = Presence(
        lambda: app.backend,
        "w1",
        name=None,
        queues=["a", "b"],
        concurrency=5,
        busy=lambda: busy[0],
        interval=0.02,
    )
    title = setproctitle.getproctitle()

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(presence.run(stop))
        await asyncio.sleep(0)
        [worker] = app.backend.list_workers().workers
        assert (worker.info.queues, worker.info.busy, worker.info.concurrency) == (
            ("a", "b"),
            2,
            5,
        )
        assert worker.alive_until - worker.seen_at == pytest.approx(BEATS_PER_TTL * 0.02)
        busy[0] = 4
        clock.advance(1.0)
        deadline = asyncio.get_running_loop().time() + 5
        while app.backend.list_workers().workers[0].info.busy != 4:
            assert asyncio.get_running_loop().time() < deadline, "no second beat"
            await asyncio.sleep(0.01)
        stop.set()
        await task
        await presence.stopped()

    asyncio.run(scenario())
    registry = app.backend.list_workers()
    [worker] = registry.workers
    assert worker.status(registry.now) is WorkerStatus.STOPPED
    assert worker.info.busy == 0
    assert setproctitle.getproctitle() == title  # no name: the title is left alone


def test_a_named_presence_titles_its_process() -> None:
    app = App("memory://")
    presence = Presence(
        lambda: app.backend,
        "w1",
        name="worker-3",
        queues=["email"],
        concurrency=10,
        busy=lambda: 7,
        interval=1.0,
    )
    before = setproctitle.getproctitle()
    try:
        presence.retitle()
        assert setproctitle.getproctitle() == "stagecrew worker-3 [email] busy 7/10"
        assert process_title("worker-3", ["email"], 7, 10) == setproctitle.getproctitle()
    finally:
        setproctitle.setproctitle(before)


def test_a_worker_records_itself_while_it_runs_and_stops_as_stopped() -> None:
    app = App("memory://")

    @app.task
    def noop() -> None: ...

    worker = Worker(app, concurrency=2, heartbeat_interval=0.02)

    async def scenario() -> None:
        task = asyncio.create_task(worker.run(install_signal_handlers=False))
        deadline = asyncio.get_running_loop().time() + 10
        while not app.backend.list_workers().alive():
            assert asyncio.get_running_loop().time() < deadline, "the worker never beat"
            await asyncio.sleep(0.01)
        worker.request_stop()
        assert await task == 0

    asyncio.run(scenario())
    registry = app.backend.list_workers()
    [record] = registry.workers
    assert record.id == worker.id
    assert record.status(registry.now) is WorkerStatus.STOPPED


@pytest.mark.parametrize(
    "url", ["postgresql://postgres@127.0.0.1:1/test", "redis://127.0.0.1:1/0"], ids=str
)
def test_health_says_unhealthy_when_the_store_cannot_be_reached(url: str) -> None:
    result = CliRunner().invoke(main, ["health", "--url", url, "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert not report["healthy"] and report["workers_alive"] == 0
    [problem] = report["problems"]
    assert problem.startswith("the store cannot be reached")


def test_top_sparklines_and_rates_come_from_the_per_minute_counts() -> None:
    from stagecrew.backends.job_counts import CountBucket, CountHistory, CountKey
    from stagecrew.cli.top import SPARK_MINUTES, out_rate, per_minute, sparkline

    assert sparkline([0, 0]) == "  "
    assert sparkline([0, 4, 8]) == " ▄█"
    now = 6000.0 + 15.0  # a quarter into the minute that starts at 6000
    ok, dead = CountKey("q", "t", "succeeded"), CountKey("q", "t", "dead")
    history = CountHistory(
        now,
        (
            CountBucket(5940.0, ok, 40),
            CountBucket(5940.0, dead, 20),
            CountBucket(6000.0, ok, 6),
            CountBucket(6000.0, CountKey("other", "t", "succeeded"), 100),
        ),
    )
    counts = per_minute(history, "q", frozenset({"succeeded", "dead"}))
    assert len(counts) == SPARK_MINUTES and counts[-2:] == [60, 6]
    assert out_rate(history, "q") == pytest.approx((6 + 60 * 0.75) / 60)


def test_an_async_enqueue_does_not_wait_for_the_registry(
    sqlite_app: App, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "stagecrew.producer")

    async def scenario() -> None:
        release = asyncio.Event()
        real = sqlite_app.backend.list_workers_async

        async def slow() -> object:
            await release.wait()
            return await real()

        monkeypatch.setattr(sqlite_app.backend, "list_workers_async", slow)
        await sqlite_app.enqueue_async("typo")  # returns while the registry read waits
        assert unserved_warnings(caplog) == []
        release.set()
        await sqlite_app._unserved.settled()
        assert len(unserved_warnings(caplog)) == 1

    asyncio.run(scenario())
