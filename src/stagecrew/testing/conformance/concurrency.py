"""Concurrency caps: a claim takes a job only while each of its caps has a free slot.

The caps are the claimer's (`ClaimLimits`): per task, per queue, and per concurrency key.
A job counts against its caps while it runs with a live lease; a capped job that cannot get
a slot is passed over untouched, and the jobs behind it are claimed (see `backends/caps.py`).
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from ...backends.base import Ack, Backend, JobFilter
from ...backends.caps import ClaimLimits
from ...clock import FakeClock
from ...job import AttemptError, ClaimedJob
from .helpers import (
    LEASE,
    Harness,
    S,
    attempt_error,
    enqueue_one,
    must_get,
    new_job,
    result_text,
)


def _claim(
    backend: Backend, limits: ClaimLimits, limit: int = 10, queues: tuple[str, ...] = ("default",)
) -> list[ClaimedJob]:
    return backend.claim(queues, "w1", limit, LEASE, limits)


def _tasks(claimed: list[ClaimedJob]) -> list[str]:
    return [c.task for c in claimed]


def _complete(backend: Backend, claimed: ClaimedJob) -> None:
    assert backend.ack([Ack.complete(claimed.ref, result_text(None))]) == [True]


class ConcurrencyConformance(Harness):
    def test_a_task_cap_bounds_how_many_of_its_jobs_a_claim_takes(self, backend: Backend) -> None:
        backend.enqueue([new_job("t") for _ in range(5)])
        limits = ClaimLimits(tasks={"t": 2})
        assert len(_claim(backend, limits)) == 2
        assert _claim(backend, limits) == []

    def test_an_outcome_frees_the_slot_for_the_next_claim(self, backend: Backend) -> None:
        backend.enqueue([new_job("t") for _ in range(3)])
        limits = ClaimLimits(tasks={"t": 1})
        [first] = _claim(backend, limits)
        assert _claim(backend, limits) == []
        _complete(backend, first)
        [second] = _claim(backend, limits)
        assert second.id != first.id

    def test_a_job_whose_cap_is_full_does_not_hold_back_the_jobs_behind_it(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        now = clock.now()
        capped = [enqueue_one(backend, task="t", run_at=now - 10 + i) for i in range(3)]
        free = [enqueue_one(backend, task="u", run_at=now - 5 + i) for i in range(2)]
        claimed = _claim(backend, ClaimLimits(tasks={"t": 1}))
        assert sorted(c.id for c in claimed) == sorted([capped[0], *free])

    def test_a_job_passed_over_keeps_its_state_and_attempt(self, backend: Backend) -> None:
        [running, waiting] = [e.id for e in backend.enqueue([new_job("t"), new_job("t")])]
        limits = ClaimLimits(tasks={"t": 1})
        [claimed] = _claim(backend, limits)
        assert claimed.id == running
        for _ in range(3):
            assert _claim(backend, limits) == []
        job = must_get(backend, waiting)
        assert job.state is S.AVAILABLE
        assert (job.attempt, job.claims) == (0, 0)

    def test_a_task_cap_counts_its_jobs_in_every_queue(self, backend: Backend) -> None:
        if backend._keys_per_queue:
            pytest.skip(
                "the store keeps its keys per queue (Redis Cluster's layout): a claim's script "
                "reads one queue's slot, so a task cap counts within each queue there"
            )
        backend.enqueue([new_job("t", queue="a"), new_job("t", queue="b")])
        limits = ClaimLimits(tasks={"t": 1})
        assert len(backend.claim(["a"], "w1", 10, LEASE, limits)) == 1
        assert backend.claim(["b"], "w2", 10, LEASE, limits) == []
        assert len(backend.claim(["b"], "w2", 10, LEASE)) == 1  # a claimer without the cap

    def test_a_queue_cap_counts_jobs_of_every_task_in_the_queue(self, backend: Backend) -> None:
        backend.enqueue(
            [
                new_job("t", queue="q"),
                new_job("u", queue="q"),
                new_job("u", queue="q"),
                new_job("t", queue="other"),
            ]
        )
        limits = ClaimLimits(queues={"q": 2})
        claimed = backend.claim(["q", "other"], "w1", 10, LEASE, limits)
        assert sorted(c.queue for c in claimed) == ["other", "q", "q"]
        assert backend.claim(["q"], "w1", 10, LEASE, limits) == []

    def test_a_key_cap_bounds_each_key_and_leaves_other_keys_free(self, backend: Backend) -> None:
        backend.enqueue(
            [new_job("t", concurrency_key="t:a") for _ in range(3)]
            + [new_job("t", concurrency_key="t:b") for _ in range(3)]
            + [new_job("t")]  # no key: no per-key cap
        )
        limits = ClaimLimits(keys={"t": 2})
        claimed = _claim(backend, limits)
        keys = sorted(str(must_get(backend, c.id).concurrency_key) for c in claimed)
        assert keys == ["None", "t:a", "t:a", "t:b", "t:b"]
        assert _claim(backend, limits) == []

    def test_tasks_that_share_a_key_share_its_slots(self, backend: Backend) -> None:
        backend.enqueue(
            [new_job("t", concurrency_key="api:1"), new_job("u", concurrency_key="api:1")]
        )
        limits = ClaimLimits(keys={"t": 1, "u": 1})
        assert len(_claim(backend, limits)) == 1
        assert _claim(backend, limits) == []

    def test_a_full_key_holds_back_only_the_tasks_that_cap_it(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        """A key's cap is its task's: full for a task capping it at 1, it still has room for a
        task capping it at 3, and for a task that caps no keys at all, however many jobs of the
        first task wait ahead of them (more than a claim of one job reads at once)."""
        now = clock.now()
        limits = ClaimLimits(keys={"one": 1, "three": 3})
        enqueue_one(backend, task="one", concurrency_key="api:k", run_at=now - 100)
        assert len(_claim(backend, limits)) == 1
        backend.enqueue(
            [new_job("one", concurrency_key="api:k", run_at=now - 50 + i * 0.1) for i in range(80)]
        )
        three = enqueue_one(backend, task="three", concurrency_key="api:k", run_at=now - 2)
        free = enqueue_one(backend, task="free", concurrency_key="api:k", run_at=now - 1)
        assert [c.id for c in _claim(backend, limits, limit=1)] == [three]
        assert [c.id for c in _claim(backend, limits, limit=1)] == [free]
        assert _claim(backend, ClaimLimits(keys={"one": 1})) == []

    def test_a_full_key_never_holds_back_a_task_that_caps_no_keys(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        now = clock.now()
        limits = ClaimLimits(keys={"one": 1})
        enqueue_one(backend, task="one", concurrency_key="api:k", run_at=now - 100)
        assert len(_claim(backend, limits)) == 1
        free = enqueue_one(backend, task="free", concurrency_key="api:k", run_at=now - 1)
        assert [c.id for c in _claim(backend, limits)] == [free]

    def test_every_cap_of_a_job_must_have_a_slot(self, backend: Backend) -> None:
        backend.enqueue([new_job("t", concurrency_key="t:a") for _ in range(4)])
        limits = ClaimLimits(tasks={"t": 3}, keys={"t": 1}, queues={"default": 5})
        assert len(_claim(backend, limits)) == 1
        backend.enqueue([new_job("t", concurrency_key="t:b"), new_job("t", concurrency_key="t:c")])
        backend.enqueue([new_job("t", concurrency_key="t:d")])
        assert len(_claim(backend, limits)) == 2  # the task's cap of 3 is then full

    def test_a_claim_within_caps_takes_jobs_in_claim_order(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        now = clock.now()
        low = enqueue_one(backend, task="u", priority=5, run_at=now - 30)
        late = enqueue_one(backend, task="t", run_at=now - 10)
        early = enqueue_one(backend, task="t", run_at=now - 20)
        urgent = enqueue_one(backend, task="u", priority=-1, run_at=now)
        claimed = _claim(backend, ClaimLimits(tasks={"t": 1}), limit=3)
        assert [c.id for c in claimed] == [urgent, early, low]
        assert must_get(backend, late).state is S.AVAILABLE

    def test_a_claim_within_caps_never_takes_more_than_its_limit(self, backend: Backend) -> None:
        backend.enqueue([new_job("t") for _ in range(5)])
        assert len(_claim(backend, ClaimLimits(tasks={"t": 4}), limit=3)) == 3

    def test_a_due_scheduled_job_is_capped_as_an_available_one(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        backend.enqueue([new_job("t", delay=10.0), new_job("t", delay=10.0)])
        clock.advance(11.0)
        assert len(_claim(backend, ClaimLimits(tasks={"t": 1}))) == 1

    def test_a_cap_no_claimer_sends_limits_nothing(self, backend: Backend) -> None:
        backend.enqueue([new_job("t", concurrency_key="t:a") for _ in range(3)])
        assert len(_claim(backend, ClaimLimits(tasks={"other": 1}))) == 3

    def test_an_expired_lease_gives_its_slot_back_before_any_rescue(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        backend.enqueue([new_job("t"), new_job("t")])
        limits = ClaimLimits(tasks={"t": 1})
        [first] = _claim(backend, limits)
        clock.advance(LEASE - 1.0)
        assert _claim(backend, limits) == []
        clock.advance(2.0)
        [second] = _claim(backend, limits)
        assert second.id != first.id

    def test_a_heartbeat_keeps_the_slot_held(self, backend: Backend, clock: FakeClock) -> None:
        backend.enqueue([new_job("t"), new_job("t")])
        limits = ClaimLimits(tasks={"t": 1})
        [first] = _claim(backend, limits)
        clock.advance(LEASE - 1.0)
        assert backend.heartbeat("w1", [first.ref], LEASE).lost == frozenset()
        clock.advance(2.0)
        assert _claim(backend, limits) == []

    def test_a_released_worker_gives_its_slots_back_at_once(self, backend: Backend) -> None:
        backend.enqueue([new_job("t"), new_job("t")])
        limits = ClaimLimits(tasks={"t": 1})
        assert len(backend.claim(["default"], "dead", 10, LEASE, limits)) == 1
        backend.release_worker("dead", max_lost=3)
        assert len(backend.claim(["default"], "w2", 10, LEASE, limits)) == 1

    @pytest.mark.parametrize("kind", ["retry", "snooze", "release", "dead"])
    def test_every_outcome_that_ends_the_attempt_frees_its_slot(
        self, backend: Backend, clock: FakeClock, kind: str
    ) -> None:
        backend.enqueue([new_job("t", max_attempts=5), new_job("t", max_attempts=5)])
        limits = ClaimLimits(tasks={"t": 1})
        [first] = _claim(backend, limits)
        ack = {
            "retry": lambda: Ack.retry(first.ref, _error(first, clock), 3600.0),
            "snooze": lambda: Ack.snooze(first.ref, 3600.0),
            "release": lambda: Ack.release(first.ref),
            "dead": lambda: Ack.dead_letter(first.ref, _error(first, clock)),
        }[kind]()
        assert backend.ack([ack]) == [True]
        [second] = _claim(backend, limits)
        assert second.id != first.id or kind == "release"

    def test_concurrent_claimers_never_exceed_a_cap_together(self, backend: Backend) -> None:
        backend.enqueue([new_job("t", concurrency_key="t:a") for _ in range(40)])
        limits = ClaimLimits(tasks={"t": 7}, keys={"t": 5})
        claimers = 8
        start = threading.Barrier(claimers)
        claimed: list[ClaimedJob] = []
        lock = threading.Lock()

        def claim_some(n: int) -> None:
            start.wait()
            for _ in range(3):
                got = backend.claim(["default"], f"w{n}", 2, LEASE, limits)
                with lock:
                    claimed.extend(got)

        threads = [threading.Thread(target=claim_some, args=(n,)) for n in range(claimers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(claimed) == 5
        assert len({c.id for c in claimed}) == 5

    def test_claim_async_and_wait_and_claim_enforce_the_caps_too(self, backend: Backend) -> None:
        backend.enqueue([new_job("t") for _ in range(4)])
        limits = ClaimLimits(tasks={"t": 2})

        async def both() -> tuple[int, int]:
            first = await backend.claim_async(["default"], "w1", 10, LEASE, limits)
            second = await backend.wait_and_claim(["default"], "w2", 10, LEASE, 0.05, limits)
            return len(first), len(second)

        assert asyncio.run(both()) == (2, 0)

    def test_a_concurrency_key_is_stored_with_its_job(self, backend: Backend) -> None:
        [keyed, plain] = backend.enqueue(
            [new_job("t", concurrency_key="t:customer-7"), new_job("t")]
        )
        assert must_get(backend, keyed.id).concurrency_key == "t:customer-7"
        assert must_get(backend, plain.id).concurrency_key is None

    @pytest.mark.parametrize(
        "key", ["", "x" * 513, "bad\x00key", "\ud800"], ids=["empty", "long", "nul", "surrogate"]
    )
    def test_an_unusable_concurrency_key_is_refused_and_nothing_written(
        self, backend: Backend, key: str
    ) -> None:
        with pytest.raises(ValueError, match="concurrency_key"):
            backend.enqueue([new_job("t"), new_job("t", concurrency_key=key)])
        assert backend.list_jobs(JobFilter()) == []

    @pytest.mark.parametrize(
        "limits",
        [
            {"tasks": {"t": 0}},
            {"queues": {"q": -1}},
            {"keys": {"t": 1.5}},
            {"tasks": {"t": True}},
            {"tasks": {"": 1}},
        ],
        ids=["zero", "negative", "fraction", "bool", "empty-name"],
    )
    def test_unusable_limits_are_refused(self, limits: dict[str, dict[str, object]]) -> None:
        with pytest.raises(ValueError, match="ClaimLimits"):
            ClaimLimits(**limits)  # type: ignore[arg-type]


def _error(claimed: ClaimedJob, clock: FakeClock) -> AttemptError:
    return attempt_error(claimed, clock.now(), "boom")
