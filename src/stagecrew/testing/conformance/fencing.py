"""Fencing: the claim token, and stale claims refused whatever happened between."""

from __future__ import annotations

from typing import cast

import pytest

from ...backends.base import Ack, AckKind, Backend, JobFilter, RescueReport
from ...clock import FakeClock
from ...job import ErrorKind
from .helpers import (
    LEASE,
    Harness,
    S,
    approx_time,
    attempt_error,
    claim,
    enqueue_one,
    must_get,
    result_text,
)


class FencingConformance(Harness):
    """The fencing token: no two claims of a job ever share one, whatever happened between them.

    The attempt users see is reset by a re-run from the dead-letter queue and
    given back by a hand-back, so it cannot tell two claims apart; the token
    (the job's count of claims) can.
    """

    def test_claim_tokens_only_grow_across_release_rescue_and_requeue(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend, max_attempts=2)
        first = claim(backend, job_id)
        assert backend.ack([Ack(first.ref, AckKind.RELEASE)]) == [True]
        second = claim(backend, job_id)
        assert second.attempt == first.attempt  # the hand-back gave the attempt back
        clock.advance(LEASE + 1.0)
        assert backend.rescue() == RescueReport(requeued=1)
        third = claim(backend, job_id)
        gave_up = attempt_error(third, clock.now(), "gave up")
        assert backend.ack([Ack(third.ref, AckKind.DEAD_LETTER, error=gave_up)]) == [True]
        assert backend.requeue(JobFilter(ids=frozenset({job_id}))) == 1
        requeued = must_get(backend, job_id)
        assert (requeued.attempt, requeued.claims) == (0, 3)  # the attempt resets, claims stay
        fourth = claim(backend, job_id)
        assert fourth.attempt == 1
        assert [c.token for c in (first, second, third, fourth)] == [1, 2, 3, 4]
        assert must_get(backend, job_id).claims == 4

    def test_claim_tokens_only_grow_across_snoozes_and_a_stale_claim_cannot_snooze_again(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend, max_attempts=1)
        claims = []
        for _ in range(3):
            claimed = claim(backend, job_id)
            claims.append(claimed)
            assert backend.ack([Ack.snooze(claimed.ref, 0.0)]) == [True]
        last = claim(backend, job_id)
        assert [c.attempt for c in (*claims, last)] == [1, 1, 1, 1]  # each snooze gave it back
        assert [c.token for c in (*claims, last)] == [1, 2, 3, 4]  # no token ever given twice
        for old in claims:
            assert backend.ack([Ack.snooze(old.ref, 0.0)]) == [False]
        job = must_get(backend, job_id)
        assert (job.state, job.claims, job.snoozes, job.lease_owner) == (S.RUNNING, 4, 3, "w1")
        assert backend.ack([Ack.complete(last.ref, result_text("done"))]) == [True]

    @pytest.mark.parametrize("kind", list(AckKind))
    def test_a_stale_outcome_after_rescue_dead_letter_requeue_and_reclaim_is_refused(
        self, backend: Backend, clock: FakeClock, kind: AckKind
    ) -> None:
        job_id = enqueue_one(backend, max_attempts=1)
        stale = claim(backend, job_id, worker="w1")  # then w1 stalls past its lease
        clock.advance(LEASE + 1.0)
        assert backend.rescue() == RescueReport(dead=1)
        assert backend.requeue(JobFilter(ids=frozenset({job_id}))) == 1  # `dlq requeue`
        fresh = claim(backend, job_id, worker="w2")
        assert fresh.attempt == stale.attempt == 1  # the attempt repeats, the claim does not

        result = result_text("from w1") if kind is AckKind.COMPLETE else None
        late = Ack(stale.ref, kind, result=result, error=attempt_error(stale, clock.now(), "late"))
        assert backend.ack([late]) == [False]
        job = must_get(backend, job_id)
        assert (job.state, job.attempt, job.lease_owner, job.result) == (S.RUNNING, 1, "w2", None)
        assert [e.kind for e in job.errors] == [ErrorKind.LOST]

        done = Ack(fresh.ref, AckKind.COMPLETE, result=result_text("from w2"))
        assert backend.ack([done]) == [True]
        job = must_get(backend, job_id)
        assert (job.state, job.result) == (S.SUCCEEDED, "from w2")

    def test_a_release_resent_after_the_job_was_claimed_again_is_refused_and_leaves_it_running(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        first = claim(backend, job_id, worker="w1")
        release = Ack(first.ref, AckKind.RELEASE)
        assert backend.ack([release]) == [True]  # written, but its reply was lost on the way
        again = claim(backend, job_id, worker="w2")
        assert again.attempt == first.attempt
        assert backend.ack([release]) == [False]  # so it is sent again
        job = must_get(backend, job_id)
        assert (job.state, job.lease_owner) == (S.RUNNING, "w2")
        assert backend.claim(["default"], "w3", 10, LEASE) == []
        assert backend.ack([Ack(again.ref, AckKind.COMPLETE, result=result_text(1))]) == [True]

    @pytest.mark.parametrize("given_back_by", ["release", "rescue and requeue"])
    def test_a_heartbeat_of_an_old_claim_is_lost_and_extends_nothing_once_the_job_is_claimed_again(
        self, backend: Backend, clock: FakeClock, given_back_by: str
    ) -> None:
        job_id = enqueue_one(backend, max_attempts=1)
        old = claim(backend, job_id, worker="w1")
        if given_back_by == "release":
            assert backend.ack([Ack(old.ref, AckKind.RELEASE)]) == [True]
        else:
            clock.advance(LEASE + 1.0)
            assert backend.rescue() == RescueReport(dead=1)
            assert backend.requeue(JobFilter()) == 1
        new = claim(backend, job_id, worker="w1")  # the same worker, even
        expiry = must_get(backend, job_id).lease_expires_at
        clock.advance(10.0)
        assert backend.heartbeat("w1", [old.ref], LEASE).lost == {job_id}
        assert must_get(backend, job_id).lease_expires_at == approx_time(cast(float, expiry))
        assert backend.heartbeat("w1", [new.ref], LEASE).lost == frozenset()
        assert must_get(backend, job_id).lease_expires_at == approx_time(clock.now() + LEASE)
