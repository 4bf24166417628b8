"""Every time value that enters stagecrew is a finite number in range, checked at the edge.

NaN compares false with everything, so an unchecked NaN delay made a job that PostgreSQL never
found due, a Redis enqueue that failed half written, and a SQLite retry that ran at once. These
tests give NaN, infinities and out-of-range values to every public way in, and expect a clear
`InvalidTimeError` (a `ConfigurationError` and a `ValueError`) with nothing written or started.
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from stagecrew import (
    App,
    Backoff,
    ConfigurationError,
    FakeClock,
    InvalidTimeError,
    JobState,
    Retention,
    Retry,
)
from stagecrew.backends import backend_from_url
from stagecrew.backends.base import JobFilter
from stagecrew.cli.main import main
from stagecrew.testing import TestKit
from stagecrew.worker.runner import Worker

NOT_FINITE = [math.nan, math.inf, -math.inf]
NOT_FINITE_IDS = ["nan", "inf", "minus-inf"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(clock: FakeClock) -> App:
    app = App("memory://", clock=clock)

    @app.task
    def resize(path: str) -> str:
        return path

    return app


def test_invalid_time_error_is_a_configuration_error_and_a_value_error() -> None:
    assert issubclass(InvalidTimeError, ConfigurationError)
    assert issubclass(InvalidTimeError, ValueError)


@pytest.mark.parametrize("delay", [*NOT_FINITE, -1.0, 1e12], ids=[*NOT_FINITE_IDS, "neg", "huge"])
def test_enqueue_refuses_a_delay_that_is_not_a_finite_number_of_seconds(
    app: App, delay: float
) -> None:
    with pytest.raises(InvalidTimeError, match="delay must be a finite number of seconds"):
        app.tasks["resize"].options(delay=delay).enqueue("a.png")
    with pytest.raises(InvalidTimeError, match="delay"):
        app.tasks["resize"].options(delay=timedelta(days=-1)).enqueue("a.png")
    assert app.jobs.list() == []


@pytest.mark.parametrize(
    "run_at", [*NOT_FINITE, -1.0, 1e20], ids=[*NOT_FINITE_IDS, "before-1970", "after-9999"]
)
def test_enqueue_refuses_a_run_at_that_is_not_a_finite_time(app: App, run_at: float) -> None:
    with pytest.raises(InvalidTimeError, match="run_at must be a finite time"):
        app.tasks["resize"].options(run_at=run_at).enqueue("a.png")
    assert app.jobs.list() == []


def test_enqueue_accepts_a_run_at_datetime_up_to_the_last_second_a_datetime_shows(
    app: App,
) -> None:
    latest = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    job = app.tasks["resize"].options(run_at=latest).enqueue("a.png").get()
    assert job.state is JobState.SCHEDULED
    assert job.run_at == latest.timestamp()


@pytest.mark.parametrize("option", ["delay", "run_at"])
@pytest.mark.parametrize("value", NOT_FINITE, ids=NOT_FINITE_IDS)
def test_enqueue_by_task_name_refuses_non_finite_times(app: App, option: str, value: float) -> None:
    with pytest.raises(InvalidTimeError, match=option):
        app.enqueue("resize", ["a.png"], **{option: value})
    assert app.jobs.list() == []


@pytest.mark.parametrize("value", NOT_FINITE, ids=NOT_FINITE_IDS)
def test_enqueue_many_and_async_enqueue_refuse_non_finite_times(app: App, value: float) -> None:
    bound = app.tasks["resize"].options(delay=0)
    with pytest.raises(InvalidTimeError):
        bound.options(delay=value).enqueue_many(["a.png", "b.png"])
    with pytest.raises(InvalidTimeError):
        asyncio.run(app.tasks["resize"].options(run_at=value).enqueue_async("a.png"))
    assert app.jobs.list() == []


@pytest.mark.parametrize("in_", [*NOT_FINITE, -5.0], ids=[*NOT_FINITE_IDS, "negative"])
def test_retry_refuses_a_delay_that_is_not_a_finite_number_of_seconds(in_: float) -> None:
    with pytest.raises(InvalidTimeError, match=r"Retry\(in_=...\)"):
        Retry(in_=in_)
    assert Retry(in_=0).in_ == 0.0
    assert Retry().in_ is None


def test_a_task_raising_retry_with_nan_fails_its_attempt_and_is_not_retried_at_once(
    app: App,
) -> None:
    @app.task(max_attempts=3, backoff={"base": 60.0, "factor": 1.0, "cap": 60.0})
    def flaky() -> None:
        raise Retry(in_=math.nan)

    with TestKit(app) as kit:
        handle = flaky.enqueue()
        kit.run_until_idle()
        job = handle.get()
        assert job.state is JobState.SCHEDULED  # the ordinary backoff, not "at once"
        assert job.attempt == 1
        assert job.errors[-1].type == "InvalidTimeError"
        assert job.run_at >= kit.clock.now()


@pytest.mark.parametrize("timeout", [*NOT_FINITE, 0.0, -1.0], ids=[*NOT_FINITE_IDS, "zero", "neg"])
def test_task_timeout_must_be_a_finite_positive_number_of_seconds(app: App, timeout: float) -> None:
    with pytest.raises(InvalidTimeError, match="timeout must be a finite number of seconds"):

        @app.task(timeout=timeout)
        def slow() -> None: ...

    with pytest.raises(InvalidTimeError, match="timeout"):

        @app.task(timeout=timedelta(seconds=timeout) if math.isfinite(timeout) else timeout)
        def slower() -> None: ...


@pytest.mark.parametrize("setting", ["base", "factor", "cap"])
@pytest.mark.parametrize("value", NOT_FINITE, ids=NOT_FINITE_IDS)
def test_backoff_settings_must_be_finite(app: App, setting: str, value: float) -> None:
    with pytest.raises(InvalidTimeError, match=f"backoff {setting}"):
        Backoff(**{setting: value})
    with pytest.raises(InvalidTimeError, match=f"backoff {setting}"):

        @app.task(backoff={setting: value})
        def flaky() -> None: ...


@pytest.mark.parametrize(
    "option",
    [
        "lease_seconds",
        "grace",
        "poll_interval",
        "heartbeat_interval",
        "rescue_interval",
        "prune_interval",
        "stuck_grace",
    ],
)
@pytest.mark.parametrize("value", [*NOT_FINITE, -1.0], ids=[*NOT_FINITE_IDS, "negative"])
def test_worker_time_options_must_be_finite(app: App, option: str, value: float) -> None:
    with pytest.raises(InvalidTimeError, match=option):
        Worker(app, **{option: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("option", ["--lease-seconds", "--grace", "--poll-interval"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_worker_command_refuses_non_finite_seconds(option: str, value: str) -> None:
    result = CliRunner().invoke(main, ["worker", "some.module:app", option, value])
    assert result.exit_code == 2, result.output
    assert "is not a finite number of seconds" in result.output


@pytest.mark.parametrize("state", ["succeeded", "cancelled", "dead"])
@pytest.mark.parametrize("value", [*NOT_FINITE, -1.0], ids=[*NOT_FINITE_IDS, "negative"])
def test_retention_horizons_must_be_finite(state: str, value: float) -> None:
    with pytest.raises(InvalidTimeError, match=f"Retention\\({state}="):
        Retention(**{state: value})
    assert Retention(**{state: None}).horizon(JobState(state)) is None


@pytest.mark.parametrize("value", NOT_FINITE, ids=NOT_FINITE_IDS)
def test_purge_and_filters_refuse_a_non_finite_finished_before(app: App, value: float) -> None:
    """A NaN bound matched every finished job on PostgreSQL and Redis: purge deleted them all."""
    handle = app.tasks["resize"].enqueue("a.png")
    app.jobs.cancel(handle.id)
    with pytest.raises(InvalidTimeError, match="older_than"):
        app.jobs.purge(state=JobState.CANCELLED, older_than=value)
    with pytest.raises(InvalidTimeError, match="finished_before"):
        JobFilter(finished_before=value)
    assert handle.get().state is JobState.CANCELLED


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///jobs.db?poll_ms=nan",
        "sqlite:///jobs.db?poll_ms=inf",
        "postgresql://u@localhost/db?pool_timeout=nan",
        "postgresql://u@localhost/db?pool_timeout=inf",
    ],
)
def test_store_url_time_options_must_be_finite(url: str) -> None:
    with pytest.raises(ConfigurationError, match="finite"):
        backend_from_url(url)


@pytest.mark.parametrize("value", [math.nan, math.inf], ids=["nan", "inf"])
def test_fake_clock_moves_only_by_finite_amounts(value: float) -> None:
    clock = FakeClock()
    before = clock.now()
    with pytest.raises(InvalidTimeError):
        clock.advance(value)
    with pytest.raises(InvalidTimeError):
        clock.set(value)
    assert clock.now() == before
