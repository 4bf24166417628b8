"""Redis: `wait_finished` (and so `JobHandle.result()`) waits on the T:finished channel.

ack.lua, cancel.lua, rescue.lua and release_worker.lua publish the ids they made final, once per
script call; a waiter subscribes to its job's channel, reads the job once, and then waits for a
message naming it. So a waiter reads the job once per wait, however long the job takes: counting
reads tells a notification from a poll without a timing assert. The only times measured are
lower bounds (a wait lasts its whole timeout when nothing finishes) and "returned before a
generous bound" (`HANG`), far from any timeout given to the call under test.

Real servers only: the shared Redis (a fresh key prefix per test, deleted afterwards), and
throwaway redis-server processes for the tests that crash a server or need a Cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from tests.backends import test_redis, test_redis_servers
from tests.backends.test_redis import Prefixes, job
from tests.backends.test_redis_servers import cluster_url, queues_on_every_node
from tests.support.processes import wait_for
from tests.support.servers import REDIS_BINARY, RedisServer

from stagecrew import App, JobFailedError
from stagecrew.backends.base import Ack
from stagecrew.backends.ops import Op
from stagecrew.backends.redis import RedisBackend
from stagecrew.clock import FakeClock
from stagecrew.errors import BackendError
from stagecrew.job import AttemptError, ClaimedJob, ErrorKind, Job, JobState
from stagecrew.worker.runner import Worker

HANG = 10.0
"""Seconds after which a wait that should have returned counts as hung: far below the 60 s
timeouts the waits under test are given."""
LONG = 60.0
LEASE = 30.0
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module", autouse=True)
def _redis_server() -> None:
    test_redis._server_or_skip()


@pytest.fixture
def prefixes() -> Iterator[Prefixes]:
    made = Prefixes(test_redis.URL)
    try:
        yield made
    finally:
        made.delete()


class CountingBackend(RedisBackend):
    """The Redis engine, counting its job reads; `after_read` runs after each one."""

    def __init__(self, url: str, clock: FakeClock | None = None) -> None:
        super().__init__(url, clock)
        self.reads = 0
        self.after_read: Callable[[Job | None], None] | None = None

    def _get(self, job_id: int) -> Op[Job | None]:
        found = yield from super()._get(job_id)
        self.reads += 1
        if self.after_read is not None:
            self.after_read(found)
        return found


@pytest.fixture
def backends(prefixes: Prefixes) -> Iterator[Callable[..., CountingBackend]]:
    """Backends on one store (one key prefix): a waiter and a worker of its own, say."""
    prefix = prefixes.new()
    with contextlib.ExitStack() as made:

        def make(url: str | None = None) -> CountingBackend:
            backend = CountingBackend(url or prefixes.url_for(prefix), FakeClock())
            made.callback(backend.close)
            return backend

        yield make


def boom(job: ClaimedJob) -> AttemptError:
    return AttemptError(job.attempt, 0.0, ErrorKind.ERROR, "ValueError", "boom")


class Waiting:
    """A call run on a thread of its own (a synchronous wait, or an event loop of its own)."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.outcome: list[tuple[str, Any]] = []
        self.started = time.monotonic()
        self.returned_after: float | None = None

        def run() -> None:
            try:
                self.outcome.append(("value", fn()))
            except BaseException as exc:
                self.outcome.append(("error", exc))
            self.returned_after = time.monotonic() - self.started

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def result(self, seconds: float = HANG) -> Any:
        self.thread.join(seconds)
        assert not self.thread.is_alive(), f"still waiting after {seconds}s"
        [(kind, value)] = self.outcome
        if kind == "error":
            raise value
        return value


def wait_finished_in_thread(backend: RedisBackend, job_id: int, asynchronous: bool) -> Waiting:
    if asynchronous:
        return Waiting(lambda: asyncio.run(backend.wait_finished_async(job_id, LONG)))
    return Waiting(lambda: backend.wait_finished(job_id, LONG))


def until(condition: Callable[[], bool], what: str) -> None:
    assert wait_for(condition, HANG, interval=0.01), f"never happened: {what}"


def claim_one(backend: RedisBackend, queue: str = "default", worker: str = "w") -> ClaimedJob:
    [claimed] = backend.claim([queue], worker, 1, LEASE)
    return claimed


ASYNC = pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])


