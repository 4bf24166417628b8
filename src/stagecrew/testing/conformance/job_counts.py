"""The history of finished attempts: counts added to the store's minute buckets."""

from __future__ import annotations

import asyncio
import threading

import pytest

from ...backends.base import Backend
from ...backends.job_counts import BUCKET_SECONDS, CountBucket, CountKey
from ...clock import FakeClock
from .helpers import Harness, approx_time

OK = CountKey("email", "send", "succeeded")
DEAD = CountKey("email", "send", "dead")
REPORT = CountKey("reports", "build", "succeeded")


def at_minute_start(clock: FakeClock) -> float:
    """Move the clock to 1 s into the next minute; that minute's start."""
    start = (clock.now() // BUCKET_SECONDS + 1) * BUCKET_SECONDS
    clock.advance(start + 1.0 - clock.now())
    return start


class JobCountConformance(Harness):
    def test_nothing_counted_reads_as_no_bucket_at_the_stores_now(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        history = backend.read_counts()
        assert history.buckets == ()
        assert history.now == approx_time(clock.now())

    def test_counts_of_one_minute_add_up_in_its_bucket(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        start = at_minute_start(clock)
        backend.add_counts({OK: 3, DEAD: 1})
        clock.advance(30)
        backend.add_counts({OK: 2, REPORT: 5})
        history = backend.read_counts(3600)
        assert [(b.start, b.key, b.n) for b in history.buckets] == [
            (approx_time(start), DEAD, 1),
            (approx_time(start), OK, 5),
            (approx_time(start), REPORT, 5),
        ]
        assert history.totals(start) == {"succeeded": 10, "dead": 1}
        assert history.totals(start, queue="email") == {"succeeded": 5, "dead": 1}

    def test_the_next_minute_starts_a_bucket_of_its_own(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        start = at_minute_start(clock)
        backend.add_counts({OK: 1})
        clock.advance(BUCKET_SECONDS)
        backend.add_counts({OK: 4})
        buckets = backend.read_counts(3600).buckets
        assert [(b.start, b.n) for b in buckets] == [
            (approx_time(start), 1),
            (approx_time(start + BUCKET_SECONDS), 4),
        ]
        recent = backend.read_counts(BUCKET_SECONDS / 2).buckets
        assert [b.n for b in recent] == [4]

    def test_writers_racing_on_one_bucket_lose_no_count(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        at_minute_start(clock)

        def add() -> None:
            for _ in range(25):
                backend.add_counts({OK: 1, DEAD: 2})

        threads = [threading.Thread(target=add) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert backend.read_counts().totals(0.0) == {"succeeded": 100, "dead": 200}

    def test_names_of_any_script_survive_the_round_trip(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        odd = CountKey("courriel é", "envoyer:ß", "succeeded")
        backend.add_counts({odd: 2})
        [bucket] = backend.read_counts().buckets
        assert isinstance(bucket, CountBucket)
        assert (bucket.key, bucket.n) == (odd, 2)

    def test_pruning_deletes_only_buckets_older_than_the_horizon(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        at_minute_start(clock)
        backend.add_counts({OK: 1, DEAD: 1})
        clock.advance(3 * BUCKET_SECONDS)
        backend.add_counts({OK: 1})
        assert backend.prune_counts(keep=2 * BUCKET_SECONDS) == 2
        assert [b.n for b in backend.read_counts().buckets] == [1]
        assert backend.prune_counts(keep=2 * BUCKET_SECONDS) == 0

    def test_pruning_stops_at_its_limit(self, backend: Backend, clock: FakeClock) -> None:
        at_minute_start(clock)
        backend.add_counts({CountKey("q", f"t{n}", "dead"): 1 for n in range(5)})
        clock.advance(2 * BUCKET_SECONDS)
        assert backend.prune_counts(keep=BUCKET_SECONDS, limit=2) == 2
        assert len(backend.read_counts().buckets) == 3

    @pytest.mark.parametrize(
        "bad",
        [
            {CountKey("", "t", "dead"): 1},
            {CountKey("q", "t\x00", "dead"): 1},
            {CountKey("q", "t", "d\ud800"): 1},
            {CountKey("q", "t", "dead"): 0},
            {CountKey("q", "t", "dead"): -3},
            {CountKey("q", "t", "dead"): 1.5},
            {CountKey("q", "t", "dead"): 2**53},
            {("q", "t", "dead"): 1},
            {CountKey("q", "t" * 501, "dead"): 1},
        ],
        ids=[
            "empty-queue",
            "nul",
            "not-utf8",
            "zero",
            "negative",
            "fraction",
            "huge",
            "tuple",
            "long-name",
        ],
    )
    def test_counts_the_store_could_not_keep_are_refused_and_add_nothing(
        self, backend: Backend, bad: dict[CountKey, int]
    ) -> None:
        with pytest.raises((ValueError, TypeError)):
            backend.add_counts({OK: 1, **bad})
        assert backend.read_counts().buckets == ()

    def test_the_async_operations_do_the_same(self, backend: Backend, clock: FakeClock) -> None:
        async def scenario() -> None:
            at_minute_start(clock)
            await backend.add_counts_async({OK: 2})
            history = await backend.read_counts_async()
            assert [b.n for b in history.buckets] == [2]
            clock.advance(3 * BUCKET_SECONDS)
            assert await backend.prune_counts_async(keep=BUCKET_SECONDS) == 1

        asyncio.run(scenario())
