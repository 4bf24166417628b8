"""Concurrency caps as the code declares them, and a worker that enforces them (memory engine).

The store's side (every engine) is the conformance suite's `ConcurrencyConformance`; several
worker processes on real engines are tests/integration/test_concurrency_processes.py.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from stagecrew import App, Concurrency, JobState, chain
from stagecrew.backends.caps import ClaimLimits
from stagecrew.errors import ConfigurationError
from stagecrew.worker import Worker


def test_a_whole_task_cap_and_a_per_key_cap_become_the_claims_limits() -> None:
    app = App("memory://")

    @app.task(concurrency=5)
    def whole() -> None: ...

    @app.task(concurrency=dict(key="{customer}", limit=2))
    def per_key(customer: str) -> None: ...

    @app.task
    def free() -> None: ...

    app.queue("email", concurrency=20)
    app.queue("other", concurrency=3)
    assert app.claim_limits(["default", "email"]) == ClaimLimits(
        tasks={"whole": 5}, queues={"email": 20}, keys={"per_key": 2}
    )


def test_an_app_without_caps_sends_none() -> None:
    app = App("memory://")

    @app.task
    def free() -> None: ...

    app.queue("email", concurrency=20)
    assert app.claim_limits(["default"]) is None
    app.queue("email", concurrency=None)
    assert app.claim_limits(["email"]) is None


def test_the_concurrency_key_is_the_group_and_the_filled_template() -> None:
    app = App("memory://")

    @app.task(concurrency=dict(key="{customer}-{region}", limit=2))
    def report(customer: str, region: str = "eu") -> None: ...

    @app.task(concurrency=Concurrency(2, key=lambda order, **_: order["customer"], name="api"))
    def charge(order: dict[str, Any]) -> None: ...

    @app.task(concurrency=Concurrency(2, key=lambda order, **_: order.get("customer"), name="api"))
    def refund(order: dict[str, Any]) -> None: ...

    assert report.enqueue("acme").get().concurrency_key == "report:acme-eu"
    assert report.enqueue(region="us", customer="b").get().concurrency_key == "report:b-us"
    assert charge.enqueue({"customer": "acme"}).get().concurrency_key == "api:acme"
    assert refund.enqueue({}).get().concurrency_key is None  # None: no per-key cap


def test_a_keyed_job_is_fair_queued_by_its_concurrency_key_unless_told_otherwise() -> None:
    app = App("memory://")

    @app.task(concurrency=dict(key="{c}", limit=2))
    def fair(c: str) -> None: ...

    @app.task(concurrency=dict(key="{c}", limit=2, fair=False))
    def plain(c: str) -> None: ...

    @app.task(concurrency=dict(key="{c}", limit=2), fairness_key=lambda c, **_: f"t-{c}")
    def own(c: str) -> None: ...

    assert fair.enqueue("a").get().fairness_key == "fair:a"
    assert fair.options(fairness_key="given").enqueue("a").get().fairness_key == "given"
    assert plain.enqueue("a").get().fairness_key is None
    assert own.enqueue("a").get().fairness_key == "t-a"


def test_a_workflow_member_gets_no_concurrency_key() -> None:
    app = App("memory://")

    @app.task(concurrency=dict(key="{n}", limit=1))
    def step(n: int) -> int:
        return n

    handle = chain(step.s(1), step.s()).enqueue()
    [first] = [j for j in app.jobs.list() if j.workflow_id == handle.id and j.workflow_step == 0]
    assert first.concurrency_key is None


@pytest.mark.parametrize(
    ("concurrency", "message"),
    [
        (0, "at least 1"),
        (True, "number of jobs"),
        ("5", "number of jobs"),
        (dict(key="{x}"), "limit= .required."),
        (dict(limit=2, keys="{x}"), "limit= .required."),
        (dict(limit=2, name="api"), "give key="),
        (dict(limit=2, key="{x}", name="a:b"), "without ':'"),
        (dict(limit=2, key=""), "template str or a function"),
        (dict(limit=1.5, key="{x}"), "whole number"),
        (dict(limit=1, key="{x}", fair="yes"), "True or False"),
    ],
)
def test_an_unusable_cap_is_refused_when_the_task_is_declared(
    concurrency: Any, message: str
) -> None:
    app = App("memory://")
    with pytest.raises(ConfigurationError, match=message):

        @app.task(concurrency=concurrency)
        def capped(x: int = 0) -> None: ...


def test_tasks_sharing_a_key_group_must_give_it_one_limit() -> None:
    app = App("memory://")

    @app.task(concurrency=dict(key="{c}", limit=2, name="api"))
    def one(c: str) -> None: ...

    with pytest.raises(ConfigurationError, match="share the concurrency name 'api'"):

        @app.task(concurrency=dict(key="{c}", limit=3, name="api"))
        def two(c: str) -> None: ...


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (lambda c, **_: 7, "must be a str or None"),
        (lambda c, **_: 1 / 0, "ZeroDivisionError"),
        ("{missing}", "KeyError"),
        (lambda c, **_: "x" * 600, "bytes of UTF-8"),
    ],
)
def test_a_key_that_cannot_be_computed_refuses_the_enqueue(key: Any, message: str) -> None:
    app = App("memory://")

    @app.task(concurrency=dict(key=key, limit=1))
    def capped(c: str) -> None: ...

    with pytest.raises(ConfigurationError, match=message):
        capped.enqueue("a")
    assert app.jobs.list() == []


def test_a_queue_cap_must_be_a_whole_number() -> None:
    app = App("memory://")
    with pytest.raises(ConfigurationError, match="at least 1"):
        app.queue("email", concurrency=0)


class _Ledger:
    """How many jobs ran at once, overall and per key, as the jobs themselves saw it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now: dict[str, int] = {}
        self.most: dict[str, int] = {}
        self.runs = 0

    def enter(self, *groups: str) -> None:
        with self.lock:
            self.runs += 1
            for group in groups:
                self.now[group] = self.now.get(group, 0) + 1
                self.most[group] = max(self.most.get(group, 0), self.now[group])

    def leave(self, *groups: str) -> None:
        with self.lock:
            for group in groups:
                self.now[group] -= 1


