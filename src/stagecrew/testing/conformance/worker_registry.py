"""The worker registry: each worker's record of itself, stamped by the store's clock."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from ...backends.base import Backend
from ...backends.worker_registry import WorkerBeat, WorkerInfo, WorkerStatus
from ...clock import FakeClock
from .helpers import Harness, approx_time


def info(busy: int = 0, queues: tuple[str, ...] = ("default", "email")) -> WorkerInfo:
    return WorkerInfo(
        host="web-1", pid=4242, queues=queues, concurrency=10, busy=busy, version="1.2.3"
    )


def beat(worker_id: str = "w1", ttl: float = 30.0, **fields: object) -> WorkerBeat:
    stopped = bool(fields.pop("stopped", False))
    return WorkerBeat(worker_id, info(**fields), ttl, stopped)  # type: ignore[arg-type]


class WorkerRegistryConformance(Harness):
    def test_an_empty_registry_lists_no_worker_at_the_stores_now(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        registry = backend.list_workers()
        assert registry.workers == ()
        assert registry.now == approx_time(clock.now())

    def test_a_first_beat_records_the_worker_as_it_described_itself(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        backend.record_worker(beat(busy=3))
        [worker] = backend.list_workers().workers
        assert (worker.id, worker.info) == ("w1", info(busy=3))
        assert worker.started_at == approx_time(clock.now())
        assert worker.seen_at == approx_time(clock.now())
        assert worker.alive_until == approx_time(clock.now() + 30.0)
        assert worker.stopped_at is None
        assert worker.status(clock.now()) is WorkerStatus.ALIVE

    def test_a_later_beat_updates_what_it_says_and_when_it_was_seen_not_when_it_started(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        started = clock.now()
        backend.record_worker(beat(busy=1))
        clock.advance(10)
        backend.record_worker(beat(busy=7, ttl=5.0))
        [worker] = backend.list_workers().workers
        assert worker.info.busy == 7
        assert worker.started_at == approx_time(started)
        assert worker.seen_at == approx_time(clock.now())
        assert worker.alive_until == approx_time(clock.now() + 5.0)

    def test_a_worker_silent_past_its_ttl_reads_as_lost(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        backend.record_worker(beat(ttl=30.0))
        clock.advance(29)
        registry = backend.list_workers()
        assert [w.id for w in registry.alive()] == ["w1"]
        clock.advance(2)
        registry = backend.list_workers()
        assert registry.alive() == []
        assert registry.workers[0].status(registry.now) is WorkerStatus.LOST

    def test_a_stopping_beat_marks_it_stopped_and_a_late_beat_does_not_revive_it(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        backend.record_worker(beat())
        clock.advance(3)
        stopped_at = clock.now()
        backend.record_worker(beat(busy=0, stopped=True))
        clock.advance(1)
        backend.record_worker(beat(busy=2))  # a beat that was on its way
        registry = backend.list_workers()
        [worker] = registry.workers
        assert worker.stopped_at == approx_time(stopped_at)
        assert worker.alive_until == approx_time(stopped_at)
        assert worker.seen_at == approx_time(clock.now())
        assert worker.status(registry.now) is WorkerStatus.STOPPED
        assert registry.alive() == []

    def test_workers_are_listed_by_id_and_the_served_queues_are_the_live_ones(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        backend.record_worker(beat("w3", queues=("reports",)))
        backend.record_worker(beat("w1", queues=("default",)))
        backend.record_worker(beat("w2", ttl=1.0, queues=("email",)))
        backend.record_worker(beat("w4", queues=("images",), stopped=True))
        clock.advance(2)
        registry = backend.list_workers()
        assert [w.id for w in registry.workers] == ["w1", "w2", "w3", "w4"]
        assert registry.served_queues() == {"default", "reports"}

    def test_text_of_any_script_survives_the_round_trip(self, backend: Backend) -> None:
        odd = dataclasses.replace(info(), host="hôte-ß", queues=("courriel é", "邮件"))
        backend.record_worker(WorkerBeat("wörker:1", odd, 30.0))
        [worker] = backend.list_workers().workers
        assert (worker.id, worker.info) == ("wörker:1", odd)

    def test_pruning_deletes_only_records_last_seen_before_the_horizon(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        backend.record_worker(beat("old", stopped=True))
        clock.advance(100)
        backend.record_worker(beat("recent"))
        clock.advance(50)
        assert backend.prune_workers(keep=120.0) == 1
        assert [w.id for w in backend.list_workers().workers] == ["recent"]
        assert backend.prune_workers(keep=120.0) == 0

    def test_pruning_stops_at_its_limit(self, backend: Backend, clock: FakeClock) -> None:
        for n in range(5):
            backend.record_worker(beat(f"w{n}"))
        clock.advance(10)
        assert backend.prune_workers(keep=5.0, limit=2) == 2
        assert len(backend.list_workers().workers) == 3

    @pytest.mark.parametrize(
        "bad",
        [
            WorkerBeat("", info(), 30.0),
            WorkerBeat("w\n1", info(), 30.0),
            WorkerBeat("w\ud800", info(), 30.0),
            WorkerBeat("w1", info(), float("nan")),
            WorkerBeat("w1", info(), float("inf")),
            WorkerBeat("w1", info(), 0.0),
            WorkerBeat("w1", dataclasses.replace(info(), host="h\udcff"), 30.0),
            WorkerBeat("w1", dataclasses.replace(info(), queues=("",)), 30.0),
            WorkerBeat("w1", dataclasses.replace(info(), busy=-1), 30.0),
            WorkerBeat("w1", dataclasses.replace(info(), concurrency=0), 30.0),
        ],
        ids=[
            "empty-id",
            "control-char",
            "id-not-utf8",
            "nan-ttl",
            "inf-ttl",
            "zero-ttl",
            "host-not-utf8",
            "empty-queue",
            "negative-busy",
            "no-slots",
        ],
    )
    def test_a_beat_the_store_could_not_keep_is_refused_and_writes_nothing(
        self, backend: Backend, bad: WorkerBeat
    ) -> None:
        with pytest.raises(ValueError):
            backend.record_worker(bad)
        assert backend.list_workers().workers == ()

    def test_bad_prune_horizons_are_refused(self, backend: Backend) -> None:
        for keep in (float("nan"), float("inf"), -1.0):
            with pytest.raises(ValueError):
                backend.prune_workers(keep=keep)

    def test_the_async_operations_do_the_same(self, backend: Backend, clock: FakeClock) -> None:
        async def scenario() -> None:
            await backend.record_worker_async(beat("a"))
            clock.advance(10)
            registry = await backend.list_workers_async()
            assert [w.id for w in registry.workers] == ["a"]
            assert await backend.prune_workers_async(keep=5.0) == 1

        asyncio.run(scenario())
