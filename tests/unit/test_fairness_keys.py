"""Fairness keys on the producer side, the fair order's rule, and the aging option."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from stagecrew import App, ConfigurationError, FakeClock, PriorityAging
from stagecrew.backends.aging import aged_priority
from stagecrew.backends.fairness import FAIR_STEP, fair_order
from stagecrew.job import NewJob


@pytest.fixture
def app() -> App:
    return App("memory://", clock=FakeClock())


def _keys(app: App) -> list[str | None]:
    return [job.fairness_key for job in sorted(app.jobs.list(), key=lambda j: j.id)]


def test_a_task_default_key_is_computed_from_each_jobs_arguments(app: App) -> None:
    @app.task(fairness_key=lambda customer_id, **_: f"customer-{customer_id}")
    def report(customer_id: int, month: str) -> None: ...

    report.enqueue(42, month="2026-11")
    report.enqueue_many([(7, "2026-10"), {"customer_id": 8, "month": "2026-09"}])
    assert _keys(app) == ["customer-42", "customer-7", "customer-8"]


def test_options_override_the_task_default_key(app: App) -> None:
    @app.task(fairness_key="everyone")
    def work(i: int) -> None: ...

    work.enqueue(1)
    work.options(fairness_key="tenant-9").enqueue(2)
    assert _keys(app) == ["everyone", "tenant-9"]


def test_a_key_function_may_give_no_key(app: App) -> None:
    @app.task(fairness_key=lambda i: None if i < 0 else f"t{i}")
    def work(i: int) -> None: ...

    work.enqueue_many([(-1,), (3,)])
    assert _keys(app) == [None, "t3"]


@pytest.mark.parametrize("bad", [7, "", "x" * 201, "bad \udcff"])
def test_a_bad_key_in_options_is_refused_at_once(app: App, bad: Any) -> None:
    @app.task
    def work(i: int) -> None: ...

    with pytest.raises(ValueError, match="fairness_key"):
        work.options(fairness_key=bad)
    assert app.jobs.list() == []


def test_a_key_function_that_gives_a_bad_key_enqueues_nothing(app: App) -> None:
    @app.task(fairness_key=lambda i: i)
    def work(i: int) -> None: ...

    with pytest.raises(ValueError, match="fairness key"):
        work.enqueue_many([(1,), (2,)])
    assert app.jobs.list() == []


def test_a_key_function_that_fails_says_so_and_enqueues_nothing(app: App) -> None:
    @app.task(fairness_key=lambda i: {"a": "x"}[i])
    def work(i: str) -> None: ...

    with pytest.raises(ConfigurationError, match="fairness_key function failed"):
        work.enqueue_many([("a",), ("b",)])
    assert app.jobs.list() == []


def test_a_bad_task_default_key_is_refused_when_the_task_is_declared(app: App) -> None:
    with pytest.raises(ValueError, match="fairness_key"):

        @app.task(fairness_key="")
        def work() -> None: ...


def _new(key: str | None, queue: str = "q", priority: int = 0, delay: float = 0.0) -> NewJob:
    return NewJob("t", "{}", queue, priority, None, delay, 3, None, key)


def test_a_batch_of_one_key_is_spaced_one_step_apart_from_the_head() -> None:
    fair = fair_order([_new("a"), _new("a"), _new("a")], 100.0, {("q", 0): 50.0}, {})
    assert fair.order_ats == [pytest.approx(50.0 + n * FAIR_STEP, abs=1e-9) for n in (1, 2, 3)]
    assert fair.lasts == {("q", "a"): fair.order_ats[2]}


def test_a_key_continues_after_its_last_job_when_that_is_past_the_head() -> None:
    fair = fair_order([_new("a")], 100.0, {("q", 0): 50.0}, {("q", "a"): 60.0})
    assert fair.order_ats == [pytest.approx(60.0 + FAIR_STEP, abs=1e-9)]


def test_an_empty_queue_starts_a_key_at_now_and_keyless_or_delayed_jobs_get_none() -> None:
    fair = fair_order([_new("a"), _new(None), _new("b", delay=5.0)], 100.0, {}, {})
    assert fair.order_ats == [pytest.approx(100.0 + FAIR_STEP, abs=1e-9), None, None]


def test_two_keys_from_one_head_tie_step_for_step() -> None:
    fair = fair_order([_new("a"), _new("b"), _new("a"), _new("b")], 100.0, {("q", 0): 50.0}, {})
    a1, b1, a2, b2 = fair.order_ats
    assert (a1, a2) == (b1, b2)


def test_aging_gains_one_step_per_interval_down_to_the_floor() -> None:
    assert aged_priority(5, run_at=0.0, now=59.0, every=60.0, floor=0) == 5
    assert aged_priority(5, run_at=0.0, now=125.0, every=60.0, floor=0) == 3
    assert aged_priority(5, run_at=0.0, now=6000.0, every=60.0, floor=1) == 1
    assert aged_priority(-2, run_at=0.0, now=6000.0, every=60.0, floor=0) == -2


def test_priority_aging_is_off_by_default_and_can_be_turned_on() -> None:
    assert App("memory://").priority_aging is None
    aging = PriorityAging()
    assert aging == PriorityAging(every=300.0, floor=0)
    assert App("memory://", priority_aging=aging).priority_aging is aging
    aging = PriorityAging(every=timedelta(minutes=1), floor=-1)
    assert (aging.seconds, aging.floor, aging.pass_interval) == (60.0, -1, 6.0)


@pytest.mark.parametrize(
    "build",
    [
        lambda: PriorityAging(every=0),
        lambda: PriorityAging(every=float("nan")),
        lambda: PriorityAging(floor=1.5),  # type: ignore[arg-type]
        lambda: App("memory://", priority_aging=300),  # type: ignore[arg-type]
    ],
    ids=["zero", "nan", "float-floor", "not-an-aging"],
)
def test_bad_aging_settings_are_refused(build: Any) -> None:
    with pytest.raises((ValueError, ConfigurationError)):
        build()
