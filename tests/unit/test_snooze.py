"""Snooze: a task puts its job off for later without spending an attempt, up to max_snoozes."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stagecrew import App, ErrorKind, InvalidTimeError, JobState, Retry, Snooze, transitions
from stagecrew.backends.base import Ack, AckKind
from stagecrew.errors import ConfigurationError
from stagecrew.job import JobRef
from stagecrew.task import DEFAULT_MAX_SNOOZES
from stagecrew.testing.kit import TestKit
from stagecrew.worker.executor import SNOOZED_TOO_OFTEN

REF = JobRef(1, 1)


@pytest.fixture
def app() -> App:
    return App("memory://")


@pytest.fixture
def kit(app: App) -> TestKit:
    with TestKit(app) as kit:
        yield kit


def test_a_snoozing_task_runs_again_later_without_spending_an_attempt(
    app: App, kit: TestKit
) -> None:
    runs: list[float] = []

    @app.task(max_attempts=1)
    def wait_for_upload() -> str:
        runs.append(kit.clock.now())
        if len(runs) <= 3:
            raise Snooze(30)
        return "processed"

    handle = wait_for_upload.enqueue()
    kit.run_until_idle()
    snoozed = handle.get()
    assert (snoozed.state, snoozed.attempt, snoozed.snoozes) == (JobState.SCHEDULED, 0, 1)
    assert snoozed.run_at == kit.clock.now() + 30
    assert snoozed.errors == ()
    kit.run_until_idle(advance_time=True)
    done = handle.get()
    assert (done.state, done.attempt, done.snoozes) == (JobState.SUCCEEDED, 1, 3)
    assert done.result == "processed"
    assert [b - a for a, b in itertools.pairwise(runs)] == [30, 30, 30]


def test_a_job_that_snoozes_past_max_snoozes_is_dead_lettered_with_a_clear_error(
    app: App, kit: TestKit
) -> None:
    runs = []

    @app.task(max_snoozes=2)
    def never_ready() -> None:
        runs.append(1)
        raise Snooze(5, reason="the file is not uploaded yet")

    handle = never_ready.enqueue()
    kit.run_until_idle(advance_time=True)
    dead = handle.get()
    assert len(runs) == 3
    assert (dead.state, dead.attempt, dead.snoozes) == (JobState.DEAD, 1, 2)
    [error] = dead.errors
    assert (error.kind, error.type) == (ErrorKind.ERROR, SNOOZED_TOO_OFTEN)
    assert "max_snoozes=2" in error.message
    assert "the file is not uploaded yet" in error.message


def test_max_snoozes_zero_dead_letters_the_first_snooze(app: App, kit: TestKit) -> None:
    @app.task(max_snoozes=0)
    def impatient() -> None:
        raise Snooze(1)

    handle = impatient.enqueue()
    kit.run_until_idle(advance_time=True)
    assert (handle.get().state, handle.get().snoozes) == (JobState.DEAD, 0)


def test_retry_spends_an_attempt_each_time_and_dead_letters_with_errors_typed_retry(
    app: App, kit: TestKit
) -> None:
    @app.task(max_attempts=2)
    def poll() -> None:
        raise Retry(in_=30)

    handle = poll.enqueue()
    kit.run_until_idle(advance_time=True)
    dead = handle.get()
    assert (dead.state, dead.attempt, dead.snoozes) == (JobState.DEAD, 2, 0)
    assert [e.type for e in dead.errors] == ["Retry", "Retry"]


@pytest.mark.parametrize("seconds", [math.nan, math.inf, -1.0, -math.inf])
def test_snooze_refuses_a_time_that_is_not_finite_seconds_at_construction(seconds: float) -> None:
    with pytest.raises(InvalidTimeError, match=r"Snooze\(seconds\)"):
        Snooze(seconds)


def test_a_task_that_snoozes_with_a_bad_time_fails_its_attempt_and_keeps_its_job(
    app: App, kit: TestKit
) -> None:
    @app.task(max_attempts=3)
    def confused() -> None:
        raise Snooze(-5)

    handle = confused.enqueue()
    kit.run_until_idle()
    job = handle.get()
    assert (job.state, job.attempt, job.snoozes) == (JobState.SCHEDULED, 1, 0)
    [error] = job.errors
    assert error.type == "InvalidTimeError"
    assert "Snooze(seconds) must be a finite number of seconds" in error.message


@pytest.mark.parametrize("bad", [-1, True, 1.5, "3", None])
def test_max_snoozes_must_be_a_whole_number_not_below_zero(app: App, bad: object) -> None:
    with pytest.raises(ConfigurationError, match="max_snoozes"):

        @app.task(max_snoozes=bad)  # type: ignore[arg-type]
        def task() -> None: ...


def test_a_task_gets_the_documented_default_max_snoozes(app: App) -> None:
    @app.task
    def plain() -> None: ...

    assert plain.max_snoozes == DEFAULT_MAX_SNOOZES == 100


@given(snoozes=st.integers(0, 500), max_snoozes=st.integers(0, 500))
def test_after_snooze_schedules_while_snoozes_are_below_the_bound(
    snoozes: int, max_snoozes: int
) -> None:
    expected = JobState.SCHEDULED if snoozes < max_snoozes else JobState.DEAD
    assert transitions.after_snooze(snoozes, max_snoozes) is expected


def test_a_snooze_ack_schedules_the_job_and_gives_its_attempt_back() -> None:
    ack = Ack.snooze(REF, 12.5)
    assert ack == Ack(REF, AckKind.SNOOZE, delay=12.5)
    assert (ack.target, ack.run_in, ack.gives_attempt_back) == (JobState.SCHEDULED, 12.5, True)
    assert Ack(REF, AckKind.SNOOZE).run_in == 0.0
    assert not Ack.retry(REF, error=None, delay=1.0).gives_attempt_back  # type: ignore[arg-type]


@pytest.mark.parametrize("delay", [math.nan, math.inf, -0.5, "5", True])
def test_a_snooze_ack_refuses_a_delay_that_is_not_finite_seconds(delay: object) -> None:
    with pytest.raises(ValueError, match="delay"):
        Ack.snooze(REF, delay)  # type: ignore[arg-type]


def test_a_snooze_ack_carries_no_result() -> None:
    with pytest.raises(ValueError, match="result belongs to a complete ack"):
        Ack(REF, AckKind.SNOOZE, result="1", delay=1.0)
