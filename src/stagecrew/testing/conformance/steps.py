"""Durable steps, checkpoints and progress: kept with the job, fenced by the claim's token."""

from __future__ import annotations

import asyncio
import threading

import pytest

from ...backends.base import Ack, Backend, JobFilter, Retention
from ...backends.steps import MAX_STEP_BYTES, JobSteps
from ...clock import FakeClock
from ...job import JobRef, Progress
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


def stored(backend: Backend, job_id: int) -> dict[str, str]:
    return {name: value.text for name, value in backend.read_steps(job_id).steps.items()}


class StepsConformance(Harness):
    def test_a_job_reads_nothing_before_it_stored_a_step(self, backend: Backend) -> None:
        job_id = enqueue_one(backend)
        assert backend.read_steps(job_id) == JobSteps()
        assert backend.read_steps(job_id + 1000) == JobSteps()
        assert must_get(backend, job_id).progress is None

    def test_steps_are_stored_in_order_with_the_store_time_and_read_back(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        running = claim(backend, job_id)
        assert backend.store_step(running.ref, "charge", '{"id": "ch_1", "cents": 1250}')
        clock.advance(2.0)
        assert backend.store_step(running.ref, "ship ✓", '["a", "é", null, 1.5]')
        steps = backend.read_steps(job_id)
        assert list(steps.steps) == ["charge", "ship ✓"]
        charge = steps.steps["charge"]
        assert charge.text.replace(" ", "") == '{"id":"ch_1","cents":1250}'
        assert charge.stored_at == approx_time(clock.now() - 2.0)
        assert steps.steps["ship ✓"].text.replace(" ", "") == '["a","é",null,1.5]'
        assert steps.state is None

    def test_a_step_stored_already_keeps_its_first_result(self, backend: Backend) -> None:
        job_id = enqueue_one(backend)
        running = claim(backend, job_id)
        assert backend.store_step(running.ref, "once", "1") is True
        assert backend.store_step(running.ref, "once", "2") is True
        assert stored(backend, job_id) == {"once": "1"}

    def test_steps_survive_a_retry_a_hand_back_a_rescue_and_a_rerun_from_the_dlq(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend, max_attempts=2)
        first = claim(backend, job_id)
        assert backend.store_step(first.ref, "one", "1")
        error = attempt_error(first, clock.now(), "boom")
        assert backend.ack([Ack.retry(first.ref, error)]) == [True]
        second = claim(backend, job_id)
        assert backend.store_step(second.ref, "two", "2")
        assert backend.ack([Ack.release(second.ref)]) == [True]
        third = claim(backend, job_id)
        assert backend.store_step(third.ref, "three", "3")
        clock.advance(LEASE + 1.0)
        backend.rescue()
        assert must_get(backend, job_id).state is S.DEAD  # two attempts and a lost worker
        assert backend.requeue(JobFilter(ids=frozenset({job_id}))) == 1
        fourth = claim(backend, job_id)
        assert stored(backend, job_id) == {"one": "1", "two": "2", "three": "3"}
        assert backend.store_step(fourth.ref, "four", "4")
        assert list(stored(backend, job_id)) == ["one", "two", "three", "four"]

    def test_a_stale_claim_cannot_store_a_step_a_checkpoint_or_progress(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend, max_attempts=5)
        stale = claim(backend, job_id)
        clock.advance(LEASE + 1.0)
        backend.rescue()
        after_rescue = claim(backend, job_id)
        assert backend.ack([Ack.release(after_rescue.ref)]) == [True]
        after_hand_back = claim(backend, job_id)
        dead = attempt_error(after_hand_back, clock.now(), "gave up")
        assert backend.ack([Ack.dead_letter(after_hand_back.ref, dead)]) == [True]
        backend.requeue(JobFilter(ids=frozenset({job_id})))
        current = claim(backend, job_id)
        for old in (stale, after_rescue, after_hand_back):
            assert backend.store_step(old.ref, f"from {old.token}", "1") is False
            assert backend.store_state(old.ref, '{"cursor": 1}') is False
            assert backend.store_progress(old.ref, Progress(1, 2)) is False
        assert backend.store_step(JobRef(job_id, current.token + 1), "future", "1") is False
        assert backend.read_steps(job_id) == JobSteps()
        assert must_get(backend, job_id).progress is None
        assert backend.store_step(current.ref, "now", "1") is True
        assert stored(backend, job_id) == {"now": "1"}

    def test_a_finished_or_waiting_job_takes_no_step(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        running = claim(backend, job_id)
        assert backend.ack([Ack.complete(running.ref, result_text(1))]) == [True]
        assert backend.store_step(running.ref, "late", "1") is False
        assert backend.store_state(running.ref, "1") is False
        waiting = enqueue_one(backend, delay=60.0)
        assert backend.store_step(JobRef(waiting, 0), "early", "1") is False
        assert backend.read_steps(job_id) == JobSteps()
        assert backend.read_steps(waiting) == JobSteps()

    def test_the_checkpoint_is_replaced_by_each_store_and_kept_across_attempts(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        first = claim(backend, job_id)
        assert backend.store_state(first.ref, '{"cursor": 10}')
        clock.advance(1.0)
        assert backend.store_state(first.ref, '{"cursor": 20}')
        state = backend.read_steps(job_id).state
        assert state is not None
        assert state.text.replace(" ", "") == '{"cursor":20}'
        assert state.stored_at == approx_time(clock.now())
        assert backend.ack([Ack.release(first.ref)]) == [True]
        second = claim(backend, job_id)
        assert backend.store_step(second.ref, "cursor", "30")
        steps = backend.read_steps(job_id)
        assert steps.state is not None and steps.state.text.replace(" ", "") == '{"cursor":20}'
        assert stored(backend, job_id) == {"cursor": "30"}  # a step and the checkpoint are apart

    def test_progress_is_stored_in_the_job_with_the_store_time(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        running = claim(backend, job_id)
        assert backend.store_progress(running.ref, Progress(3, 10, "rows ✓"))
        clock.advance(1.5)
        assert backend.store_progress(running.ref, Progress(7.5, None, None))
        progress = must_get(backend, job_id).progress
        assert progress == Progress(7.5, None, None, approx_time(clock.now()))
        [listed] = backend.list_jobs(JobFilter(ids=frozenset({job_id})))
        assert listed.progress == progress
        assert backend.ack([Ack.complete(running.ref, result_text(None))]) == [True]
        finished = must_get(backend, job_id)
        assert finished.state is S.SUCCEEDED
        assert finished.progress == progress  # the last value stays with the job

    def test_steps_are_deleted_with_the_job_by_purge_and_prune(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        purged = enqueue_one(backend, queue="p")
        pruned = enqueue_one(backend, queue="q")
        for job_id, queue in ((purged, "p"), (pruned, "q")):
            running = claim(backend, job_id, queues=[queue])
            assert backend.store_step(running.ref, "a", "1")
            assert backend.store_state(running.ref, "2")
            assert backend.ack([Ack.complete(running.ref, result_text(None))]) == [True]
        kept = enqueue_one(backend, queue="k")
        kept_run = claim(backend, kept, queues=["k"])
        assert backend.store_step(kept_run.ref, "a", "1")
        assert backend.purge(JobFilter(ids=frozenset({purged}))) == 1
        clock.advance(10.0)
        assert backend.prune(Retention(succeeded=5.0)) == 1
        assert backend.get(pruned) is None
        assert backend.read_steps(purged) == JobSteps()
        assert backend.read_steps(pruned) == JobSteps()
        assert stored(backend, kept) == {"a": "1"}

    @pytest.mark.parametrize(
        "name",
        ["", "x" * 201, "bad\udcff", "nul\x00", 7, None],
        ids=["empty", "too-long", "surrogate", "nul", "int", "none"],
    )
    def test_a_bad_step_name_is_refused_before_anything_is_written(
        self, backend: Backend, name: object
    ) -> None:
        job_id = enqueue_one(backend)
        running = claim(backend, job_id)
        with pytest.raises((ValueError, TypeError)):
            backend.store_step(running.ref, name, "1")  # type: ignore[arg-type]
        assert backend.read_steps(job_id) == JobSteps()

    @pytest.mark.parametrize(
        "value",
        ["not json", "NaN", "", '"\udcff"', 1, None, " " * (MAX_STEP_BYTES - 1) + "1 "],
        ids=["text", "nan", "empty", "surrogate", "int", "none", "oversized"],
    )
    def test_a_value_that_is_not_storable_json_is_refused_and_nothing_is_lost(
        self, backend: Backend, value: object
    ) -> None:
        job_id = enqueue_one(backend)
        running = claim(backend, job_id)
        assert backend.store_step(running.ref, "kept", "1")
        with pytest.raises((ValueError, TypeError)):
            backend.store_step(running.ref, "bad", value)  # type: ignore[arg-type]
        with pytest.raises((ValueError, TypeError)):
            backend.store_state(running.ref, value)  # type: ignore[arg-type]
        assert stored(backend, job_id) == {"kept": "1"}
        assert backend.read_steps(job_id).state is None
        assert must_get(backend, job_id).state is S.RUNNING
        assert backend.store_step(running.ref, "after", "2")  # the claim still works

    def test_a_step_of_the_largest_size_is_stored_whole(self, backend: Backend) -> None:
        job_id = enqueue_one(backend)
        running = claim(backend, job_id)
        big = '"' + "é" * ((MAX_STEP_BYTES - 2) // 2) + '"'
        assert len(big.encode()) <= MAX_STEP_BYTES
        assert backend.store_step(running.ref, "big", big)
        value = backend.read_steps(job_id).steps["big"]
        assert value.text == big
        assert value.size == len(big.encode())

    @pytest.mark.parametrize(
        "progress",
        [
            Progress(-1),
            Progress(float("nan")),
            Progress(1, float("inf")),
            Progress(1, 2, "m" * 501),
        ],
        ids=["negative", "nan", "infinite-total", "long-message"],
    )
    def test_bad_progress_is_refused_before_anything_is_written(
        self, backend: Backend, progress: Progress
    ) -> None:
        job_id = enqueue_one(backend)
        running = claim(backend, job_id)
        with pytest.raises((ValueError, TypeError)):
            backend.store_progress(running.ref, progress)
        assert must_get(backend, job_id).progress is None

    def test_two_claims_racing_only_the_holder_stores(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend, max_attempts=5)
        stale = claim(backend, job_id, worker="old")
        clock.advance(LEASE + 1.0)
        backend.rescue()
        current = claim(backend, job_id, worker="new")
        start = threading.Barrier(2)
        results: dict[str, list[bool]] = {}

        def write(label: str, ref: JobRef) -> None:
            start.wait()
            results[label] = [backend.store_step(ref, f"{label}-{i}", str(i)) for i in range(15)]

        threads = [
            threading.Thread(target=write, args=(label, ref))
            for label, ref in (("old", stale.ref), ("new", current.ref))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == {"old": [False] * 15, "new": [True] * 15}
        assert list(stored(backend, job_id)) == [f"new-{i}" for i in range(15)]

    def test_the_async_forms_store_and_read_as_the_sync_ones(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        running = claim(backend, job_id)

        async def scenario() -> JobSteps:
            assert await backend.store_step_async(running.ref, "a", "[1]")
            assert await backend.store_state_async(running.ref, '"s"')
            assert await backend.store_progress_async(running.ref, Progress(1, 4))
            assert not await backend.store_step_async(JobRef(job_id, 99), "b", "1")
            return await backend.read_steps_async(job_id)

        steps = asyncio.run(scenario())
        assert {n: v.text for n, v in steps.steps.items()} == {"a": "[1]"}
        assert steps.state is not None and steps.state.text == '"s"'
        progress = must_get(backend, job_id).progress
        assert progress is not None and (progress.done, progress.total) == (1, 4)

    def test_a_cancelled_job_keeps_its_steps_for_a_rerun(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend)
        running = claim(backend, job_id)
        assert backend.store_step(running.ref, "a", "1")
        error = attempt_error(running, clock.now(), "boom")
        assert backend.ack([Ack.retry(running.ref, error, 60.0)]) == [True]
        backend.cancel(job_id)
        assert must_get(backend, job_id).state is S.CANCELLED
        assert backend.requeue(JobFilter(ids=frozenset({job_id}))) == 1
        assert stored(backend, job_id) == {"a": "1"}