# -- a finish elsewhere wakes the waiter, which reads the job once --------------------------
@ASYNC
def test_a_waiter_returns_when_another_backend_instance_acks_the_job(
    backends: Callable[..., CountingBackend], asynchronous: bool
) -> None:
    worker, waiter = backends(), backends()
    [entry] = worker.enqueue([job()])
    claimed = claim_one(worker)
    waiting = wait_finished_in_thread(waiter, entry.id, asynchronous)
    # waiter never saw the job: one read finds its queue, the one after subscribing checks it
    until(lambda: waiter.reads == 2, "the waiter read the job after subscribing")
    assert worker.ack([Ack.complete(claimed.ref, "3")]) == [True]
    waiting.result()
    assert waiter.reads == 2  # woken by the message, not by a poll


@ASYNC
def test_a_waiter_returns_when_another_process_acks_the_job(
    backends: Callable[..., CountingBackend], asynchronous: bool
) -> None:
    worker, waiter = backends(), backends()
    [entry] = worker.enqueue([job()])
    claimed = claim_one(worker)
    assert waiter.get(entry.id) is not None  # as result() does: the read before the wait
    waiter.reads = 0
    waiting = wait_finished_in_thread(waiter, entry.id, asynchronous)
    until(lambda: waiter.reads == 1, "the waiter read the job after subscribing")
    code = (
        "import sys\n"
        "from stagecrew.backends.base import Ack\n"
        "from stagecrew.backends.redis import RedisBackend\n"
        "from stagecrew.job import JobRef\n"
        "backend = RedisBackend(sys.argv[1])\n"
        "assert backend.ack([Ack.complete(JobRef(int(sys.argv[2]), int(sys.argv[3])))]) == [True]\n"
        "backend.close()\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, worker.url, str(claimed.id), str(claimed.token)],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        check=True,
        timeout=HANG * 3,
    )
    waiting.result()
    assert waiter.reads == 1


@ASYNC
def test_a_waiter_does_not_return_while_its_job_does_not_finish(
    backends: Callable[..., CountingBackend], asynchronous: bool
) -> None:
    """Other jobs of its queue finish, another queue's job finishes, its own job is retried
    (not final): the waiter sleeps through all of it, its timeout out, after one read."""
    worker, waiter = backends(), backends()
    [mine, *others] = worker.enqueue([job() for _ in range(4)])
    [elsewhere] = worker.enqueue([job(queue="other")])
    claimed = {c.id: c for c in worker.claim(["default", "other"], "w", 10, LEASE)}
    assert set(claimed) == {mine.id, elsewhere.id, *(e.id for e in others)}
    waiter.get(mine.id)
    waiter.reads = 0
    timeout = 0.5

    def wait() -> None:
        if asynchronous:
            asyncio.run(waiter.wait_finished_async(mine.id, timeout))
        else:
            waiter.wait_finished(mine.id, timeout)

    waiting = Waiting(wait)
    until(lambda: waiter.reads == 1, "the waiter read the job after subscribing")
    worker.ack([Ack.complete(claimed[e.id].ref) for e in others])
    worker.ack([Ack.dead_letter(claimed[elsewhere.id].ref, boom(claimed[elsewhere.id]))])
    worker.ack([Ack.retry(claimed[mine.id].ref, boom(claimed[mine.id]), delay=60.0)])
    waiting.result()
    assert waiting.returned_after is not None and waiting.returned_after >= timeout
    assert waiter.reads == 1
    stored = waiter.get(mine.id)
    assert stored is not None and stored.state is JobState.SCHEDULED


@ASYNC
def test_a_waiter_returns_at_once_for_a_final_or_unknown_job(
    backends: Callable[..., CountingBackend], asynchronous: bool
) -> None:
    worker, waiter = backends(), backends()
    [entry] = worker.enqueue([job()])
    worker.ack([Ack.complete(claim_one(worker).ref)])
    for job_id in (entry.id, entry.id + 1000):
        wait_finished_in_thread(waiter, job_id, asynchronous).result()


