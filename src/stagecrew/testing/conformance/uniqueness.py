"""Unique keys by state, and the idempotency key's window after its job finished."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from ...backends.base import Ack, AckKind, Backend, JobFilter
from ...backends.unique import LIVE_STATES
from ...clock import FakeClock
from .helpers import (
    Harness,
    S,
    attempt_error,
    claim,
    enqueue_one,
    ids_of,
    job_in_state,
    must_get,
    new_job,
)

WITH_SUCCEEDED = LIVE_STATES | {S.SUCCEEDED}
DAY = 86_400.0


class UniquenessConformance(Harness):
    # -- unique keys ---------------------------------------------------------------------
    @pytest.mark.parametrize("state", [S.SCHEDULED, S.AVAILABLE, S.RUNNING])
    def test_a_unique_key_held_by_a_waiting_or_running_job_makes_no_second_job(
        self, backend: Backend, clock: FakeClock, state: S
    ) -> None:
        holder = job_in_state(backend, clock, state, unique_key="sync-7")
        [again] = backend.enqueue([new_job("other", unique_key="sync-7")])
        assert (again.id, again.created) == (holder, False)
        assert ids_of(backend.list_jobs(JobFilter())) == [holder]
        job = must_get(backend, holder)
        assert (job.unique_key, job.unique_states) == ("sync-7", LIVE_STATES)

    @pytest.mark.parametrize("state", [S.SUCCEEDED, S.DEAD, S.CANCELLED])
    def test_a_unique_key_is_free_again_once_its_job_left_the_unique_states(
        self, backend: Backend, clock: FakeClock, state: S
    ) -> None:
        done = job_in_state(backend, clock, state, unique_key="sync-7")
        [again] = backend.enqueue([new_job(unique_key="sync-7")])
        assert again.created is True
        assert again.id != done
        [third] = backend.enqueue([new_job(unique_key="sync-7")])
        assert (third.id, third.created) == (again.id, False)

    def test_a_finished_state_among_the_unique_states_keeps_the_key_held(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        done = job_in_state(
            backend, clock, S.SUCCEEDED, unique_key="k", unique_states=WITH_SUCCEEDED
        )
        [again] = backend.enqueue([new_job(unique_key="k")])
        assert (again.id, again.created) == (done, False)
        assert backend.purge(JobFilter(ids=frozenset({done}))) == 1
        [fresh] = backend.enqueue([new_job(unique_key="k")])
        assert fresh.created is True

    def test_a_retried_or_handed_back_job_keeps_its_key_held(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend, unique_key="k")
        claimed = claim(backend, job_id)
        error = attempt_error(claimed, clock.now(), "again")
        assert backend.ack([Ack(claimed.ref, AckKind.RETRY, error=error, delay=60.0)]) == [True]
        assert backend.enqueue([new_job(unique_key="k")])[0].id == job_id
        clock.advance(61.0)
        again = claim(backend, job_id)
        assert backend.ack([Ack.release(again.ref)]) == [True]
        assert backend.enqueue([new_job(unique_key="k")])[0].id == job_id
        assert len(backend.list_jobs(JobFilter())) == 1

    def test_a_dead_job_re_run_while_another_job_holds_its_key_stays_dead(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        """The one move into a held state from one that did not hold: the requeue skips it,
        so that at most one job holds the key; once the holder is done, the re-run works."""
        dead = job_in_state(backend, clock, S.DEAD, unique_key="k")
        [holder] = backend.enqueue([new_job(unique_key="k")])
        assert holder.created is True
        assert backend.requeue(JobFilter(ids=frozenset({dead}))) == 0
        assert must_get(backend, dead).state is S.DEAD
        done = claim(backend, holder.id)
        assert backend.ack([Ack.complete(done.ref)]) == [True]
        assert backend.requeue(JobFilter(ids=frozenset({dead}))) == 1
        assert must_get(backend, dead).state is S.AVAILABLE
        [again] = backend.enqueue([new_job(unique_key="k")])
        assert (again.id, again.created) == (dead, False)

    def test_re_running_two_dead_jobs_of_one_key_re_runs_one_and_the_others_of_the_call(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        first = job_in_state(backend, clock, S.DEAD, unique_key="k")
        second = job_in_state(backend, clock, S.CANCELLED, unique_key="k")
        other = job_in_state(backend, clock, S.DEAD, unique_key="j")
        plain = job_in_state(backend, clock, S.DEAD)
        assert backend.requeue(JobFilter(states=frozenset({S.DEAD, S.CANCELLED}))) == 3
        before = {first: S.DEAD, second: S.CANCELLED}
        now = {job_id: must_get(backend, job_id).state for job_id in before}
        [rerun] = [job_id for job_id, state in now.items() if state is S.AVAILABLE]
        [left] = [job_id for job_id in before if job_id != rerun]
        assert now[left] is before[left]
        assert must_get(backend, other).state is must_get(backend, plain).state is S.AVAILABLE
        [again] = backend.enqueue([new_job(unique_key="k")])
        assert (again.id, again.created) == (rerun, False)

    def test_a_dead_job_holding_its_key_in_dead_is_re_run(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        states = LIVE_STATES | {S.DEAD}
        dead = job_in_state(backend, clock, S.DEAD, unique_key="k", unique_states=states)
        assert backend.enqueue([new_job(unique_key="k")])[0].id == dead
        assert backend.requeue(JobFilter(ids=frozenset({dead}))) == 1
        assert backend.enqueue([new_job(unique_key="k")])[0].id == dead

    def test_enqueue_many_with_one_unique_key_twice_stores_it_once(self, backend: Backend) -> None:
        entries = backend.enqueue(
            [
                new_job("a", unique_key="k"),
                new_job("b"),
                new_job("c", unique_key="k"),
                new_job("d", unique_key="j", queue="other"),
                new_job("e", unique_key="j", queue="other"),
            ]
        )
        assert [e.created for e in entries] == [True, True, False, True, False]
        assert entries[2].id == entries[0].id
        assert entries[4].id == entries[3].id
        assert sorted(j.task for j in backend.list_jobs(JobFilter())) == ["a", "b", "d"]

    def test_a_batch_whose_unique_key_is_held_gets_the_holder(self, backend: Backend) -> None:
        [holder] = backend.enqueue([new_job("a", unique_key="k")])
        entries = backend.enqueue([new_job("b"), new_job("c", unique_key="k"), new_job("d")])
        assert [e.created for e in entries] == [True, False, True]
        assert entries[1].id == holder.id

    # A batch gives each job what enqueuing the jobs one by one, in order, would give.
    def test_a_batch_job_after_an_idempotent_match_with_its_unique_key_is_a_new_job(
        self, backend: Backend
    ) -> None:
        [plain] = backend.enqueue([new_job("plain", key="k1")])
        entries = backend.enqueue(
            [new_job("a", key="k1", unique_key="u"), new_job("b", key="k2", unique_key="u")]
        )
        assert (entries[0].id, entries[0].created) == (plain.id, False)
        assert entries[1].created is True  # the plain job does not hold "u"
        [c] = backend.enqueue([new_job("c", unique_key="u")])
        assert (c.id, c.created) == (entries[1].id, False)

    def test_a_batch_job_without_a_key_after_an_idempotent_match_is_a_new_job(
        self, backend: Backend
    ) -> None:
        [plain] = backend.enqueue([new_job("plain", key="k1")])
        entries = backend.enqueue(
            [new_job("a", key="k1", unique_key="u"), new_job("b", unique_key="u")]
        )
        assert (entries[0].id, entries[0].created) == (plain.id, False)
        assert entries[1].created is True
        assert sorted(j.task for j in backend.list_jobs(JobFilter())) == ["b", "plain"]

    def test_a_batch_job_whose_own_idempotency_key_is_stored_gets_that_job(
        self, backend: Backend
    ) -> None:
        [keyed] = backend.enqueue([new_job("keyed", key="k2")])
        entries = backend.enqueue(
            [new_job("a", unique_key="u"), new_job("b", key="k2", unique_key="u")]
        )
        assert entries[0].created is True
        assert (entries[1].id, entries[1].created) == (keyed.id, False)

    def test_a_batch_job_with_another_key_and_a_repeated_unique_key_gets_the_first(
        self, backend: Backend
    ) -> None:
        entries = backend.enqueue(
            [new_job("a", key="k1", unique_key="u"), new_job("b", key="k2", unique_key="u")]
        )
        assert [e.created for e in entries] == [True, False]
        assert entries[1].id == entries[0].id
        [again] = backend.enqueue([new_job("c", key="k2")])
        assert again.created is True  # "b" made no job, so "k2" names none

    def test_an_idempotency_key_of_a_new_batch_job_with_a_unique_key_names_it_later(
        self, backend: Backend
    ) -> None:
        entries = backend.enqueue(
            [new_job("a", key="k", unique_key="u"), new_job("b", key="k"), new_job("c", key="k")]
        )
        assert [e.created for e in entries] == [True, False, False]
        assert entries[1].id == entries[2].id == entries[0].id
        assert [j.task for j in backend.list_jobs(JobFilter())] == ["a"]

    def test_an_idempotency_key_of_a_batch_job_that_met_a_unique_holder_is_not_taken(
        self, backend: Backend
    ) -> None:
        [holder] = backend.enqueue([new_job("holder", unique_key="u")])
        entries = backend.enqueue([new_job("a", key="k", unique_key="u"), new_job("b", key="k")])
        assert (entries[0].id, entries[0].created) == (holder.id, False)
        assert entries[1].created is True
        assert must_get(backend, entries[1].id).idempotency_key == "k"

    def test_unique_keys_and_idempotency_keys_are_apart(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        [by_key] = backend.enqueue([new_job(key="same")])
        [by_unique] = backend.enqueue([new_job(unique_key="same")])
        assert by_unique.created is True
        assert by_unique.id != by_key.id
        [both] = backend.enqueue([new_job(key="fresh", unique_key="same")])
        assert (both.id, both.created) == (by_unique.id, False)
        [by_idempotency] = backend.enqueue([new_job(key="same", unique_key="other")])
        assert (by_idempotency.id, by_idempotency.created) == (by_key.id, False)

    # -- across queues: store-wide, but per queue where the engine keeps its keys per queue
    # (Redis Cluster's layout, `Backend._keys_per_queue`)
    @pytest.mark.parametrize("state", [S.AVAILABLE, S.RUNNING])
    def test_a_unique_key_held_in_one_queue_is_held_in_another(
        self, backend: Backend, clock: FakeClock, state: S
    ) -> None:
        holder = job_in_state(backend, clock, state, queue="a", unique_key="u")
        [other] = backend.enqueue([new_job(queue="b", unique_key="u")])
        if backend._keys_per_queue:
            assert other.created is True
        else:
            assert (other.id, other.created) == (holder, False)
            assert ids_of(backend.list_jobs(JobFilter())) == [holder]

    def test_a_unique_key_freed_in_one_queue_is_free_in_another(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        done = job_in_state(backend, clock, S.SUCCEEDED, queue="a", unique_key="u")
        [other] = backend.enqueue([new_job(queue="b", unique_key="u")])
        assert other.created is True
        assert other.id != done
        assert backend.purge(JobFilter(ids=frozenset({done}))) == 1
        [again] = backend.enqueue([new_job(queue="b", unique_key="u")])
        assert (again.id, again.created) == (other.id, False)

    def test_a_dead_job_whose_key_a_job_of_another_queue_holds_stays_dead(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        dead = job_in_state(backend, clock, S.DEAD, queue="a", unique_key="u")
        [holder] = backend.enqueue([new_job(queue="b", unique_key="u")])
        requeued = backend.requeue(JobFilter(ids=frozenset({dead})))
        if backend._keys_per_queue:
            assert requeued == 1
        else:
            assert requeued == 0
            assert must_get(backend, dead).state is S.DEAD
            assert must_get(backend, holder.id).state is S.AVAILABLE

    def test_an_idempotency_key_of_one_queue_names_its_job_from_another(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        done = job_in_state(backend, clock, S.SUCCEEDED, queue="a", key="k")
        [within] = backend.enqueue([new_job(queue="b", key="k")])
        if backend._keys_per_queue:
            assert within.created is True
            return
        assert (within.id, within.created) == (done, False)
        clock.advance(DAY + 1.0)
        [after] = backend.enqueue([new_job(queue="b", key="k")])
        assert after.created is True  # the window passed, measured on the job in queue "a"
        assert must_get(backend, done).idempotency_key is None
        [again] = backend.enqueue([new_job(queue="a", key="k")])
        assert (again.id, again.created) == (after.id, False)
        backend.cancel(after.id)
        assert backend.purge(JobFilter(ids=frozenset({after.id}))) == 1
        assert backend.enqueue([new_job(queue="a", key="k")])[0].created is True

    @pytest.mark.parametrize(
        "fields",
        [
            pytest.param({"unique_key": ""}, id="empty"),
            pytest.param({"unique_key": "k" * 201}, id="too-long"),
            pytest.param({"unique_key": "a\x00b"}, id="nul"),
            pytest.param({"unique_key": "\udcff"}, id="not-utf8"),
            pytest.param({"unique_key": 7}, id="not-text"),
            pytest.param(
                {"unique_key": "k", "unique_states": frozenset({S.AVAILABLE, S.RUNNING})},
                id="without-scheduled",
            ),
            pytest.param({"unique_states": frozenset(LIVE_STATES)}, id="states-without-key"),
            pytest.param({"unique_key": "k", "unique_states": ("scheduled",)}, id="not-a-set"),
        ],
    )
    def test_enqueue_refuses_a_bad_unique_key_and_writes_nothing(
        self, backend: Backend, fields: dict[str, object]
    ) -> None:
        base = new_job()
        changes: dict[str, Any] = {
            "unique_states": LIVE_STATES if "unique_key" in fields else frozenset(),
            **fields,
        }
        bad = base._replace(**changes)
        with pytest.raises(ValueError, match="unique"):
            backend.enqueue([new_job("good", unique_key="good"), bad])
        assert backend.list_jobs(JobFilter()) == []
        assert backend.enqueue([new_job(unique_key="good")])[0].created is True

    def test_concurrent_enqueues_of_one_unique_key_make_one_job(self, backend: Backend) -> None:
        threads, rounds = 6, 4
        start = threading.Barrier(threads)
        ids: list[int] = []
        failures: list[BaseException] = []

        def enqueue() -> None:
            try:
                start.wait(timeout=30)
                for _ in range(rounds):
                    ids.extend(e.id for e in backend.enqueue([new_job(unique_key="race")]))
            except BaseException as exc:  # reported below, with the thread's failure
                failures.append(exc)

        workers = [threading.Thread(target=enqueue) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        assert failures == []
        assert len(ids) == threads * rounds
        assert len(set(ids)) == 1
        assert len(backend.list_jobs(JobFilter())) == 1

    # -- the idempotency window ------------------------------------------------------------
    def test_an_idempotency_key_names_its_waiting_job_however_long_it_waits(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        [first] = backend.enqueue([new_job(key="k", window=60.0)])
        clock.advance(10 * DAY)
        [again] = backend.enqueue([new_job(key="k", window=60.0)])
        assert (again.id, again.created) == (first.id, False)

    def test_an_idempotency_key_names_its_finished_job_within_the_window(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        done = job_in_state(backend, clock, S.SUCCEEDED, key="k")
        clock.advance(DAY - 60.0)
        [again] = backend.enqueue([new_job(key="k")])
        assert (again.id, again.created) == (done, False)

    @pytest.mark.parametrize("state", [S.SUCCEEDED, S.DEAD, S.CANCELLED])
    def test_an_idempotency_key_makes_a_new_job_after_the_window(
        self, backend: Backend, clock: FakeClock, state: S
    ) -> None:
        done = job_in_state(backend, clock, state, key="k")
        clock.advance(DAY + 1.0)
        [again] = backend.enqueue([new_job("next", key="k")])
        assert again.created is True
        assert again.id != done
        assert must_get(backend, again.id).idempotency_key == "k"
        assert must_get(backend, done).idempotency_key is None  # it gave its key up
        [third] = backend.enqueue([new_job(key="k")])
        assert (third.id, third.created) == (again.id, False)

    def test_a_key_released_by_an_enqueue_that_made_no_job_is_free_after_a_purge(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        done = job_in_state(backend, clock, S.SUCCEEDED, key="k")
        [holder] = backend.enqueue([new_job(unique_key="u")])
        clock.advance(DAY + 1.0)
        # the window passed, so "k" is released, but "u" is held: no job is made
        [matched] = backend.enqueue([new_job(key="k", unique_key="u")])
        assert (matched.id, matched.created) == (holder.id, False)
        assert backend.purge(JobFilter(ids=frozenset({done}))) == 1
        [fresh] = backend.enqueue([new_job(key="k")])
        assert fresh.created is True  # no index entry names the purged job

    def test_the_idempotency_window_is_the_enqueues_own(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        done = job_in_state(backend, clock, S.SUCCEEDED, key="k")
        clock.advance(120.0)
        [kept] = backend.enqueue([new_job(key="k", window=None)])
        assert (kept.id, kept.created) == (done, False)
        [fresh] = backend.enqueue([new_job(key="k", window=60.0)])
        assert fresh.created is True

    def test_an_idempotency_key_past_its_window_in_a_batch_makes_one_new_job(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        done = job_in_state(backend, clock, S.SUCCEEDED, key="k")
        clock.advance(DAY + 1.0)
        entries = backend.enqueue([new_job(key="k"), new_job("b"), new_job(key="k")])
        assert [e.created for e in entries] == [True, True, False]
        assert entries[2].id == entries[0].id != done
