"""Queue control: a paused queue takes jobs and gives none out until it is resumed."""

from __future__ import annotations

import asyncio
import time

import pytest

from ...backends.base import Ack, Backend
from ...clock import FakeClock
from .helpers import LEASE, Harness, S, claim, enqueue_one, must_get, stats_by_queue


class QueueControlConformance(Harness):
    def test_a_paused_queue_keeps_accepting_jobs_and_no_claim_takes_them_until_resumed(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        assert backend.pause_queue("a") is True
        held = enqueue_one(backend, queue="a")
        other = enqueue_one(backend, queue="b")
        claimed = backend.claim(["a", "b"], "w1", 10, LEASE)
        assert [c.id for c in claimed] == [other]
        assert backend.claim(["a"], "w1", 10, LEASE) == []
        assert must_get(backend, held).state is S.AVAILABLE
        assert backend.resume_queue("a") is True
        assert claim(backend, held, queues=["a"]).attempt == 1

    def test_a_claim_over_several_queues_fills_its_limit_from_the_unpaused_ones(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        for _ in range(3):
            enqueue_one(backend, queue="a", priority=0)  # ahead in claim order, but paused
        wanted = [enqueue_one(backend, queue="b", priority=5) for _ in range(2)]
        backend.pause_queue("a")
        claimed = backend.claim(["a", "b"], "w1", 2, LEASE)
        assert sorted(c.id for c in claimed) == wanted

    def test_pausing_holds_scheduled_jobs_that_become_due_too(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend, queue="a", delay=10.0)
        backend.pause_queue("a")
        clock.advance(11.0)
        assert backend.claim(["a"], "w1", 10, LEASE) == []
        assert backend.claim(["a", "b"], "w1", 10, LEASE) == []
        backend.resume_queue("a")
        claim(backend, job_id, queues=["a"])

    def test_a_pause_holds_jobs_given_back_by_a_retry_or_snooze_while_paused(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        job_id = enqueue_one(backend, queue="a")
        running = claim(backend, job_id, queues=["a"])
        backend.pause_queue("a")  # a running job finishes its attempt as usual
        assert backend.ack([Ack.snooze(running.ref, 0.0)]) == [True]
        assert backend.claim(["a"], "w1", 10, LEASE) == []
        assert must_get(backend, job_id).state is S.SCHEDULED

    def test_pause_and_resume_say_whether_they_changed_anything(self, backend: Backend) -> None:
        assert backend.paused_queues() == []
        assert backend.pause_queue("b") is True
        assert backend.pause_queue("a") is True
        assert backend.pause_queue("a") is False
        assert backend.paused_queues() == ["a", "b"]
        assert backend.resume_queue("a") is True
        assert backend.resume_queue("a") is False
        assert backend.resume_queue("never-paused") is False
        assert backend.paused_queues() == ["b"]

    def test_paused_queues_asked_about_some_queues_names_only_those(self, backend: Backend) -> None:
        enqueue_one(backend, queue="c")
        backend.pause_queue("a")
        backend.pause_queue("c")
        assert backend.paused_queues(["c", "b", "never-used", "c"]) == ["c"]
        assert backend.paused_queues(["b"]) == []
        assert backend.paused_queues([]) == []
        assert backend.paused_queues() == ["a", "c"]

    def test_paused_queues_async_asked_about_some_queues_names_only_those(
        self, backend: Backend
    ) -> None:
        backend.pause_queue("a")
        backend.pause_queue("b")
        assert asyncio.run(backend.paused_queues_async(["b", "z"])) == ["b"]
        assert asyncio.run(backend.paused_queues_async()) == ["a", "b"]

    def test_stats_flag_paused_queues_and_list_one_that_holds_no_job(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        enqueue_one(backend, queue="busy")
        enqueue_one(backend, queue="open")
        backend.pause_queue("busy")
        backend.pause_queue("empty")
        stats = stats_by_queue(backend)
        assert sorted(stats) == ["busy", "empty", "open"]
        assert (stats["busy"].paused, stats["busy"].count(S.AVAILABLE)) == (True, 1)
        assert (stats["empty"].paused, stats["empty"].counts) == (True, {})
        assert stats["open"].paused is False
        backend.resume_queue("busy")
        assert stats_by_queue(backend)["busy"].paused is False

    def test_next_run_at_leaves_out_the_jobs_of_paused_queues(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        now = clock.now()
        enqueue_one(backend, queue="a")
        enqueue_one(backend, queue="b", delay=60.0)
        backend.pause_queue("a")
        assert backend.next_run_at(["a"]) is None
        assert backend.next_run_at(["a", "b"]) == pytest.approx(now + 60.0, abs=1e-3)
        assert backend.next_run_at() == pytest.approx(now + 60.0, abs=1e-3)
        backend.pause_queue("b")
        assert backend.next_run_at() is None
        backend.resume_queue("a")
        assert backend.next_run_at() == pytest.approx(now, abs=1e-3)

    def test_a_claim_over_many_queues_skips_the_paused_ones(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        queues = [f"q{i}" for i in range(70)]
        ids = {q: enqueue_one(backend, queue=q) for q in queues}
        backend.pause_queue("q3")
        backend.pause_queue("q66")
        claimed = backend.claim(queues, "w1", 100, LEASE)
        assert sorted(c.id for c in claimed) == sorted(
            job_id for q, job_id in ids.items() if q not in ("q3", "q66")
        )

    @pytest.mark.parametrize("name", ["", "nul\x00inside", "lone \udcff surrogate", 7])
    def test_a_queue_name_no_engine_can_store_is_refused_and_nothing_changes(
        self, backend: Backend, name: object
    ) -> None:
        for operation in (backend.pause_queue, backend.resume_queue):
            with pytest.raises(ValueError, match="queue name"):
                operation(name)  # type: ignore[arg-type]
        assert backend.paused_queues() == []

    def test_the_async_forms_pause_and_resume_alike(self, backend: Backend) -> None:
        async def scenario() -> tuple[bool, list[str], bool, list[str]]:
            paused = await backend.pause_queue_async("a")
            listed = await backend.paused_queues_async()
            resumed = await backend.resume_queue_async("a")
            return paused, listed, resumed, await backend.paused_queues_async()

        assert asyncio.run(scenario()) == (True, ["a"], True, [])

    @pytest.mark.parametrize("resumed_from", ["another thread", "the waiting thread"])
    def test_resuming_a_queue_wakes_a_worker_waiting_on_it(
        self, backend: Backend, resumed_from: str
    ) -> None:
        timeout = 10.0
        backend.pause_queue("a")
        job_id = enqueue_one(backend, queue="a")

        async def scenario() -> tuple[list[int], float]:
            async def idle_worker() -> list[int]:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + timeout
                while (remaining := deadline - loop.time()) > 0:
                    claimed = await backend.wait_and_claim(["a"], "w1", 10, LEASE, remaining)
                    if claimed:
                        return [c.id for c in claimed]
                return []

            waiter = asyncio.create_task(idle_worker())
            await asyncio.sleep(0.2)  # the worker waits; the paused queue gives it nothing
            assert not waiter.done()
            resumed = time.monotonic()
            if resumed_from == "another thread":
                await asyncio.to_thread(backend.resume_queue, "a")
            else:  # through the connection the waiter itself uses, on engines that have one
                backend.resume_queue("a")
            claimed = await waiter
            return claimed, time.monotonic() - resumed

        claimed, took = asyncio.run(scenario())
        assert claimed == [job_id]
        assert took < timeout / 2