@ASYNC
def test_a_job_finishing_between_the_read_and_the_wait_is_not_missed(
    backends: Callable[..., CountingBackend], asynchronous: bool
) -> None:
    worker, waiter = backends(), backends()
    [entry] = worker.enqueue([job()])
    claimed = claim_one(worker)
    waiter.get(entry.id)
    waiter.reads = 0

    def finish_after_the_read(found: Job | None) -> None:
        if found is not None and found.state is JobState.RUNNING:
            waiter.after_read = None
            # after the waiter read "running", before it waits: only the message can tell it
            assert worker.ack([Ack.complete(claimed.ref)]) == [True]

    waiter.after_read = finish_after_the_read
    wait_finished_in_thread(waiter, entry.id, asynchronous).result()
    assert waiter.reads == 1


# -- what the scripts publish ------------------------------------------------------------------
class Channel:
    """The test's own SUBSCRIBE to a queue's T:finished: the messages the scripts published."""

    def __init__(self, backend: RedisBackend, queue: str = "default") -> None:
        self.name = backend._keys.queue(queue).finished
        self.client = redis.Redis.from_url(backend._settings.redis_url)
        self.pubsub = self.client.pubsub()
        self.pubsub.subscribe(self.name)
        confirmed = self.pubsub.get_message(timeout=HANG)
        assert confirmed is not None and confirmed["type"] == "subscribe"

    def messages(self) -> list[set[int] | None]:
        """What was published since the last call: a set of ids each, None for "any job".

        A marker published now comes after everything published before it, so reading up to
        the marker reads every message there is, and only those.
        """
        marker = f"marker-{uuid.uuid4().hex}"
        self.client.publish(self.name, marker)
        found: list[set[int] | None] = []
        deadline = time.monotonic() + HANG
        while time.monotonic() < deadline:
            message = self.pubsub.get_message(timeout=HANG)
            if message is None or message["type"] != "message":
                continue
            data = message["data"].decode()
            if data == marker:
                return found
            found.append({int(i) for i in data.split(" ")} if data else None)
        raise AssertionError("the marker never came")

    def close(self) -> None:
        self.pubsub.close()
        self.client.close()


@pytest.fixture
def channel_of() -> Iterator[Callable[..., Channel]]:
    made: list[Channel] = []

    def make(backend: RedisBackend, queue: str = "default") -> Channel:
        made.append(Channel(backend, queue))
        return made[-1]

    try:
        yield make
    finally:
        for channel in made:
            channel.close()


def test_one_publish_per_ack_batch_naming_every_job_it_made_final(
    backends: Callable[..., CountingBackend], channel_of: Callable[..., Channel]
) -> None:
    backend = backends()
    channel = channel_of(backend)
    backend.enqueue([job() for _ in range(6)])
    a, b, c, d, e, f = backend.claim(["default"], "w", 10, LEASE)
    backend.cancel(d.id)  # a request only: the job stays running until its outcome
    assert channel.messages() == []
    applied = backend.ack(
        [
            Ack.complete(a.ref),
            Ack.complete(b.ref, "1"),
            Ack.dead_letter(c.ref, boom(c)),
            Ack.retry(d.ref, boom(d)),  # cancellation pending: ends cancelled
            Ack.retry(e.ref, boom(e), delay=60.0),
            Ack.release(f.ref),
        ]
    )
    assert applied == [True] * 6
    assert channel.messages() == [{a.id, b.id, c.id, d.id}]


def test_nothing_is_published_when_no_job_became_final(
    backends: Callable[..., CountingBackend], channel_of: Callable[..., Channel]
) -> None:
    backend = backends()
    channel = channel_of(backend)
    backend.enqueue([job() for _ in range(3)])
    a, b, c = backend.claim(["default"], "w", 10, LEASE)
    backend.ack([Ack.retry(a.ref, boom(a)), Ack.release(b.ref, delay=5.0)])
    backend.ack([Ack.complete(a.ref)])  # fenced off: a's claim no longer holds it
    backend.heartbeat("w", [c.ref], LEASE)
    assert channel.messages() == []


def test_an_ack_batch_over_two_queues_publishes_once_on_each(
    backends: Callable[..., CountingBackend], channel_of: Callable[..., Channel]
) -> None:
    backend = backends()
    channels = {q: channel_of(backend, q) for q in ("a", "b")}
    backend.enqueue([job(queue="a"), job(queue="a"), job(queue="b")])
    claimed = backend.claim(["a", "b"], "w", 10, LEASE)
    assert backend.ack([Ack.complete(c.ref) for c in claimed]) == [True] * 3
    for queue, channel in channels.items():
        assert channel.messages() == [{c.id for c in claimed if c.queue == queue}]


