"""Workflows: atomic enqueue of a record and its members, and the fan-in, exactly once."""

from __future__ import annotations

import threading
from typing import Any

import orjson
import pytest

from ...backends.base import Ack, AckKind, Backend, JobFilter, Retention
from ...backends.workflows import HELD_AT, NewWorkflow, OnFailure, Workflow, WorkflowStatus
from ...clock import FakeClock
from ...errors import EnqueueError
from ...job import ClaimedJob
from .helpers import LEASE, Harness, S, attempt_error, must_get, new_job, result_text

W = WorkflowStatus


def chord_of(
    size: int, *, on_failure: OnFailure = OnFailure.FAIL, workflow_id: str = "wf1"
) -> NewWorkflow:
    """A chord: a group of `size` members, then one callback."""
    return NewWorkflow(
        id=workflow_id,
        steps=(
            tuple(new_job("conformance.member", args=[i]) for i in range(size)),
            (new_job("conformance.callback"),),
        ),
        groups=(True, False),
        on_failure=on_failure,
    )


def chain_of(length: int, workflow_id: str = "wf1") -> NewWorkflow:
    return NewWorkflow(
        id=workflow_id,
        steps=tuple((new_job(f"conformance.step{i}"),) for i in range(length)),
        groups=(False,) * length,
    )


def workflow(backend: Backend, workflow_id: str = "wf1") -> Workflow:
    found = backend.get_workflow(workflow_id)
    assert found is not None, f"workflow {workflow_id} is not stored"
    return found


def claim_all(backend: Backend, count: int, worker: str = "w1") -> list[ClaimedJob]:
    claimed = backend.claim(["default"], worker, count + 5, LEASE)
    assert len(claimed) == count, f"expected {count} claimable jobs, got {claimed}"
    return claimed


def complete(backend: Backend, job: ClaimedJob, value: Any) -> bool:
    ack = Ack(job.ref, AckKind.COMPLETE, result_text(value), in_workflow=True)
    [applied] = backend.ack([ack])
    return applied


def _ack_at_once(
    backend: Backend, job: ClaimedJob, barrier: threading.Barrier, outcomes: list[bool]
) -> None:
    barrier.wait()
    outcomes.append(complete(backend, job, job.id))


