"""Schedules: a tick becomes a job once, by compare-and-set in the write that enqueues it."""

from __future__ import annotations

import asyncio
import math
import threading

import pytest

from ...backends.base import Backend, JobFilter
from ...backends.schedules import ScheduleFire, TickJob
from ...clock import FakeClock
from ...errors import InvalidTimeError
from .helpers import Harness, S, claim, must_get, new_job

T0 = 1_700_000_000.0


def tick_job(tick: float, name: str = "nightly", queue: str = "default") -> TickJob:
    return TickJob(
        tick,
        new_job("conformance.scheduled", queue=queue, key=f"schedule:{name}:{tick!r}"),
    )


def fire(
    expected: float | None,
    advance_to: float,
    *ticks: float,
    name: str = "nightly",
    queue: str = "default",
) -> ScheduleFire:
    jobs = tuple(tick_job(t, name, queue) for t in ticks)
    return ScheduleFire(name, queue, expected, advance_to, jobs)


class ScheduleConformance(Harness):
    def test_a_first_fire_creates_the_record_without_a_job(self, backend: Backend) -> None:
        done = backend.fire_schedule(fire(None, T0))
        assert (done.applied, done.enqueued, done.last_tick, done.paused) == (True, (), T0, False)
        [record] = backend.list_schedules()
        assert (record.name, record.queue, record.last_tick) == ("nightly", "default", T0)
        assert (record.last_job_id, record.last_job_tick, record.paused) == (None, None, False)
        assert backend.claim(["default"], "w1", 10, 30.0) == []

    def test_a_fire_enqueues_its_tick_job_and_records_it(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        backend.fire_schedule(fire(None, T0))
        done = backend.fire_schedule(fire(T0, T0 + 60, T0 + 60))
        assert done.applied and done.last_tick == T0 + 60
        [entry] = done.enqueued
        assert entry.created
        job = must_get(backend, entry.id)
        assert (job.task, job.state, job.idempotency_key) == (
            "conformance.scheduled",
            S.AVAILABLE,
            f"schedule:nightly:{T0 + 60!r}",
        )
        [record] = backend.list_schedules()
        assert (record.last_tick, record.last_job_id, record.last_job_tick) == (
            T0 + 60,
            entry.id,
            T0 + 60,
        )
        assert record.last_fired_at == pytest.approx(clock.now(), abs=1e-3)
        assert claim(backend, entry.id).id == entry.id

    def test_a_tick_job_keeps_its_fairness_key(self, backend: Backend) -> None:
        backend.fire_schedule(fire(None, T0))
        keyed = tick_job(T0 + 60).job._replace(fairness_key="tenant-7")
        done = backend.fire_schedule(
            ScheduleFire("nightly", "default", T0, T0 + 60, (TickJob(T0 + 60, keyed),))
        )
        [entry] = done.enqueued
        assert must_get(backend, entry.id).fairness_key == "tenant-7"
        assert claim(backend, entry.id).id == entry.id

    def test_a_tick_job_keeps_its_concurrency_key(self, backend: Backend) -> None:
        backend.fire_schedule(fire(None, T0))
        keyed = tick_job(T0 + 60).job._replace(concurrency_key="report:acme")
        done = backend.fire_schedule(
            ScheduleFire("nightly", "default", T0, T0 + 60, (TickJob(T0 + 60, keyed),))
        )
        [entry] = done.enqueued
        assert must_get(backend, entry.id).concurrency_key == "report:acme"

    def test_a_tick_job_keeps_its_unique_key(self, backend: Backend) -> None:
        backend.fire_schedule(fire(None, T0))
        unique = tick_job(T0 + 60).job._replace(
            unique_key="sync-7", unique_states=frozenset({S.SCHEDULED, S.AVAILABLE, S.RUNNING})
        )
        done = backend.fire_schedule(
            ScheduleFire("nightly", "default", T0, T0 + 60, (TickJob(T0 + 60, unique),))
        )
        [entry] = done.enqueued
        assert must_get(backend, entry.id).unique_key == "sync-7"
        [again] = backend.enqueue([new_job("conformance.other", unique_key="sync-7")])
        assert (again.id, again.created) == (entry.id, False)

    def test_tick_jobs_whose_unique_key_is_held_make_no_job(self, backend: Backend) -> None:
        """A held key (by a stored job, or by an earlier tick's job of the same fire, as in a
        catch-up of missed ticks) gives that job, as an enqueue would."""
        states = frozenset({S.SCHEDULED, S.AVAILABLE, S.RUNNING})
        [holder] = backend.enqueue([new_job("conformance.other", unique_key="held")])
        backend.fire_schedule(fire(None, T0))
        jobs = tuple(
            TickJob(t, tick_job(t).job._replace(unique_key=key, unique_states=states))
            for t, key in ((T0 + 60, "held"), (T0 + 120, "fresh"), (T0 + 180, "fresh"))
        )
        done = backend.fire_schedule(ScheduleFire("nightly", "default", T0, T0 + 180, jobs))
        [first, second, third] = done.enqueued
        assert (first.id, first.created) == (holder.id, False)
        assert second.created and (third.id, third.created) == (second.id, False)
        assert len(backend.list_jobs(JobFilter())) == 2

    def test_two_fires_of_one_tick_make_one_job(self, backend: Backend) -> None:
        backend.fire_schedule(fire(None, T0))
        first = backend.fire_schedule(fire(T0, T0 + 60, T0 + 60))
        second = backend.fire_schedule(fire(T0, T0 + 60, T0 + 60))
        assert first.applied and not second.applied
        assert second.enqueued == () and second.last_tick == T0 + 60
        assert len(backend.claim(["default"], "w1", 10, 30.0)) == 1

    def test_a_fire_from_a_stale_read_is_refused_even_for_a_later_tick(
        self, backend: Backend
    ) -> None:
        """Two schedulers read T0; one fires T0+60, the other (later) T0+60 and T0+120 with
        catch-up: the second would duplicate T0+60, so it must be refused whole."""
        backend.fire_schedule(fire(None, T0))
        assert backend.fire_schedule(fire(T0, T0 + 60, T0 + 60)).applied
        late = backend.fire_schedule(fire(T0, T0 + 120, T0 + 60, T0 + 120))
        assert not late.applied and late.last_tick == T0 + 60
        assert len(backend.claim(["default"], "w1", 10, 30.0)) == 1

    def test_a_stale_tick_is_refused(self, backend: Backend) -> None:
        backend.fire_schedule(fire(None, T0))
        backend.fire_schedule(fire(T0, T0 + 120, T0 + 120))
        stale = backend.fire_schedule(fire(T0 + 30, T0 + 60, T0 + 60))
        assert not stale.applied and stale.last_tick == T0 + 120
        [record] = backend.list_schedules()
        assert record.last_tick == T0 + 120

    def test_a_second_first_fire_is_refused(self, backend: Backend) -> None:
        assert backend.fire_schedule(fire(None, T0)).applied
        again = backend.fire_schedule(fire(None, T0 + 5))
        assert not again.applied and again.last_tick == T0

    def test_catch_up_fires_several_ticks_in_one_write(self, backend: Backend) -> None:
        backend.fire_schedule(fire(None, T0))
        done = backend.fire_schedule(fire(T0, T0 + 180, T0 + 60, T0 + 120, T0 + 180))
        assert done.applied and len(done.enqueued) == 3
        assert len({e.id for e in done.enqueued}) == 3
        [record] = backend.list_schedules()
        assert (record.last_job_id, record.last_job_tick) == (done.enqueued[-1].id, T0 + 180)

    def test_advancing_without_a_job_keeps_the_last_job(self, backend: Backend) -> None:
        backend.fire_schedule(fire(None, T0))
        done = backend.fire_schedule(fire(T0, T0 + 60, T0 + 60))
        assert backend.fire_schedule(fire(T0 + 60, T0 + 600)).applied
        [record] = backend.list_schedules()
        assert (record.last_tick, record.last_job_id) == (T0 + 600, done.enqueued[0].id)

    def test_a_paused_schedule_refuses_every_fire(self, backend: Backend) -> None:
        backend.fire_schedule(fire(None, T0))
        paused = backend.pause_schedule("nightly", "default")
        assert paused.paused and paused.last_tick == T0
        done = backend.fire_schedule(fire(T0, T0 + 60, T0 + 60))
        assert (done.applied, done.paused) == (False, True)
        assert backend.claim(["default"], "w1", 10, 30.0) == []

    def test_pausing_a_schedule_never_fired_keeps_it_from_starting(self, backend: Backend) -> None:
        record = backend.pause_schedule("nightly", "default")
        assert (record.paused, record.last_tick) == (True, None)
        done = backend.fire_schedule(fire(None, T0))
        assert (done.applied, done.paused) == (False, True)

    def test_resume_skips_the_ticks_of_the_pause(self, backend: Backend, clock: FakeClock) -> None:
        backend.fire_schedule(fire(None, clock.now()))
        backend.pause_schedule("nightly", "default")
        clock.advance(3600.0)
        resumed = backend.resume_schedule("nightly", "default")
        assert not resumed.paused
        assert resumed.last_tick == pytest.approx(clock.now(), abs=1e-6)
        assert resumed.last_tick is not None
        stale = backend.fire_schedule(fire(T0, T0 + 60, T0 + 60))
        assert not stale.applied
        assert backend.fire_schedule(
            fire(resumed.last_tick, clock.now() + 60, clock.now() + 60)
        ).applied

    def test_a_tick_job_whose_key_is_stored_is_not_enqueued_twice(self, backend: Backend) -> None:
        """The idempotency key is the second safety net: a lost record cannot double a tick."""
        [stored] = backend.enqueue([tick_job(T0 + 60).job])
        backend.fire_schedule(fire(None, T0))
        done = backend.fire_schedule(fire(T0, T0 + 60, T0 + 60))
        assert done.applied
        assert [(e.id, e.created) for e in done.enqueued] == [(stored.id, False)]

    def test_schedules_are_listed_by_name(self, backend: Backend) -> None:
        backend.fire_schedule(fire(None, T0, name="b-digest", queue="email"))
        backend.fire_schedule(fire(None, T0, name="a-report"))
        assert [(r.name, r.queue) for r in backend.list_schedules()] == [
            ("a-report", "default"),
            ("b-digest", "email"),
        ]

    def test_racing_fires_of_one_tick_make_one_job(self, backend: Backend) -> None:
        backend.fire_schedule(fire(None, T0))
        results = []
        start = threading.Barrier(4)

        def race() -> None:
            start.wait()
            results.append(backend.fire_schedule(fire(T0, T0 + 60, T0 + 60)).applied)

        threads = [threading.Thread(target=race) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(results) == [False, False, False, True]
        assert len(backend.claim(["default"], "w1", 10, 30.0)) == 1

    def test_racing_async_fires_of_one_tick_make_one_job(self, backend: Backend) -> None:
        backend.fire_schedule(fire(None, T0))

        async def race() -> list[bool]:
            done = await asyncio.gather(
                *(backend.fire_schedule_async(fire(T0, T0 + 60, T0 + 60)) for _ in range(4))
            )
            return [d.applied for d in done]

        assert sorted(asyncio.run(race())) == [False, False, False, True]
        assert len(backend.claim(["default"], "w1", 10, 30.0)) == 1

    @pytest.mark.parametrize(
        "bad",
        [
            pytest.param(lambda: fire(T0, T0), id="advance-not-later"),
            pytest.param(lambda: fire(T0, T0 + 60, T0 + 120), id="tick-after-advance"),
            pytest.param(lambda: fire(T0, T0 + 60, T0), id="tick-not-after-expected"),
            pytest.param(lambda: fire(T0, T0 + 120, T0 + 60, T0 + 60), id="ticks-not-increasing"),
            pytest.param(lambda: fire(T0, math.nan), id="nan-advance"),
            pytest.param(lambda: fire(math.inf, T0), id="infinite-expected"),
            pytest.param(lambda: fire(None, T0, name=""), id="empty-name"),
            pytest.param(
                lambda: ScheduleFire("n", "default", None, T0, (tick_job(T0, queue="other"),)),
                id="job-of-another-queue",
            ),
        ],
    )
    def test_a_bad_fire_is_refused_before_anything_is_written(
        self, backend: Backend, bad: object
    ) -> None:
        with pytest.raises((ValueError, InvalidTimeError)):
            backend.fire_schedule(bad())  # type: ignore[operator]
        assert backend.list_schedules() == []
        assert backend.stats() == []

    @pytest.mark.parametrize(("name", "queue"), [("", "default"), ("nightly", ""), ("a\nb", "q")])
    def test_pause_or_resume_with_a_bad_name_is_refused_before_anything_is_written(
        self, backend: Backend, name: str, queue: str
    ) -> None:
        with pytest.raises(ValueError, match=r"schedule|queue"):
            backend.pause_schedule(name, queue)
        with pytest.raises(ValueError, match=r"schedule|queue"):
            backend.resume_schedule(name, queue)
        assert backend.list_schedules() == []

    def test_the_async_forms_do_what_the_sync_ones_do(self, backend: Backend) -> None:
        async def scenario() -> None:
            assert (await backend.fire_schedule_async(fire(None, T0))).applied
            assert (await backend.pause_schedule_async("nightly", "default")).paused
            assert not (await backend.resume_schedule_async("nightly", "default")).paused
            [record] = await backend.list_schedules_async()
            assert record.name == "nightly" and not record.paused

        asyncio.run(scenario())
