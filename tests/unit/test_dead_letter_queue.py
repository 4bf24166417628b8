"""The dead-letter queue keeps every failure until someone retries or purges it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stagecrew import App, ConfigurationError, Context, JobNotFoundError, JobState
from stagecrew.testing import TestKit

DAY = 86_400.0


@pytest.fixture
def app() -> App:
    return App("memory://")


@pytest.fixture
def kit(app: App) -> Iterator[TestKit]:
    with TestKit(app) as kit:
        yield kit


def test_dlq_retry_reruns_a_dead_job_with_a_fresh_attempt_count(app: App, kit: TestKit) -> None:
    healthy = {"value": False}

    @app.task(max_attempts=2)
    def fragile(ctx: Context) -> int:
        if not healthy["value"]:
            raise RuntimeError("dependency down")
        return ctx.attempt

    job = fragile.enqueue()
    kit.run_until_idle(advance_time=True)
    assert job.get().state is JobState.DEAD and job.get().attempt == 2

    healthy["value"] = True
    assert app.jobs.requeue([job.id]) == 1
    requeued = job.get()
    assert requeued.state is JobState.AVAILABLE and requeued.attempt == 0
    assert len(requeued.errors) == 2  # history is kept
    kit.run_until_idle()
    assert job.get().state is JobState.SUCCEEDED
    assert job.get().result == 1


def test_dlq_retry_all_can_be_narrowed_by_task(app: App, kit: TestKit) -> None:
    @app.task(max_attempts=1)
    def a() -> None:
        raise ValueError

    @app.task(max_attempts=1)
    def b() -> None:
        raise ValueError

    jobs_a = [a.enqueue() for _ in range(3)]
    job_b = b.enqueue()
    kit.run_until_idle()
    assert app.jobs.requeue(all_dead=True, task="a") == 3
    assert {j.state() for j in jobs_a} == {JobState.AVAILABLE}
    assert job_b.state() is JobState.DEAD
    with pytest.raises(ConfigurationError):
        app.jobs.requeue()


def test_dead_jobs_are_kept_by_pruning_and_removed_only_by_purge(app: App, kit: TestKit) -> None:
    @app.task(max_attempts=1)
    def fails() -> None:
        raise ValueError

    @app.task
    def works() -> None: ...

    dead = fails.enqueue()
    done = works.enqueue()
    kit.run_until_idle()
    kit.clock.advance(30 * DAY)
    assert app.backend.prune(app.retention) == 1
    with pytest.raises(JobNotFoundError):
        done.get()
    assert dead.get().state is JobState.DEAD

    assert app.jobs.purge(older_than=31 * DAY) == 0
    assert app.jobs.purge(older_than=7 * DAY) == 1
    with pytest.raises(JobNotFoundError):
        dead.get()


def test_purge_never_deletes_waiting_or_running_jobs(app: App, kit: TestKit) -> None:
    @app.task
    def later() -> None: ...

    job = later.options(delay=60).enqueue()
    assert app.jobs.purge(state="scheduled") == 0
    assert job.get().state is JobState.SCHEDULED