def _run_until_done(app: App, jobs: list[Any], **worker: Any) -> None:
    async def main() -> None:
        w = Worker(app, lease_seconds=30, **worker)
        run = asyncio.create_task(w.run(install_signal_handlers=False))
        for _ in range(1000):  # at most 10 s; poll_interval is far longer
            if all(j.get().state is JobState.SUCCEEDED for j in jobs):
                break
            await asyncio.sleep(0.01)
        w.request_stop()
        await asyncio.wait_for(run, 10)

    asyncio.run(main())
    assert [j.get().state for j in jobs] == [JobState.SUCCEEDED] * len(jobs)


def test_a_worker_runs_a_capped_task_at_its_cap_and_no_further() -> None:
    app = App("memory://")
    ledger = _Ledger()

    @app.task(concurrency=3)
    async def capped(n: int) -> None:
        ledger.enter("capped")
        await asyncio.sleep(0.02)
        ledger.leave("capped")

    jobs = [capped.enqueue(n) for n in range(12)]
    # poll_interval far above the run: each next job starts when an outcome frees a slot
    _run_until_done(app, jobs, concurrency=10, poll_interval=600)
    assert ledger.most == {"capped": 3}


def test_a_worker_runs_each_key_at_its_cap_and_the_keys_side_by_side() -> None:
    app = App("memory://")
    ledger = _Ledger()

    @app.task(concurrency=dict(key="{customer}", limit=1))
    def per_customer(customer: str) -> None:
        ledger.enter("all", customer)
        threading.Event().wait(0.02)
        ledger.leave("all", customer)

    jobs = [per_customer.enqueue(c) for c in ["a", "b"] * 5]
    _run_until_done(app, jobs, concurrency=8, poll_interval=600)
    assert ledger.most == {"all": 2, "a": 1, "b": 1}


def test_an_idle_worker_does_not_spin_on_due_jobs_whose_cap_is_full() -> None:
    app = App("memory://")
    release = threading.Event()

    @app.task(concurrency=1)
    def slow() -> None:
        release.wait(10)

    backend = app.backend
    calls = 0
    real = backend.wait_and_claim

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return await real(*args, **kwargs)

    backend.wait_and_claim = counted  # type: ignore[method-assign]
    jobs = [slow.enqueue(), slow.enqueue()]

    async def main() -> None:
        worker = Worker(app, poll_interval=600, lease_seconds=30, concurrency=4)
        run = asyncio.create_task(worker.run(install_signal_handlers=False))
        await asyncio.sleep(0.5)  # one runs, one waits for its slot
        assert [j.get().state for j in jobs] == [JobState.RUNNING, JobState.AVAILABLE]
        release.set()
        for _ in range(1000):
            if all(j.get().state is JobState.SUCCEEDED for j in jobs):
                break
            await asyncio.sleep(0.01)
        worker.request_stop()
        await asyncio.wait_for(run, 10)

    asyncio.run(main())
    assert [j.get().state for j in jobs] == [JobState.SUCCEEDED] * 2
    assert calls <= 5, f"the idle worker called wait_and_claim {calls} times"
