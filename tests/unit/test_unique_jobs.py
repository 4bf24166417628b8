"""Unique jobs and results on the producer side: keys from arguments, options, the window."""

from __future__ import annotations

from datetime import timedelta

import pytest

from stagecrew import App, ConfigurationError, FakeClock, JobState, Unique
from stagecrew.errors import JobCancelledError, JobFailedError, JobNotFoundError
from stagecrew.testing import TestKit


@pytest.fixture
def app() -> App:
    return App("memory://", clock=FakeClock())


def test_a_template_key_over_the_arguments_by_name_makes_one_job_per_key(app: App) -> None:
    @app.task(unique=dict(key="sync-{customer_id}"))
    def sync(customer_id: int, full: bool = False) -> None: ...

    first = sync.enqueue(7)
    again = sync.enqueue(customer_id=7, full=True)
    other = sync.enqueue(8)
    assert (first.created, again.created, other.created) == (True, False, True)
    assert again.id == first.id
    job = app.jobs.get(first.id)
    assert job.unique_key == "sync-7"
    assert job.unique_states == {JobState.SCHEDULED, JobState.AVAILABLE, JobState.RUNNING}


def test_a_key_function_gets_the_arguments_by_name_and_none_means_not_unique(app: App) -> None:
    @app.task(
        unique=Unique(key=lambda customer_id, **_: None if customer_id < 0 else f"c{customer_id}")
    )
    def sync(customer_id: int) -> None: ...

    handles = sync.enqueue_many([(1,), (1,), (-1,), (-1,)])
    assert [h.created for h in handles] == [True, False, True, True]
    assert app.jobs.get(handles[2].id).unique_key is None


def test_options_unique_key_overrides_the_computed_one(app: App) -> None:
    @app.task(unique=dict(key="k-{n}"))
    def work(n: int) -> None: ...

    @app.task
    def plain(n: int) -> None: ...

    a = work.options(unique_key="shared").enqueue(1)
    b = work.options(unique_key="shared").enqueue(2)
    c = plain.options(unique_key="shared").enqueue(3)
    assert (a.created, b.created, c.created) == (True, False, False)
    assert b.id == c.id == a.id


def test_re_enqueue_after_the_job_succeeded_makes_a_new_job(app: App) -> None:
    @app.task(unique=dict(key="once-{n}"))
    def work(n: int) -> int:
        return n * 2

    with TestKit(app) as kit:
        first = work.enqueue(3)
        kit.run_until_idle()
        assert first.result(timeout=5) == 6
        again = work.enqueue(3)
        assert again.created is True
        assert again.id != first.id


@pytest.mark.parametrize(
    "unique",
    [
        pytest.param(dict(key="k", states=("available", "running")), id="without-scheduled"),
        pytest.param(dict(key="k", states=("available", "bogus")), id="unknown-state"),
        pytest.param(dict(states=("available",)), id="no-key"),
        pytest.param(dict(key="k", when="now"), id="unknown-field"),
        pytest.param(dict(key=""), id="empty-key"),
        pytest.param("k", id="not-a-dict"),
    ],
)
def test_a_unique_setting_that_cannot_work_is_refused_at_declaration(
    app: App, unique: object
) -> None:
    with pytest.raises(ConfigurationError):

        @app.task(unique=unique)  # type: ignore[arg-type]
        def work() -> None: ...


def test_a_computed_key_that_is_not_a_usable_key_refuses_the_enqueue(app: App) -> None:
    @app.task(unique=dict(key=lambda n: n))
    def work(n: object) -> None: ...

    with pytest.raises(ConfigurationError, match="unique key"):
        work.enqueue(5)
    with pytest.raises(ConfigurationError, match="unique key"):
        work.enqueue("x" * 300)
    assert app.jobs.list() == []


def test_the_idempotency_window_is_an_app_setting(app: App) -> None:
    short = App("memory://", clock=FakeClock(), idempotency_window=timedelta(minutes=5))
    assert short.idempotency_window == 300.0
    assert App("memory://", idempotency_window=None).idempotency_window is None
    assert app.idempotency_window == 86_400.0
    with pytest.raises(ConfigurationError):
        App("memory://", idempotency_window=-1)


def test_an_idempotency_key_makes_a_new_job_after_the_apps_window() -> None:
    clock = FakeClock()
    app = App("memory://", clock=clock, idempotency_window=60)

    @app.task
    def work() -> None: ...

    with TestKit(app, clock=clock) as kit:
        first = work.options(idempotency_key="k").enqueue()
        kit.run_until_idle()
        clock.advance(30)
        assert work.options(idempotency_key="k").enqueue().id == first.id
        clock.advance(31)
        again = work.options(idempotency_key="k").enqueue()
        assert again.created is True
        assert again.id != first.id


def test_results_are_decoded_and_failures_carry_the_last_error(app: App) -> None:
    @app.task
    def ok() -> dict[str, int]:
        return {"n": 1}

    @app.task(max_attempts=1)
    def fails() -> None:
        raise ValueError("broken")

    @app.task
    def waits() -> None: ...

    with TestKit(app) as kit:
        done, dead = ok.enqueue(), fails.enqueue()
        cancelled = waits.options(delay=60).enqueue()
        cancelled.cancel()
        kit.run_until_idle()
        job = app.jobs.get(done.id)
        assert (job.result, job.result_json, job.result_value) == ({"n": 1}, '{"n":1}', {"n": 1})
        assert done.result(timeout=5) == {"n": 1}
        with pytest.raises(JobFailedError) as failed:
            dead.result(timeout=5)
        assert failed.value.job_id == dead.id
        assert failed.value.error is not None
        assert (failed.value.error.type, failed.value.error.message) == ("ValueError", "broken")
        with pytest.raises(JobCancelledError):
            cancelled.result(timeout=5)
        again = app.jobs.handle(done.id)
        assert (again.id, again.created, again.result(timeout=0)) == (done.id, False, {"n": 1})
        with pytest.raises(TimeoutError):
            waits.enqueue().result(timeout=0)
        with pytest.raises(JobNotFoundError):
            app.jobs.handle(10_000).result(timeout=1)
        with pytest.raises(TypeError):
            app.jobs.handle("1")  # type: ignore[arg-type]
