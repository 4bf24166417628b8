"""The threads that run sync tasks: outcomes delivered, slow calls never holding fast ones back."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from stagecrew.worker.job_threads import JobThreads


def test_results_and_exceptions_reach_their_own_futures() -> None:
    threads = JobThreads(4)

    def fail() -> None:
        raise KeyError("boom")

    async def main() -> tuple[list[int], BaseException | None]:
        futures = [threads.submit(lambda i=i: i * i) for i in range(200)]
        failing = threads.submit(fail)
        results = await asyncio.gather(*futures)
        try:
            await failing
        except KeyError as exc:
            return results, exc
        return results, None

    results, error = asyncio.run(main())
    threads.shutdown(wait=True)
    assert results == [i * i for i in range(200)]
    assert isinstance(error, KeyError)


async def warm_up(threads: JobThreads) -> None:
    """Run short calls, so that the threads take a call for short (a burst then wakes one
    thread) and the next call does not come after a quiet spell (it waits for the turn's end)."""
    for _ in range(20):
        await asyncio.gather(*(threads.submit(lambda: None) for _ in range(10)))


async def still_running(slow: asyncio.Future[object], release: threading.Event) -> bool:
    """Whether `slow` (waiting for `release`) was still running; it is let finish."""
    running = not slow.done()
    release.set()
    await slow
    return running


def test_fast_calls_queued_behind_a_slow_one_get_another_thread() -> None:
    """Short calls so far: the burst wakes one thread, which takes the slow call first; the
    fast ones behind it are not left waiting for it."""
    threads = JobThreads(2)
    release = threading.Event()

    async def main() -> bool:
        await warm_up(threads)
        slow = threads.submit(release.wait)
        fast = [threads.submit(lambda: None) for _ in range(50)]
        await asyncio.wait_for(asyncio.gather(*fast), 10)
        return await still_running(slow, release)

    assert asyncio.run(main())
    threads.shutdown(wait=True)


def test_an_outcome_does_not_wait_for_its_threads_next_call() -> None:
    """One thread runs a fast call, then a slow one: the fast call's outcome arrives while the
    slow one still runs."""
    threads = JobThreads(1)
    release = threading.Event()

    async def main() -> bool:
        await warm_up(threads)  # busy: the next calls go to the thread together, in one turn
        fast = threads.submit(lambda: "fast")
        slow = threads.submit(release.wait)
        assert await asyncio.wait_for(fast, 10) == "fast"
        return await still_running(slow, release)

    assert asyncio.run(main())
    threads.shutdown(wait=True)


def test_shutdown_lets_every_submitted_call_run() -> None:
    threads = JobThreads(2)
    ran: list[int] = []

    async def main() -> None:
        await warm_up(threads)  # busy: the next calls wait for the end of the turn
        for i in range(50):
            threads.submit(lambda i=i: ran.append(i))
        threads.shutdown(wait=True)  # in the same turn: no thread was woken for them yet

    asyncio.run(main())
    assert sorted(ran) == list(range(50))


def test_at_most_size_threads_run_calls_at_once() -> None:
    threads = JobThreads(3)
    lock = threading.Lock()
    running = 0
    most = 0

    def call() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.005)
        with lock:
            running -= 1

    async def main() -> None:
        await asyncio.gather(*(threads.submit(call) for _ in range(30)))

    asyncio.run(main())
    threads.shutdown(wait=True)
    assert most == 3


def test_outcomes_finished_while_the_loop_is_busy_all_arrive() -> None:
    """Calls that finish while the loop runs other code are delivered together, none lost."""
    threads = JobThreads(4)

    async def main() -> list[int]:
        futures = [threads.submit(lambda i=i: i) for i in range(1_000)]
        time.sleep(0.05)  # noqa: ASYNC251 - the loop kept busy: the threads finish meanwhile
        return await asyncio.wait_for(asyncio.gather(*futures), 10)

    assert asyncio.run(main()) == list(range(1_000))
    threads.shutdown(wait=True)


def test_a_cancelled_call_runs_on_and_its_outcome_is_dropped() -> None:
    threads = JobThreads(1)
    started = threading.Event()
    release = threading.Event()
    ran = []

    def call() -> str:
        started.set()
        release.wait()
        ran.append(True)
        return "late"

    async def main() -> str:
        future = threads.submit(call)
        await asyncio.to_thread(started.wait)
        future.cancel()
        release.set()
        return await asyncio.wait_for(threads.submit(lambda: "next"), 10)  # after the dropped one

    assert asyncio.run(main()) == "next"
    threads.shutdown(wait=True)
    assert ran == [True]


def test_threads_do_not_keep_the_process_alive() -> None:
    threads = JobThreads(1)
    never = threading.Event()

    async def main() -> None:
        threads.submit(never.wait)
        await asyncio.sleep(0.01)

    asyncio.run(main())
    threads.shutdown(wait=False)
    assert all(t.daemon for t in threading.enumerate() if t.name.startswith("stagecrew-job"))
    never.set()


def test_submitting_after_shutdown_is_refused() -> None:
    threads = JobThreads(1)
    threads.shutdown(wait=True)

    async def main() -> None:
        threads.submit(lambda: None)

    with pytest.raises(RuntimeError, match="shut down"):
        asyncio.run(main())


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_outcomes_for_a_closed_loop_are_dropped_quietly() -> None:
    threads = JobThreads(1)
    release = threading.Event()

    async def main() -> None:
        threads.submit(release.wait)
        await asyncio.sleep(0)

    asyncio.run(main())  # the loop closes with the call still running
    release.set()
    threads.shutdown(wait=True)  # the thread ends on its own, without an unhandled error
