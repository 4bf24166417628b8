"""Rate limits as the code declares them, the bucket algorithm, and a worker that enforces them
(memory engine, fake clock). The store's side (every engine) is the conformance suite's
`LimitStateConformance`; worker processes on real engines are
tests/integration/test_rate_limit_processes.py.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stagecrew import App, JobState, RateLimit, RateLimited
from stagecrew.backends.base import Retention
from stagecrew.backends.limit_states import LimitSwap
from stagecrew.errors import ConfigurationError
from stagecrew.limits.rate import EPSILON, Bucket, slow_down, take
from stagecrew.maintenance.pruner import prune_finished
from stagecrew.testing.kit import TestKit


@pytest.mark.parametrize(
    ("text", "per_second", "burst"),
    [
        ("10/s", 10.0, 10),
        ("100/m", 100 / 60, 1),
        ("5000/h", 5000 / 3600, 1),
        ("2/d", 2 / 86_400, 1),
        ("3/10s", 0.3, 1),
        (" 120 / m ", 2.0, 2),
        ("0.5/s", 0.5, 1),
    ],
)
def test_a_rate_is_a_count_per_period(text: str, per_second: float, burst: int) -> None:
    limit = RateLimit.coerce(text)
    assert limit is not None
    assert limit.per_second == pytest.approx(per_second)
    assert limit.burst == burst


@pytest.mark.parametrize(
    "bad",
    [
        "100",
        "100/x",
        "-1/s",
        "0/s",
        "1/0s",
        "abc/m",
        42,
        dict(burst=3),
        dict(rate="1/s", burst=0),
        dict(rate="1/s", burst=1.5),
        dict(rate="1/s", key=""),
        dict(rate="1/s", name="api"),
        dict(rate="1/s", key="{a}", name="a:b"),
        dict(rate="1/s", slowdown=0),
        dict(rate="1/s", slowdown=2),
        dict(rate="1/s", cooldown=math.nan),
        dict(rate="1/s", speed=3),
    ],
)
def test_a_rate_limit_that_cannot_work_is_refused_when_the_task_is_declared(bad: Any) -> None:
    app = App("memory://")
    with pytest.raises(ConfigurationError):

        @app.task(rate_limit=bad)
        def send() -> None: ...


def test_tasks_sharing_a_rate_name_must_give_it_one_rate() -> None:
    app = App("memory://")

    @app.task(rate_limit=dict(rate="5/s", key="{a}", name="api"))
    def one(a: str) -> None: ...

    with pytest.raises(ConfigurationError, match="share the rate_limit name"):

        @app.task(rate_limit=dict(rate="6/s", key="{a}", name="api"))
        def two(a: str) -> None: ...


def test_the_bucket_gives_its_burst_then_one_token_an_interval() -> None:
    limit = RateLimit.parse("2/s", burst=3)
    drawn = take(limit, Bucket(), 100.0, 5)
    assert drawn.admitted == 3
    assert drawn.run_at == (pytest.approx(100.5), pytest.approx(101.0))
    later = take(limit, drawn.bucket, 100.2, 1)
    assert later.admitted == 0
    assert later.run_at == (pytest.approx(101.5),)  # booked after the two before it
    assert take(limit, later.bucket, 101.0, 1).admitted == 1


@given(
    arrivals=st.lists(st.tuples(st.floats(0, 0.5), st.integers(1, 12)), min_size=1, max_size=40),
    per_second=st.sampled_from([0.5, 2.0, 7.0, 50.0, 400.0]),
    burst=st.integers(1, 60),
    wait=st.sampled_from([0.0, 0.05]),
    ahead=st.sampled_from([0.0, 0.1]),
)
def test_no_window_starts_more_than_the_burst_plus_the_rate(
    arrivals: list[tuple[float, int]], per_second: float, burst: int, wait: float, ahead: float
) -> None:
    """Batches of jobs arrive at random; each job that got a token starts at its token's
    time, each booked job draws again when it was booked for, as the worker does, and the
    tokens taken ahead are all spent as late as allowed. In no window of W seconds do more
    than burst + (W + ahead) * rate of them start."""
    limit = RateLimit(per_second, burst)
    bucket, now, starts, booked = Bucket(), 1000.0, [], []

    def draw(count: int) -> None:
        nonlocal bucket
        drawn = take(limit, bucket, now, count, wait, ahead)
        starts.extend(drawn.start_at)
        starts.extend([now + ahead] * drawn.ahead)
        booked.extend(drawn.run_at)
        bucket = drawn.bucket

    for gap, count in arrivals:
        now += gap
        draw(count)
    while booked:
        booked.sort()
        now = max(booked.pop(0), now)
        draw(1)
    starts.sort()
    for i, first in enumerate(starts):
        for j in range(i, len(starts)):
            window = starts[j] - first + ahead + 2 * EPSILON  # float slack
            assert j - i + 1 <= burst + window * per_second


def test_tokens_are_taken_ahead_only_from_a_bucket_far_from_empty() -> None:
    limit = RateLimit.parse("100/s", burst=100)
    first = take(limit, Bucket(), 10.0, 20, ahead=0.1)
    assert (first.admitted, first.ahead) == (20, 10)  # 0.1 s of tokens, 70 left
    nearly_empty = take(limit, Bucket(), 10.0, 60, ahead=0.1)
    assert (nearly_empty.admitted, nearly_empty.ahead) == (60, 10)  # 30 left
    assert take(limit, nearly_empty.bucket, 10.0, 20, ahead=0.1).ahead == 0  # 10 left: no
    booked = take(limit, Bucket(), 10.0, 120, ahead=0.1)
    assert booked.ahead == 0 and len(booked.run_at) == 20


def test_tokens_that_come_free_within_the_wait_start_then_instead_of_being_booked() -> None:
    limit = RateLimit.parse("100/s", burst=1)
    drawn = take(limit, Bucket(), 10.0, 8, wait=0.05)
    assert drawn.start_at == pytest.approx([10.0, 10.01, 10.02, 10.03, 10.04, 10.05])
    assert drawn.run_at == pytest.approx([10.06, 10.07])


def test_slowing_down_pauses_the_bucket_then_halves_the_rate() -> None:
    limit = RateLimit.parse("10/s", burst=1, cooldown=30.0)
    bucket = slow_down(limit, Bucket(), 50.0, 2.0)
    assert take(limit, bucket, 51.9, 1).admitted == 0
    resumed = take(limit, bucket, 52.0, 2)
    assert resumed.admitted == 1
    assert resumed.run_at == (pytest.approx(52.2),)  # 5/s while slowed
    after = take(limit, resumed.bucket, 90.0, 3)
    assert after.admitted == 1 and after.run_at[0] == pytest.approx(90.1)  # 10/s again


def test_a_record_that_is_not_a_bucket_reads_as_a_full_one() -> None:
    assert Bucket.from_text('{"tat": "x"}') == Bucket()
    assert Bucket.from_text("[1, 2]") == Bucket()
    assert Bucket.from_text(Bucket(3.0, 4.0, 5.0).to_text()) == Bucket(3.0, 4.0, 5.0)


@pytest.fixture
def app() -> App:
    return App("memory://")


@pytest.fixture
def kit(app: App) -> Any:
    with TestKit(app, concurrency=8) as kit:
        yield kit


def test_a_worker_starts_the_burst_and_books_the_rest_without_spending_attempts(
    app: App, kit: TestKit
) -> None:
    starts: list[float] = []

    @app.task(rate_limit=dict(rate="2/s", burst=3))
    def call_api(i: int) -> None:
        starts.append(kit.clock.now())

    t0 = kit.clock.now()
    handles = call_api.enqueue_many([(i,) for i in range(7)])
    assert kit.run_until_idle() == 3
    waiting = [h.get() for h in handles if h.get().state is JobState.SCHEDULED]
    assert len(waiting) == 4
    assert sorted(j.run_at - t0 for j in waiting) == pytest.approx([0.5, 1.0, 1.5, 2.0])
    assert {(j.attempt, j.errors) for j in waiting} == {(0, ())}  # nothing spent, nothing failed
    kit.run_until_idle(advance_time=True)
    assert [h.get().state for h in handles] == [JobState.SUCCEEDED] * 7
    assert {h.get().attempt for h in handles} == {1}
    assert [s - t0 for s in starts] == pytest.approx([0, 0, 0, 0.5, 1.0, 1.5, 2.0])


def test_each_key_has_a_bucket_of_its_own(app: App, kit: TestKit) -> None:
    @app.task(rate_limit=dict(rate="1/s", burst=1, key="{account}"))
    def push(account: str, n: int) -> None: ...

    @app.task
    def free(n: int) -> None: ...

    handles = push.enqueue_many([("a", n) for n in range(3)] + [("b", n) for n in range(3)])
    others = free.enqueue_many([(n,) for n in range(5)])
    assert kit.run_until_idle() == 2 + 5  # one of each key, and every job without a limit
    assert {h.get().state for h in others} == {JobState.SUCCEEDED}
    names = [r.name for r in kit.backend.list_limits("rate:")]
    assert names == ["rate:push:a", "rate:push:b"]
    kit.run_until_idle(advance_time=True)
    assert {h.get().state for h in handles} == {JobState.SUCCEEDED}


def test_a_key_function_giving_none_leaves_the_job_unlimited(app: App, kit: TestKit) -> None:
    @app.task(rate_limit=dict(rate="1/m", key=lambda account, **_: account))
    def push(account: str | None) -> None: ...

    push.enqueue_many([(None,)] * 4)
    assert kit.run_until_idle() == 4


def test_a_key_that_cannot_be_computed_refuses_the_enqueue(app: App) -> None:
    @app.task(rate_limit=dict(rate="1/s", key="{missing}"))
    def push(account: str) -> None: ...

    with pytest.raises(ConfigurationError, match="rate_limit key"):
        push.enqueue("a")
    assert app.jobs.list() == []


def test_tasks_sharing_a_name_share_each_keys_bucket(app: App, kit: TestKit) -> None:
    shared = dict(rate="1/s", burst=2, key="{account}", name="partner")

    @app.task(rate_limit=shared)
    def invoice(account: str) -> None: ...

    @app.task(rate_limit=shared)
    def refund(account: str) -> None: ...

    invoice.enqueue_many([("a",)] * 2)
    refund.enqueue_many([("a",)] * 2)
    assert kit.run_until_idle() == 2
    assert [r.name for r in kit.backend.list_limits()] == ["rate:partner:a"]


def test_rate_limited_snoozes_the_job_and_pauses_then_slows_the_limit(
    app: App, kit: TestKit
) -> None:
    starts: list[tuple[float, int]] = []

    @app.task(rate_limit=dict(rate="10/s", burst=1, cooldown=20.0))
    def call_api(i: int) -> None:
        starts.append((kit.clock.now(), i))
        if i == 0 and len(starts) == 1:
            raise RateLimited(retry_after=5.0)

    t0 = kit.clock.now()
    first = call_api.enqueue(0)
    kit.run_until_idle()
    job = first.get()
    assert (job.state, job.attempt, job.snoozes) == (JobState.SCHEDULED, 0, 1)
    assert job.run_at - t0 == pytest.approx(5.0)
    [record] = kit.backend.list_limits("rate:")
    assert Bucket.from_text(record.value).slow_until == pytest.approx(t0 + 20.0)
    later = call_api.enqueue_many([(i,) for i in range(1, 4)])
    kit.run_until_idle()  # paused: nothing starts before the remote end's retry_after
    assert len(starts) == 1
    kit.run_until_idle(advance_time=True)
    assert {h.get().state for h in [first, *later]} == {JobState.SUCCEEDED}
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(starts[1:])]
    assert starts[1][0] - t0 >= 5.0 - 1e-6
    assert gaps == pytest.approx([0.2] * len(gaps)), starts  # half the rate while cooling down


def test_rate_limited_without_a_rate_limit_is_a_snooze(app: App, kit: TestKit) -> None:
    @app.task
    def call_api() -> None:
        if call_api_runs.append(1) or len(call_api_runs) == 1:
            raise RateLimited(retry_after=3)

    call_api_runs: list[int] = []
    handle = call_api.enqueue()
    kit.run_until_idle(advance_time=True)
    job = handle.get()
    assert (job.state, job.attempt, job.snoozes) == (JobState.SUCCEEDED, 1, 1)
    assert kit.backend.list_limits() == []


def test_jobs_waiting_on_a_limit_removed_from_the_code_run_normally(app: App) -> None:
    with TestKit(app) as kit:

        @app.task(rate_limit="1/h")
        def report(i: int) -> None: ...

        handles = report.enqueue_many([(i,) for i in range(4)])
        assert kit.run_until_idle() == 1
        del app.tasks["report"]

        @app.task(name="report")
        def report_unlimited(i: int) -> None: ...

        fresh = report_unlimited.enqueue_many([(i,) for i in range(4)])
        assert kit.run_until_idle() == 4  # the limit is gone: no token asked for
        kit.run_until_idle(advance_time=True)  # the booked ones each run when booked for
        assert {h.get().state for h in [*handles, *fresh]} == {JobState.SUCCEEDED}
        assert {h.get().attempt for h in handles} == {1}


def test_the_pruner_deletes_expired_limit_records(app: App, kit: TestKit) -> None:
    kit.backend.swap_limits([LimitSwap("rate:old", None, "{}", 5.0)])
    kit.backend.swap_limits([LimitSwap("rate:new", None, "{}", 500.0)])
    kit.clock.advance(10.0)
    asyncio.run(prune_finished(kit.backend, Retention()))
    assert kit.backend.prune_limits() == 0  # already gone
    assert [r.name for r in kit.backend.list_limits()] == ["rate:new"]
