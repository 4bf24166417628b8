"""Limit states: versioned records, written only by an all-or-nothing compare-and-set."""

from __future__ import annotations

import asyncio
import threading

import pytest

from ...backends.base import Backend
from ...backends.limit_states import LimitSwap
from ...clock import FakeClock
from .helpers import Harness, approx_time


def swap(name: str, expected: int | None, value: str = "1", ttl: float = 60.0) -> LimitSwap:
    return LimitSwap(name, expected, value, ttl)


def add_one(backend: Backend, name: str) -> int:
    """Increment the counter `name` by read and swap, trying again when refused."""
    states = backend.read_limits([name]).states
    while True:
        record = states.get(name)
        count = 0 if record is None else int(record.value)
        expected = None if record is None else record.version
        done = backend.swap_limits([swap(name, expected, str(count + 1))])
        if done.applied:
            return count + 1
        states = done.states


class LimitStateConformance(Harness):
    def test_a_name_never_written_reads_as_absent_at_the_stores_now(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        read = backend.read_limits(["rate:a", "rate:b"])
        assert (read.applied, dict(read.states)) == (True, {})
        assert read.now == approx_time(clock.now())
        assert backend.list_limits() == []

    def test_a_first_swap_creates_the_record_and_a_read_returns_it(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        new = swap("rate:a", None, '{"tat": 1.5}', ttl=90.0)
        done = backend.swap_limits([new])
        assert done.applied and done.now == approx_time(clock.now())
        [record] = done.states.values()
        assert (record.name, record.version, record.value) == (
            "rate:a",
            new.version,
            '{"tat": 1.5}',
        )
        assert record.expires_at == approx_time(clock.now() + 90.0)
        assert backend.read_limits(["rate:a"]).states == {"rate:a": record}
        assert backend.list_limits() == [record]

    def test_a_swap_at_the_version_read_replaces_the_record(self, backend: Backend) -> None:
        first = swap("rate:a", None, "1")
        backend.swap_limits([first])
        second = swap("rate:a", first.version, "2")
        done = backend.swap_limits([second])
        assert done.applied
        record = backend.read_limits(["rate:a"]).states["rate:a"]
        assert (record.version, record.value) == (second.version, "2")

    def test_a_swap_from_a_stale_version_is_refused_and_gets_the_record_as_it_is(
        self, backend: Backend
    ) -> None:
        first = swap("rate:a", None, "1")
        backend.swap_limits([first])
        backend.swap_limits([swap("rate:a", first.version, "2")])
        stale = backend.swap_limits([swap("rate:a", first.version, "3")])
        assert not stale.applied
        assert stale.states["rate:a"].value == "2"
        assert backend.read_limits(["rate:a"]).states["rate:a"].value == "2"

    def test_creating_a_record_that_exists_is_refused(self, backend: Backend) -> None:
        backend.swap_limits([swap("rate:a", None, "1")])
        again = backend.swap_limits([swap("rate:a", None, "9")])
        assert not again.applied and again.states["rate:a"].value == "1"

    def test_a_swap_expecting_a_record_that_does_not_exist_is_refused(
        self, backend: Backend
    ) -> None:
        done = backend.swap_limits([swap("rate:a", 12345, "1")])
        assert (done.applied, dict(done.states)) == (False, {})
        assert backend.read_limits(["rate:a"]).states == {}

    def test_a_swap_of_several_records_writes_all_or_none(self, backend: Backend) -> None:
        a, b = swap("rate:a", None, "1"), swap("rate:b", None, "1")
        assert backend.swap_limits([a, b]).applied
        refused = backend.swap_limits([swap("rate:a", a.version, "2"), swap("rate:b", 7, "2")])
        assert not refused.applied
        assert {n: r.value for n, r in refused.states.items()} == {"rate:a": "1", "rate:b": "1"}
        stored = backend.read_limits(["rate:a", "rate:b"]).states
        assert {n: r.version for n, r in stored.items()} == {
            "rate:a": a.version,
            "rate:b": b.version,
        }
        c = swap("rate:c", None, "1")
        assert not backend.swap_limits([c, swap("rate:a", None, "5")]).applied
        assert "rate:c" not in backend.read_limits(["rate:c"]).states

    def test_a_record_past_its_ttl_reads_as_absent_and_can_be_created_again(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        old = swap("rate:a", None, "1", ttl=10.0)
        backend.swap_limits([old])
        clock.advance(9.0)
        assert "rate:a" in backend.read_limits(["rate:a"]).states
        clock.advance(2.0)
        assert backend.read_limits(["rate:a"]).states == {}
        assert backend.list_limits() == []
        assert not backend.swap_limits([swap("rate:a", old.version, "2")]).applied
        assert backend.swap_limits([swap("rate:a", None, "3")]).applied
        assert backend.read_limits(["rate:a"]).states["rate:a"].value == "3"

    def test_each_swap_restarts_its_records_ttl(self, backend: Backend, clock: FakeClock) -> None:
        first = swap("rate:a", None, "1", ttl=10.0)
        backend.swap_limits([first])
        clock.advance(8.0)
        backend.swap_limits([swap("rate:a", first.version, "2", ttl=10.0)])
        clock.advance(8.0)
        assert backend.read_limits(["rate:a"]).states["rate:a"].value == "2"

    def test_listing_by_prefix(self, backend: Backend) -> None:
        backend.swap_limits([swap("rate:a", None), swap("rate:b", None), swap("circuit:x", None)])
        assert [r.name for r in backend.list_limits("rate:")] == ["rate:a", "rate:b"]
        assert [r.name for r in backend.list_limits()] == ["circuit:x", "rate:a", "rate:b"]

    def test_a_prefix_that_is_not_utf8_is_refused(self, backend: Backend) -> None:
        with pytest.raises(ValueError, match="UTF-8"):
            backend.list_limits("rate:\udc80")

    def test_prune_deletes_expired_records_only(self, backend: Backend, clock: FakeClock) -> None:
        backend.swap_limits([swap("rate:short", None, ttl=5.0), swap("rate:b", None, ttl=5.0)])
        backend.swap_limits([swap("rate:long", None, ttl=100.0)])
        assert backend.prune_limits(100) == 0
        clock.advance(6.0)
        assert backend.prune_limits(1) == 1
        assert backend.prune_limits(100) == 1
        assert backend.prune_limits(100) == 0
        assert [r.name for r in backend.list_limits()] == ["rate:long"]

    def test_an_empty_swap_applies_and_writes_nothing(self, backend: Backend) -> None:
        done = backend.swap_limits([])
        assert (done.applied, dict(done.states)) == (True, {})

    def test_names_and_values_keep_any_unicode(self, backend: Backend) -> None:
        name = "rate:send:client-é-✓-𝄞"
        backend.swap_limits([swap(name, None, '{"who": "Zoë 𝄞"}')])
        assert backend.read_limits([name]).states[name].value == '{"who": "Zoë 𝄞"}'

    @pytest.mark.parametrize(
        "bad",
        [
            swap("rate:a", None, "1", ttl=float("nan")),
            swap("rate:a", None, "1", ttl=float("inf")),
            swap("rate:a", None, "1", ttl=0.0),
            swap("rate:a", None, "not json"),
            swap("rate:a", None, '"\ud800"'),
            swap("", None, "1"),
            swap("rate:\n", None, "1"),
            swap("rate:\udc80", None, "1"),
            LimitSwap("rate:a", 5, "1", 60.0, version=5),
            LimitSwap("rate:a", None, "1", 60.0, version=0),
        ],
    )
    def test_bad_input_raises_and_writes_nothing(self, backend: Backend, bad: LimitSwap) -> None:
        with pytest.raises(ValueError):
            backend.swap_limits([swap("rate:other", None), bad])
        assert backend.list_limits() == []

    def test_one_name_twice_in_a_swap_raises(self, backend: Backend) -> None:
        with pytest.raises(ValueError, match="twice"):
            backend.swap_limits([swap("rate:a", None), swap("rate:a", None)])

    def test_racing_counters_lose_no_update(self, backend: Backend) -> None:
        per_thread, threads = 25, 4
        errors: list[BaseException] = []

        def race() -> None:
            try:
                for _ in range(per_thread):
                    add_one(backend, "rate:counter")
            except BaseException as exc:  # reported below
                errors.append(exc)

        workers = [threading.Thread(target=race) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert errors == []
        stored = backend.read_limits(["rate:counter"]).states["rate:counter"]
        assert int(stored.value) == per_thread * threads

    def test_the_async_operations_agree_with_the_sync_ones(self, backend: Backend) -> None:
        async def scenario() -> None:
            first = swap("rate:a", None, "1")
            assert (await backend.swap_limits_async([first])).applied
            read = await backend.read_limits_async(["rate:a"])
            assert read.states["rate:a"].version == first.version
            stale = await backend.swap_limits_async([swap("rate:a", None, "2")])
            assert not stale.applied
            assert [r.name for r in await backend.list_limits_async("rate:")] == ["rate:a"]
            assert await backend.prune_limits_async(10) == 0

        asyncio.run(scenario())