def test_a_cancel_publishes_only_when_it_ends_the_job(
    backends: Callable[..., CountingBackend], channel_of: Callable[..., Channel]
) -> None:
    backend = backends()
    channel = channel_of(backend)
    [waiting, running] = backend.enqueue([job(), job(priority=-1)])
    assert claim_one(backend).id == running.id
    backend.cancel(running.id)  # flagged only
    assert channel.messages() == []
    backend.cancel(waiting.id)
    backend.cancel(waiting.id)  # finished already: nothing changes, nothing is said
    assert channel.messages() == [{waiting.id}]


@pytest.mark.parametrize("settle", ["rescue", "release_worker"])
def test_a_lost_worker_settled_publishes_the_jobs_that_ended(
    backends: Callable[..., CountingBackend], channel_of: Callable[..., Channel], settle: str
) -> None:
    backend = backends()
    channel = channel_of(backend)
    [spent, _again, stopped] = backend.enqueue(
        [job(max_attempts=1), job(max_attempts=5), job(max_attempts=5)]
    )
    assert len(backend.claim(["default"], "w-dead", 10, LEASE)) == 3
    backend.cancel(stopped.id)
    if settle == "rescue":
        clock = backend.clock
        assert isinstance(clock, FakeClock)
        clock.advance(LEASE + 1)
        report = backend.rescue()
    else:
        report = backend.release_worker("w-dead")
    assert (report.requeued, report.dead, report.cancelled) == (1, 1, 1)
    assert channel.messages() == [{spent.id, stopped.id}]
    backend.enqueue([job(max_attempts=5)])
    claim_one(backend, worker="w-dead")  # the requeued one or the new one: both go back
    claim_one(backend, worker="w-dead")
    assert backend.release_worker("w-dead").requeued == 2
    assert channel.messages() == []  # back to available: not final


def test_a_batch_of_more_than_a_thousand_finished_jobs_says_any_job(
    backends: Callable[..., CountingBackend], channel_of: Callable[..., Channel]
) -> None:
    backend = backends()
    channel = channel_of(backend)
    backend.enqueue([job() for _ in range(1001)])
    claimed = backend.claim(["default"], "w", 2000, LEASE)
    assert backend.ack([Ack.complete(c.ref) for c in claimed]) == [True] * 1001
    assert channel.messages() == [None]


def test_a_message_for_any_job_of_the_queue_wakes_its_waiters(
    backends: Callable[..., CountingBackend], channel_of: Callable[..., Channel]
) -> None:
    waiter = backends()
    [entry] = waiter.enqueue([job()])
    waiting = wait_finished_in_thread(waiter, entry.id, asynchronous=True)
    until(lambda: waiter.reads == 1, "the waiter read the job after subscribing")
    channel_of(waiter).client.publish(waiter._keys.queue("default").finished, "")
    waiting.result()  # a spurious return, which the contract allows: the caller reads again


# -- one subscription per loop, shared, and cleaned up ----------------------------------------
def subscribers(backend: RedisBackend, queue: str = "default") -> int:
    client = redis.Redis.from_url(backend._settings.redis_url)
    try:
        [(_, count)] = client.pubsub_numsub(backend._keys.queue(queue).finished)
        return int(count)
    finally:
        client.close()


def test_many_waiters_in_one_process_share_one_subscription_and_leave_none_behind(
    backends: Callable[..., CountingBackend],
) -> None:
    worker, waiter = backends(), backends()
    entries = worker.enqueue([job() for _ in range(12)])
    claimed = worker.claim(["default"], "w", 20, LEASE)
    on_threads, on_loop = entries[:4], entries[4:]
    for entry in entries:
        waiter.get(entry.id)
    waiter.reads = 0

    async def many_on_one_loop() -> None:
        await asyncio.gather(*(waiter.wait_finished_async(e.id, LONG) for e in on_loop))

    waiting = [Waiting(lambda: asyncio.run(many_on_one_loop()))]
    waiting += [wait_finished_in_thread(waiter, e.id, asynchronous=False) for e in on_threads]
    until(lambda: waiter.reads == len(entries), "every waiter read its job after subscribing")
    # two subscribers: the test's loop, and the backend's own loop for the synchronous waits
    assert subscribers(waiter) == 2
    assert worker.ack([Ack.complete(c.ref) for c in claimed]) == [True] * len(claimed)
    for wait in waiting:
        wait.result()
    assert waiter.reads == len(entries)
    until(lambda: subscribers(waiter) == 0, "the waiters unsubscribed")


