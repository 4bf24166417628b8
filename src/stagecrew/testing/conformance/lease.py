"""Leases and heartbeats: a heartbeat renews only the claims its worker still holds."""

from __future__ import annotations

from typing import cast

from ...backends.base import Ack, AckKind, Backend, HeartbeatReply
from ...clock import FakeClock
from ...job import JobRef
from .helpers import LEASE, Harness, S, approx_time, claim, enqueue_one, must_get, result_text


class LeaseConformance(Harness):
    def test_heartbeat_extends_the_lease_past_its_original_expiry(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        claimed = claim(backend, job_id)
        clock.advance(LEASE - 10.0)
        reply = backend.heartbeat("w1", [claimed.ref], LEASE)
        assert reply == HeartbeatReply(frozenset(), frozenset())
        assert must_get(backend, job_id).lease_expires_at == approx_time(clock.now() + LEASE)
        clock.advance(20.0)  # past the first lease, within the renewed one
        assert backend.rescue().total == 0
        assert backend.claim(["default"], "w2", 10, LEASE) == []
        job = must_get(backend, job_id)
        assert (job.state, job.attempt, job.lease_owner) == (S.RUNNING, 1, "w1")

    def test_heartbeat_with_no_refs_reports_nothing(self, backend: Backend) -> None:
        assert backend.heartbeat("w1", [], LEASE) == HeartbeatReply(frozenset(), frozenset())

    def test_heartbeat_by_another_worker_is_lost_and_does_not_extend_the_lease(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        claimed = claim(backend, job_id, worker="w1")
        expiry = must_get(backend, job_id).lease_expires_at
        clock.advance(10.0)
        reply = backend.heartbeat("w2", [claimed.ref], LEASE)
        assert reply.lost == {job_id}
        assert reply.cancel_requested == frozenset()
        job = must_get(backend, job_id)
        assert job.lease_expires_at == approx_time(cast(float, expiry))
        assert job.lease_owner == "w1"

    def test_heartbeat_for_another_claim_is_lost(self, backend: Backend) -> None:
        job_id = enqueue_one(backend)
        claimed = claim(backend, job_id)
        reply = backend.heartbeat("w1", [JobRef(job_id, claimed.token + 1)], LEASE)
        assert reply.lost == {job_id}

    def test_heartbeat_for_a_rescued_job_is_lost(self, backend: Backend, clock: FakeClock) -> None:
        job_id = enqueue_one(backend)
        claimed = claim(backend, job_id)
        clock.advance(LEASE + 1.0)
        assert backend.rescue().requeued == 1
        assert backend.heartbeat("w1", [claimed.ref], LEASE).lost == {job_id}
        assert must_get(backend, job_id).state is S.AVAILABLE

    def test_heartbeat_of_a_stale_worker_after_takeover_is_lost_and_leaves_the_new_lease(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        old = claim(backend, job_id, worker="w1")
        clock.advance(LEASE + 1.0)
        backend.rescue()
        new = claim(backend, job_id, worker="w2")
        expiry = must_get(backend, job_id).lease_expires_at
        clock.advance(5.0)
        assert backend.heartbeat("w1", [old.ref], LEASE).lost == {job_id}
        assert backend.heartbeat("w1", [new.ref], LEASE).lost == {job_id}
        job = must_get(backend, job_id)
        assert job.lease_owner == "w2"
        assert job.lease_expires_at == approx_time(cast(float, expiry))

    def test_heartbeat_for_a_finished_or_unknown_job_is_lost(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        claimed = claim(backend, job_id)
        backend.ack([Ack(claimed.ref, AckKind.COMPLETE, result=result_text(1))])
        reply = backend.heartbeat("w1", [claimed.ref, JobRef(999_999, 1)], LEASE)
        assert reply.lost == {job_id, 999_999}
        assert must_get(backend, job_id).state is S.SUCCEEDED

    def test_heartbeat_reports_cancel_requested_jobs_and_still_extends_their_lease(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        keep = enqueue_one(backend)
        stop = enqueue_one(backend)
        refs = [claim(backend, keep).ref, claim(backend, stop).ref]
        backend.cancel(stop)
        clock.advance(10.0)
        reply = backend.heartbeat("w1", refs, LEASE)
        assert reply == HeartbeatReply(frozenset(), frozenset({stop}))
        assert must_get(backend, stop).lease_expires_at == approx_time(clock.now() + LEASE)
        assert must_get(backend, stop).state is S.RUNNING

    def test_heartbeat_reports_each_ref_on_its_own(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        held = enqueue_one(backend)
        taken = enqueue_one(backend)
        held_ref = claim(backend, held, worker="w1").ref
        taken_ref = claim(backend, taken, worker="w2").ref
        reply = backend.heartbeat("w1", [held_ref, taken_ref], LEASE)
        assert reply.lost == {taken}
        assert reply.cancel_requested == frozenset()
