"""Which core each worker process keeps to: by default only a fleet covering the cores evenly."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from stagecrew.worker.cpu_affinity import core_for, keep_to, spread_over, usable_cpus
from stagecrew.worker.job_threads import JobThreads

FOUR = frozenset({0, 1, 2, 3})


def test_a_fleet_of_a_multiple_of_the_cores_goes_round_robin() -> None:
    assert [core_for(slot, 4, FOUR, None) for slot in range(4)] == [0, 1, 2, 3]
    assert [core_for(slot, 8, FOUR, None) for slot in range(8)] == [0, 1, 2, 3] * 2
    assert [core_for(slot, 2, frozenset({2, 5}), None) for slot in range(2)] == [2, 5]


@pytest.mark.parametrize("processes", [1, 2, 3, 5])
def test_a_fleet_that_would_cover_the_cores_unevenly_is_left_to_the_os(processes: int) -> None:
    assert {core_for(slot, processes, FOUR, None) for slot in range(processes)} == {None}


def test_asked_for_it_pins_any_fleet_and_asked_not_to_none() -> None:
    assert [core_for(slot, 3, FOUR, True) for slot in range(3)] == [0, 1, 2]
    assert core_for(0, 4, FOUR, False) is None


def test_one_core_or_none_known_pins_nothing() -> None:
    assert core_for(0, 1, frozenset({3}), True) is None
    assert core_for(0, 1, frozenset(), None) is None


def test_a_core_the_os_refuses_leaves_the_thread_where_it_was(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A worker process told to keep to a core it may not use runs on, placed by the OS."""
    before = usable_cpus()
    outcome: list[object] = []

    def elsewhere() -> None:
        outcome.append(keep_to(max(before, default=0) + 4096))
        spread_over(frozenset({max(before, default=0) + 4096}))  # refused too: no error
        outcome.append(usable_cpus())

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join()
    assert outcome == [None, before]
    assert "could not keep this worker process to core" in caplog.text


def test_job_threads_but_the_first_may_run_on_any_core() -> None:
    """The first job thread stays on its creator's core; those woken for slow calls spread."""
    cpus = usable_cpus()
    if len(cpus) < 2:
        if os.environ.get("CI"):
            pytest.fail("needs two usable cores")
        pytest.skip("needs two usable cores")
    seen: dict[str, frozenset[int]] = {}
    release = threading.Event()

    def where() -> None:
        seen[threading.current_thread().name] = frozenset(os.sched_getaffinity(0))
        release.wait(10)

    def loop_thread() -> None:
        keep_to(min(cpus))
        threads = JobThreads(2, spread=cpus)

        async def main() -> None:
            first = threads.submit(where)
            second = threads.submit(where)  # waits behind the first: a second thread takes it
            while len(seen) < 2:
                await asyncio.sleep(0.01)
            release.set()
            await asyncio.gather(first, second)

        asyncio.run(asyncio.wait_for(main(), 10))
        threads.shutdown(wait=True)

    runner = threading.Thread(target=loop_thread)
    runner.start()
    runner.join()
    assert seen == {"stagecrew-job-0": frozenset({min(cpus)}), "stagecrew-job-1": cpus}
