"""Fair queues: claims rotate across fairness keys, keyless jobs stay first in, first out."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest

from ...backends.base import Ack, Backend
from ...clock import FakeClock
from .helpers import LEASE, Harness, S, attempt_error, claim, enqueue_one, must_get, new_job


def _flood(backend: Backend, key: str, count: int, **fields: object) -> list[int]:
    jobs = [new_job(args=[i], fairness_key=key, **fields) for i in range(count)]  # type: ignore[arg-type]
    return [entry.id for entry in backend.enqueue(jobs)]


def _claim_order(backend: Backend, count: int, queues: Sequence[str] = ("default",)) -> list[int]:
    """The ids of `count` claims of one job each, in the order they were claimed."""
    return [claim(backend, queues=queues).id for _ in range(count)]


def _assert_one_for_one(order: list[int], small: list[int]) -> None:
    """The `small` key's jobs start within the first three claims, then take every other one."""
    positions = [order.index(job_id) for job_id in small]
    assert positions[0] <= 2, f"the small key waited: claimed at {positions}"
    gaps = [b - a for a, b in itertools.pairwise(positions)]
    assert gaps == [2] * (len(small) - 1), f"not one for one: claimed at {positions}"


class FairnessConformance(Harness):
    def test_a_small_key_interleaves_one_for_one_with_a_flood_of_another_key(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        flood = _flood(backend, "tenant-a", 30)
        clock.advance(1.0)
        small = _flood(backend, "tenant-b", 5)
        order = _claim_order(backend, 12)
        _assert_one_for_one(order, small)
        assert [i for i in order if i in flood] == flood[: 12 - len(small)]

    def test_a_key_arriving_while_a_flood_drains_starts_at_the_current_head(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        flood = _flood(backend, "tenant-a", 40)
        assert _claim_order(backend, 10) == flood[:10]
        clock.advance(30.0)
        small = _flood(backend, "tenant-b", 3)
        order = _claim_order(backend, 8)
        _assert_one_for_one(order, small)

    def test_a_later_flood_of_the_same_key_queues_behind_its_own_jobs(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        first = _flood(backend, "tenant-a", 5)
        clock.advance(1.0)
        second = _flood(backend, "tenant-a", 5)
        assert _claim_order(backend, 10) == first + second

    def test_keyless_jobs_stay_first_in_first_out_beside_keyed_ones(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        now = clock.now()
        late = enqueue_one(backend, run_at=now - 10.0)
        early = enqueue_one(backend, run_at=now - 20.0)
        later = enqueue_one(backend, run_at=now - 5.0)
        keyed = _flood(backend, "tenant-a", 2)
        order = _claim_order(backend, 5)
        assert [i for i in order if i not in keyed] == [early, late, later]
        assert [i for i in order if i in keyed] == keyed

    def test_priority_still_comes_before_fairness(self, backend: Backend, clock: FakeClock) -> None:
        flood = _flood(backend, "tenant-a", 10, priority=0)
        clock.advance(1.0)
        background = _flood(backend, "tenant-b", 2, priority=5)
        urgent = enqueue_one(backend, priority=-1)
        order = _claim_order(backend, 13)
        assert order[0] == urgent
        assert order[1:11] == flood
        assert order[11:] == background

    def test_the_fair_order_is_per_queue(self, backend: Backend, clock: FakeClock) -> None:
        other = _flood(backend, "tenant-a", 5, queue="other")
        mine = _flood(backend, "tenant-a", 2)
        assert _claim_order(backend, 2) == mine
        assert _claim_order(backend, 5, queues=("other",)) == other

    def test_a_delayed_keyed_job_is_ordered_by_its_run_at(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        delayed = enqueue_one(backend, fairness_key="tenant-b", delay=10.0)
        clock.advance(20.0)
        plain = enqueue_one(backend)
        assert _claim_order(backend, 2) == [delayed, plain]

    def test_a_retried_keyed_job_waits_again_by_its_new_run_at(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        [job_id] = _flood(backend, "tenant-a", 1)
        claimed = claim(backend, job_id)
        error = attempt_error(claimed, clock.now(), "again")
        assert backend.ack([Ack.retry(claimed.ref, error, delay=5.0)]) == [True]
        clock.advance(6.0)
        plain = enqueue_one(backend)
        assert _claim_order(backend, 2) == [job_id, plain]

    def test_a_cancelled_or_handed_back_keyed_job_leaves_the_claim_order_cleanly(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        flood = _flood(backend, "tenant-a", 3)
        clock.advance(1.0)
        [small] = _flood(backend, "tenant-b", 1)
        cancelled = must_get(backend, small)
        assert backend.cancel(small) is not None
        first = claim(backend, flood[0])
        assert backend.ack([Ack.release(first.ref)]) == [True]
        assert sorted(_claim_order(backend, 3)) == flood
        assert backend.claim(["default"], "w1", 10, LEASE) == []
        assert must_get(backend, small).state is not cancelled.state
        [stats] = backend.stats()
        assert stats.count(S.AVAILABLE) == 0 and stats.count(S.SCHEDULED) == 0

    def test_a_job_shows_its_fairness_key(self, backend: Backend) -> None:
        [keyed] = _flood(backend, "customer-42 \N{SNOWMAN}", 1)
        plain = enqueue_one(backend)
        assert must_get(backend, keyed).fairness_key == "customer-42 \N{SNOWMAN}"
        assert must_get(backend, plain).fairness_key is None

    @pytest.mark.parametrize(
        "bad",
        [42, b"tenant", "", "x" * 201, "\N{SNOWMAN}" * 67, "bad \udcff", "nul \x00"],
        ids=["int", "bytes", "empty", "too-long", "too-many-bytes", "surrogate", "nul"],
    )
    def test_a_bad_fairness_key_is_refused_and_nothing_is_written(
        self, backend: Backend, bad: object
    ) -> None:
        good = new_job(fairness_key="tenant-a")
        with pytest.raises(ValueError, match="fairness_key"):
            backend.enqueue([good, new_job(fairness_key=bad)])  # type: ignore[arg-type]
        assert backend.claim(["default"], "w1", 10, LEASE) == []