def test_close_stops_the_thread_of_the_synchronous_waits(
    backends: Callable[..., CountingBackend],
) -> None:
    backend = backends()
    [entry] = backend.enqueue([job()])
    backend.wait_finished(entry.id, 0.05)
    names = {t.name for t in threading.enumerate()}
    assert f"stagecrew-wait-finished-{backend.prefix}" in names
    backend.close()
    names = {t.name for t in threading.enumerate()}
    assert f"stagecrew-wait-finished-{backend.prefix}" not in names


def test_a_synchronous_wait_cut_short_by_close_returns_instead_of_raising(
    backends: Callable[..., CountingBackend],
) -> None:
    backend = backends()
    [entry] = backend.enqueue([job()])
    waiting = wait_finished_in_thread(backend, entry.id, asynchronous=False)
    until(lambda: backend.reads >= 1, "the waiter read the job")
    backend.close()
    assert waiting.result() is None  # a waiter may return early; it never raises for a close


# -- JobHandle.result() with a real worker -----------------------------------------------------
def make_app(backend: RedisBackend) -> App:
    app = App(backend.url, clock=backend.clock)
    app.use_backend(backend)

    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(max_attempts=1)
    def fail() -> None:
        raise ValueError("boom")

    return app


def test_result_returns_when_a_worker_in_another_thread_finishes_the_job(
    backends: Callable[..., CountingBackend],
) -> None:
    backend = backends()
    app = make_app(backend)
    handle = app.tasks["add"].enqueue(1, 2)
    backend.reads = 0

    def work_once_the_caller_waits() -> int:
        until(lambda: backend.reads == 2, "the caller waits")
        return asyncio.run(Worker(app, concurrency=1).drain())

    worker = Waiting(work_once_the_caller_waits)
    assert handle.result(timeout=LONG) == 3
    assert worker.result() == 1
    # the read before the wait, the one after subscribing, the one after the message
    assert backend.reads == 3


def test_result_async_returns_when_a_worker_on_its_loop_finishes_the_job(
    backends: Callable[..., CountingBackend],
) -> None:
    backend = backends()
    app = make_app(backend)

    async def scenario() -> tuple[Any, int]:
        handle = await app.tasks["add"].enqueue_async(1, 2)
        backend.reads = 0
        result = asyncio.create_task(handle.result_async(timeout=LONG))
        while backend.reads < 2:
            await asyncio.sleep(0.01)
        ran = await Worker(app, concurrency=1).drain()
        return await asyncio.wait_for(result, HANG), ran

    assert asyncio.run(scenario()) == (3, 1)
    assert backend.reads == 3


@ASYNC
def test_result_raises_job_failed_when_a_worker_dead_letters_the_job(
    backends: Callable[..., CountingBackend], asynchronous: bool
) -> None:
    backend = backends()
    app = make_app(backend)
    handle = app.tasks["fail"].enqueue()
    backend.reads = 0

    def work_once_the_caller_waits() -> int:
        until(lambda: backend.reads == 2, "the caller waits")
        return asyncio.run(Worker(app, concurrency=1).drain())

    worker = Waiting(work_once_the_caller_waits)
    with pytest.raises(JobFailedError, match="is dead: ValueError: boom"):
        if asynchronous:
            asyncio.run(handle.result_async(timeout=LONG))
        else:
            handle.result(timeout=LONG)
    assert worker.result() == 1
    assert backend.reads == 3


# -- a subscription that fails -----------------------------------------------------------------
@pytest.fixture(scope="module")
def redis_binary() -> None:
    if REDIS_BINARY is None:
        reason = "redis-server is not installed: these tests need servers of their own"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


cluster = test_redis_servers.cluster
"""The throwaway three-node Redis Cluster of test_redis_servers.py (one for this module)."""


@pytest.fixture
def server(redis_binary: None, tmp_path: Path) -> Iterator[RedisServer]:
    made = RedisServer(tmp_path)
    made.start()
    try:
        yield made
    finally:
        made.crash()