class WorkflowConformance(Harness):
    def test_a_workflow_is_stored_with_its_first_step_waiting_and_later_steps_held(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        ids = backend.enqueue_workflow(chord_of(3))
        assert [len(step) for step in ids] == [3, 1]
        found = workflow(backend)
        assert (found.status, found.step, found.on_failure) == (W.RUNNING, 0, OnFailure.FAIL)
        assert [(s.group, s.size) for s in found.shape] == [(True, 3), (False, 1)]
        assert [(j.id, j.workflow_step, j.workflow_index) for j in found.members] == [
            (ids[0][0], 0, 0),
            (ids[0][1], 0, 1),
            (ids[0][2], 0, 2),
            (ids[1][0], 1, 0),
        ]
        callback = must_get(backend, ids[1][0])
        assert (callback.state, callback.run_at, callback.workflow_id) == (
            S.SCHEDULED,
            HELD_AT,
            "wf1",
        )
        clock.advance(10 * 365 * 86_400)
        claimed = claim_all(backend, 3)
        assert {c.id for c in claimed} == set(ids[0])
        assert all(c.workflow_id == "wf1" and c.workflow_input is None for c in claimed)

    def test_held_members_are_never_the_next_due_time(self, backend: Backend) -> None:
        backend.enqueue_workflow(chain_of(2))
        [first] = claim_all(backend, 1)
        assert backend.next_run_at() is None
        assert complete(backend, first, 1)
        assert backend.next_run_at() is not None

    def test_a_workflow_with_a_bad_member_writes_nothing(self, backend: Backend) -> None:
        keyed = NewWorkflow(
            id="wf1",
            steps=((new_job("conformance.member"),), (new_job("conformance.cb", key="k"),)),
            groups=(False, False),
        )
        with pytest.raises(ValueError, match="idempotency key"):
            backend.enqueue_workflow(keyed)
        with pytest.raises(ValueError, match="exactly one job"):
            backend.enqueue_workflow(
                NewWorkflow(id="wf1", steps=((new_job(), new_job()),), groups=(False,))
            )
        with pytest.raises(ValueError, match="workflow id"):
            backend.enqueue_workflow(
                NewWorkflow(id="no spaces", steps=((new_job(),),), groups=(False,))
            )
        assert backend.list_jobs(JobFilter()) == []
        assert backend.get_workflow("wf1") is None

    def test_a_workflow_the_store_refuses_midway_leaves_no_member_behind(
        self, backend: Backend
    ) -> None:
        backend.enqueue_workflow(chord_of(2))
        with pytest.raises(EnqueueError):
            backend.enqueue_workflow(chord_of(3))  # the same id: refused by the store
        assert len(backend.list_jobs(JobFilter())) == 3
        assert workflow(backend).shape[0].size == 2

    def test_an_unknown_workflow_reads_as_none_and_a_bad_id_is_refused(
        self, backend: Backend
    ) -> None:
        assert backend.get_workflow("nope") is None
        assert backend.cancel_workflow("nope") is None
        with pytest.raises(ValueError):
            backend.get_workflow("")

    def test_a_chain_feeds_each_result_to_the_next_step_and_finishes_with_the_last(
        self, backend: Backend
    ) -> None:
        ids = backend.enqueue_workflow(chain_of(3))
        [first] = claim_all(backend, 1)
        assert complete(backend, first, {"n": 1})
        assert workflow(backend).step == 1
        [second] = claim_all(backend, 1)
        assert second.id == ids[1][0]
        assert orjson.loads(second.workflow_input or "") == {"n": 1}
        assert complete(backend, second, [2])
        [third] = claim_all(backend, 1)
        assert orjson.loads(third.workflow_input or "") == [2]
        assert workflow(backend).status is W.RUNNING
        assert complete(backend, third, "done")
        found = workflow(backend)
        assert (found.status, found.step, found.result) == (W.SUCCEEDED, 2, '"done"')
        assert found.finished_at is not None

    def test_a_chord_callback_is_released_once_every_member_succeeded_with_results_in_order(
        self, backend: Backend
    ) -> None:
        ids = backend.enqueue_workflow(chord_of(3))
        members = sorted(claim_all(backend, 3), key=lambda c: c.id)
        for member in reversed(members):  # finish out of order
            assert complete(backend, member, member.id * 10)
            if member is not members[0]:
                assert must_get(backend, ids[1][0]).state is S.SCHEDULED
        [callback] = claim_all(backend, 1)
        assert callback.id == ids[1][0]
        assert orjson.loads(callback.workflow_input or "") == [m.id * 10 for m in members]
        assert complete(backend, callback, 6)
        assert workflow(backend).result == "6"

    def test_a_group_alone_finishes_with_the_list_of_its_results(self, backend: Backend) -> None:
        backend.enqueue_workflow(
            NewWorkflow(id="wf1", steps=((new_job(), new_job()),), groups=(True,))
        )
        first, second = sorted(claim_all(backend, 2), key=lambda c: c.id)
        assert complete(backend, second, "b")
        assert complete(backend, first, "a")
        found = workflow(backend)
        assert (found.status, orjson.loads(found.result or "")) == (W.SUCCEEDED, ["a", "b"])

    def test_the_last_two_members_acked_at_once_release_the_callback_exactly_once(
        self, backend: Backend
    ) -> None:
        for round_ in range(4):
            workflow_id = f"race{round_}"
            ids = backend.enqueue_workflow(chord_of(2, workflow_id=workflow_id))
            members = claim_all(backend, 2)
            barrier = threading.Barrier(2)
            outcomes: list[bool] = []
            threads = [
                threading.Thread(target=_ack_at_once, args=(backend, m, barrier, outcomes))
                for m in members
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert outcomes == [True, True]
            found = workflow(backend, workflow_id)
            assert found.step == 1
            [callback] = claim_all(backend, 1)
            assert callback.id == ids[1][0]
            assert orjson.loads(callback.workflow_input or "") == sorted(ids[0])
            assert complete(backend, callback, None)
            assert workflow(backend, workflow_id).status is W.SUCCEEDED

    def test_a_stale_claims_ack_does_not_advance_the_workflow(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        ids = backend.enqueue_workflow(chain_of(2))
        [stale] = claim_all(backend, 1)
        clock.advance(LEASE + 1)
        assert backend.rescue().requeued == 1
        [fresh] = claim_all(backend, 1, worker="w2")  # running again, under a new token
        assert complete(backend, stale, "late") is False
        assert workflow(backend).step == 0
        assert must_get(backend, ids[1][0]).state is S.SCHEDULED
        assert complete(backend, fresh, "on time")
        [second] = claim_all(backend, 1)
        assert second.workflow_input == '"on time"'

    def test_a_dead_member_fails_the_workflow_and_a_requeue_that_succeeds_resumes_it(
        self, backend: Backend
    ) -> None:
        ids = backend.enqueue_workflow(chord_of(2))
        first, second = sorted(claim_all(backend, 2), key=lambda c: c.id)
        assert backend.ack([Ack.dead_letter(first.ref, attempt_error(first, 0.0, "boom"))]) == [
            True
        ]
        assert workflow(backend).status is W.FAILED
        assert complete(backend, second, "b")
        found = workflow(backend)
        assert (found.status, found.step) == (W.FAILED, 0)
        assert must_get(backend, ids[1][0]).state is S.SCHEDULED
        assert backend.requeue(JobFilter(ids=frozenset({first.id}))) == 1
        [again] = claim_all(backend, 1)
        assert again.id == first.id
        assert complete(backend, again, "a")
        assert (workflow(backend).status, workflow(backend).step) == (W.RUNNING, 1)
        [callback] = claim_all(backend, 1)
        assert orjson.loads(callback.workflow_input or "") == ["a", "b"]

    def test_continue_mode_gives_the_callback_every_members_outcome(self, backend: Backend) -> None:
        backend.enqueue_workflow(chord_of(2, on_failure=OnFailure.CONTINUE))
        first, second = sorted(claim_all(backend, 2), key=lambda c: c.id)
        assert backend.ack([Ack.dead_letter(first.ref, attempt_error(first, 0.0, "boom"))]) == [
            True
        ]
        assert workflow(backend).status is W.RUNNING
        assert complete(backend, second, 2)
        [callback] = claim_all(backend, 1)
        outcomes = orjson.loads(callback.workflow_input or "")
        assert outcomes[1] == {"state": "succeeded", "result": 2}
        assert outcomes[0]["state"] == "dead"
        assert outcomes[0]["error"]["message"] == "boom"

    def test_a_member_a_rescue_sends_to_the_dead_letter_queue_ends_its_step(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        ids = backend.enqueue_workflow(chord_of(1, on_failure=OnFailure.CONTINUE))
        for _ in range(2):
            claim_all(backend, 1)
            clock.advance(LEASE + 1)
            backend.rescue(max_lost=2)
        assert must_get(backend, ids[0][0]).state is S.DEAD
        [callback] = claim_all(backend, 1)
        assert callback.id == ids[1][0]
        assert orjson.loads(callback.workflow_input or "")[0]["state"] == "dead"

    def test_a_member_of_a_dead_worker_released_to_the_dlq_fails_its_workflow(
        self, backend: Backend
    ) -> None:
        backend.enqueue_workflow(chord_of(1))
        claim_all(backend, 1, worker="gone")
        assert backend.release_worker("gone", max_lost=1).dead == 1
        assert workflow(backend).status is W.FAILED

    def test_a_member_cancelled_by_hand_fails_the_workflow(self, backend: Backend) -> None:
        ids = backend.enqueue_workflow(chord_of(2))
        backend.cancel(ids[0][0])
        assert workflow(backend).status is W.FAILED
        assert must_get(backend, ids[1][0]).state is S.SCHEDULED

    def test_cancelling_a_workflow_cancels_its_waiting_members_and_it_never_advances(
        self, backend: Backend
    ) -> None:
        ids = backend.enqueue_workflow(chord_of(2))
        running = claim_all(backend, 2)[0]
        cancelled = backend.cancel_workflow("wf1")
        assert cancelled is not None and cancelled.status is W.CANCELLED
        states = {j.id: (j.state, j.cancel_requested) for j in cancelled.members}
        assert states[ids[1][0]] == (S.CANCELLED, False)
        assert states[running.id] == (S.RUNNING, True)
        assert complete(backend, running, 1)
        assert workflow(backend).status is W.CANCELLED
        assert backend.cancel_workflow("wf1").status is W.CANCELLED  # type: ignore[union-attr]

    def test_a_workflow_is_pruned_with_its_last_member(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        backend.enqueue_workflow(chain_of(1))
        [only] = claim_all(backend, 1)
        assert complete(backend, only, 1)
        backend.enqueue_workflow(chain_of(1, workflow_id="wf2"))
        clock.advance(10.0)
        assert backend.prune(Retention(succeeded=5.0)) == 1
        assert backend.get_workflow("wf1") is None
        assert workflow(backend, "wf2").status is W.RUNNING

    def test_a_plain_job_is_no_workflow_member(self, backend: Backend) -> None:
        [entry] = backend.enqueue([new_job()])
        job = must_get(backend, entry.id)
        assert (job.workflow_id, job.workflow_step, job.workflow_index) == (None, None, None)
        [claimed] = claim_all(backend, 1)
        assert (claimed.workflow_id, claimed.workflow_input) == (None, None)