@ASYNC
def test_a_waiter_returns_at_once_when_its_subscription_breaks_and_waits_again_after(
    server: RedisServer, asynchronous: bool
) -> None:
    url = f"{server.url}?prefix=crash"
    waiter, worker = CountingBackend(url), CountingBackend(url)
    try:
        [entry] = worker.enqueue([job()])
        waiting = wait_finished_in_thread(waiter, entry.id, asynchronous)
        until(lambda: waiter.reads == 2, "the waiter read the job after subscribing")
        server.crash()  # the job still waits: only the broken subscription ends the wait
        waiting.result()
        with pytest.raises(BackendError, match="wait_finished failed on Redis"):
            waiter.wait_finished(entry.id, LONG)  # no store: the failure is said, not slept on
        server.start()  # empty: it persisted nothing
        worker.close()
        worker = CountingBackend(url)  # its connection, closed by the crash, was used just now
        [entry] = worker.enqueue([job()])
        claimed = claim_one(worker)
        waiter.reads = 0
        waiting = wait_finished_in_thread(waiter, entry.id, asynchronous)
        until(lambda: waiter.reads >= 1, "the waiter read the job after subscribing again")
        worker.ack([Ack.complete(claimed.ref)])
        waiting.result()
    finally:
        waiter.close()
        worker.close()


def test_an_idle_subscription_closed_by_a_restart_is_replaced_before_the_next_wait(
    server: RedisServer,
) -> None:
    """Between waits the connection stays open, unread; Redis may close it meanwhile."""
    url = f"{server.url}?prefix=idle"
    waiter = CountingBackend(url)
    try:
        for restart in (False, True):
            if restart:
                until(lambda: subscribers(waiter) == 0, "the waiter unsubscribed")
                server.restart()  # empty again: it persisted nothing
            worker = CountingBackend(url)
            try:
                [entry] = worker.enqueue([job()])
                claimed = claim_one(worker)
                waiter.reads = 0
                waiting = wait_finished_in_thread(waiter, entry.id, asynchronous=False)
                until(lambda: waiter.reads >= 1, "the waiter read the job after subscribing")
                worker.ack([Ack.complete(claimed.ref)])
                waiting.result()
            finally:
                worker.close()
    finally:
        waiter.close()


def test_no_task_reads_the_subscription_while_nobody_waits_and_its_connection_is_kept(
    backends: Callable[..., CountingBackend],
) -> None:
    waiter = backends()
    [entry] = waiter.enqueue([job()])

    async def scenario() -> None:
        listener = (await waiter._side()).finished
        connections = set()
        for _ in range(3):
            await waiter.wait_finished_async(entry.id, 0.05)
            connections.add(id(listener._conn))
            deadline = time.monotonic() + HANG
            while len(asyncio.all_tasks()) > 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)  # the UNSUBSCRIBE's answer ends the reader
            assert asyncio.all_tasks() == {asyncio.current_task()}
        assert len(connections) == 1 and listener._conn is not None

    asyncio.run(scenario())


# -- Redis Cluster -----------------------------------------------------------------------------
@ASYNC
def test_on_a_cluster_the_waiter_hears_a_finish_on_every_node(
    redis_binary: None, cluster: list[RedisServer], asynchronous: bool
) -> None:
    """The waiter subscribes on the URL's node; a queue's scripts run on the node of its slot,
    and a classic PUBLISH there reaches every node."""
    prefix = f"c{uuid.uuid4().hex[:8]}"
    queues = queues_on_every_node(cluster, prefix)
    worker = CountingBackend(cluster_url(cluster, prefix=prefix))
    waiter = CountingBackend(cluster_url(cluster, prefix=prefix))
    try:
        entries = worker.enqueue([job(queue=q) for q in queues])
        claimed = {c.id: c for c in worker.claim(queues, "w", 10, LEASE)}
        for entry in entries:
            waiter.get(entry.id)
        for entry in entries:
            done = claimed[entry.id]
            waiter.reads = 0
            waiting = wait_finished_in_thread(waiter, entry.id, asynchronous)
            until(lambda: waiter.reads == 1, "the waiter read the job after subscribing")
            worker.ack([Ack.complete(done.ref)])
            waiting.result()
            assert waiter.reads == 1
    finally:
        worker.close()
        waiter.close()
