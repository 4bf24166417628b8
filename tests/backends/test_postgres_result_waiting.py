"""PostgreSQL: waiting for a job to finish is a LISTEN on the schema's finished channel, not a poll.

`wait_finished` registers a waiter with the backend's LISTEN thread, reads the job's state
once, and waits for a notification naming the job (or any job), or for the thread's
(re)connection. Reads are counted here, never timed: a poll (every 0.05 s) would read a
job several times while it stays unfinished; a wait on the notification reads it once.
Timeouts only bound a hang. A schema per test, as in test_postgres.py.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tests.backends.test_postgres import URL as SERVER_URL
from tests.backends.test_postgres import (
    Schemas,
    _server_or_skip,
    retrying,
    terminate_sessions,
    with_schema,
)
from tests.support import threads
from tests.support.processes import start_worker, stop, write_app

from stagecrew import App, JobCancelledError, JobFailedError, JobState
from stagecrew.backends.base import Ack
from stagecrew.backends.postgres import PostgresBackend
from stagecrew.backends.postgres.driver import SqlOp
from stagecrew.backends.postgres.settings import MAX_IDENTIFIER_BYTES, parse_url
from stagecrew.job import Job, JobRef, NewJob

PAYLOAD = '{"args":[],"kwargs":{}}'
HANG = 10.0
"""Seconds after which a wait that should have ended counts as hung; the waits under test are
given 60 s, so only a missed notification runs into this."""
POLL_WOULD_SHOW = 0.3
"""How long a job stays unfinished while a caller waits: a poll would read it several times."""
S = JobState


@pytest.fixture(scope="module", autouse=True)
def _postgres_server() -> None:
    _server_or_skip()


class WatchedBackend(PostgresBackend):
    """The PostgreSQL engine, counting the reads of finish waits (and of whole jobs)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.reads = 0
        self.gets = 0
        self.read_done = threading.Event()
        self.after_read: Callable[[], None] | None = None
        """Run once, after the next read of a finish wait and before its wait."""

    def _finished_or_gone(self, job_id: int) -> SqlOp[bool]:
        finished = yield from super()._finished_or_gone(job_id)
        self.reads += 1
        after, self.after_read = self.after_read, None
        if after is not None:
            after()
        self.read_done.set()
        return finished

    def _get(self, job_id: int) -> SqlOp[Job | None]:
        self.gets += 1
        return (yield from super()._get(job_id))


@pytest.fixture
def url() -> Iterator[str]:
    schemas = Schemas()
    url = with_schema(SERVER_URL, schemas.new())
    setup = PostgresBackend(url)
    setup.migrate()
    setup.close()
    yield url
    schemas.drop()


@pytest.fixture
def backend(url: str) -> Iterator[WatchedBackend]:
    b = WatchedBackend(url)
    yield b
    b.close()


@pytest.fixture
def other(url: str) -> Iterator[PostgresBackend]:
    """Another backend on the same schema: its own pools, so its own sessions."""
    b = PostgresBackend(url)
    yield b
    b.close()


def listening(backend: PostgresBackend) -> None:
    """Start the backend's LISTEN thread and wait until it listens, so a wait reads once."""
    assert backend._get_listener().connected.wait(HANG)


def enqueue(backend: PostgresBackend, count: int = 1, **fields: Any) -> list[int]:
    return [e.id for e in backend.enqueue([NewJob("t", PAYLOAD, **fields) for _ in range(count)])]


def claim(backend: PostgresBackend, limit: int = 1) -> list[JobRef]:
    return [c.ref for c in backend.claim(["default"], "w", limit, 30)]


def in_thread(fn: Callable[[], Any]) -> Callable[[], Any]:
    return threads.in_thread(fn, HANG)


def wait_finished(backend: PostgresBackend, job_id: int, timeout: float, asynchronous: bool) -> Any:
    """`wait_finished` or `wait_finished_async` (on a loop of its own), on another thread."""
    if asynchronous:
        return in_thread(lambda: asyncio.run(backend.wait_finished_async(job_id, timeout)))
    return in_thread(lambda: backend.wait_finished(job_id, timeout))


def after_the_read(backend: WatchedBackend, finish: Callable[[], object]) -> Callable[[], Any]:
    """Once the waiter has read the job and a poll had time to show, `finish` it (a thread)."""

    def run() -> None:
        assert backend.read_done.wait(HANG), "the waiter never read the job"
        time.sleep(POLL_WOULD_SHOW)
        finish()

    return in_thread(run)


WAYS = pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])


# -- a finish elsewhere wakes the waiter, which read the job once -----------------------------
@WAYS
def test_a_waiter_returns_when_another_backend_acks_the_job(
    backend: WatchedBackend, other: PostgresBackend, asynchronous: bool
) -> None:
    [job_id] = enqueue(other)
    [ref] = claim(other)
    listening(backend)
    finished = after_the_read(backend, lambda: other.ack([Ack.complete(ref, "3")]))
    wait_finished(backend, job_id, 60, asynchronous)()
    finished()
    assert backend.reads == 1
    assert backend.get(job_id).state is S.SUCCEEDED  # type: ignore[union-attr]


def _ack_in_another_process(url: str, job_id: int, token: int) -> None:
    backend = PostgresBackend(url)
    try:
        assert backend.ack([Ack.complete(JobRef(job_id, token), "7")]) == [True]
    finally:
        backend.close()


@WAYS
def test_a_waiter_returns_when_another_process_acks_the_job(
    backend: WatchedBackend, url: str, asynchronous: bool
) -> None:
    [job_id] = enqueue(backend)
    [ref] = claim(backend)
    listening(backend)

    def ack_elsewhere() -> None:
        process = multiprocessing.get_context("spawn").Process(
            target=_ack_in_another_process, args=(url, ref.id, ref.token)
        )
        process.start()
        process.join(HANG)
        assert process.exitcode == 0

    finished = after_the_read(backend, ack_elsewhere)
    wait_finished(backend, job_id, 60, asynchronous)()
    finished()
    assert backend.reads == 1
    assert backend.get(job_id).state is S.SUCCEEDED  # type: ignore[union-attr]


@pytest.mark.parametrize("ending", ["cancel", "dead_letter", "rescue", "release_worker"])
def test_every_way_to_a_final_state_wakes_the_waiter(
    backend: WatchedBackend, other: PostgresBackend, ending: str
) -> None:
    [job_id] = enqueue(other, max_attempts=1)
    if ending != "cancel":
        [ref] = claim(other)
    listening(backend)

    def finish() -> None:
        if ending == "cancel":
            other.cancel(job_id)
        elif ending == "dead_letter":
            other.ack([Ack.dead_letter(ref, threads.boom(ref))])
        elif ending == "rescue":
            with psycopg.connect(SERVER_URL, autocommit=True) as conn:  # the lease runs out
                conn.execute(
                    psycopg.sql.SQL("UPDATE {}.jobs SET lease_expires_at = 0 WHERE id = %s").format(
                        psycopg.sql.Identifier(other.schema)
                    ),
                    (job_id,),
                )
            assert other.rescue().dead == 1
        else:
            assert other.release_worker("w").dead == 1

    finished = after_the_read(backend, finish)
    wait_finished(backend, job_id, 60, asynchronous=False)()
    finished()
    assert backend.reads == 1
    assert backend.get(job_id).state.is_final  # type: ignore[union-attr]


# -- nothing finished: the waiter keeps waiting, and reads nothing more -----------------------
@WAYS
def test_a_waiter_does_not_return_while_its_job_does_not_finish(
    backend: WatchedBackend, other: PostgresBackend, asynchronous: bool
) -> None:
    [job_id, *others] = enqueue(other, 4)
    refs = claim(other, 4)
    mine = next(ref for ref in refs if ref.id == job_id)
    listening(backend)

    def meanwhile() -> None:  # other jobs finish, work is enqueued, this job is only retried
        other.ack([Ack.complete(ref, "1") for ref in refs if ref.id != job_id])
        enqueue(other, 3)
        other.ack([Ack.retry(mine, threads.boom(mine), delay=60)])

    busy = after_the_read(backend, meanwhile)
    timeout = 1.5
    started = time.monotonic()
    wait_finished(backend, job_id, timeout, asynchronous)()
    busy()
    assert time.monotonic() - started >= timeout
    assert backend.reads == 1
    assert backend.get(job_id).state is S.SCHEDULED  # type: ignore[union-attr]
    assert {other.get(i).state for i in others} == {S.SUCCEEDED}  # type: ignore[union-attr]


def test_waiters_in_several_threads_are_woken_each_by_its_own_job(
    backend: WatchedBackend, other: PostgresBackend
) -> None:
    first, second = enqueue(other, 2)
    refs = {ref.id: ref for ref in claim(other, 2)}
    listening(backend)
    waits = [
        wait_finished(backend, job_id, 60, asynchronous)
        for job_id in (first, second)
        for asynchronous in (False, True)
    ]
    deadline = time.monotonic() + HANG
    while backend.reads < 4:
        assert time.monotonic() < deadline, "the waiters never read their jobs"
        time.sleep(0.01)
    other.ack([Ack.complete(refs[first], "1")])
    waits[0]()
    waits[1]()
    assert backend.reads == 4  # the two waiters of `second` did not read it again
    other.ack([Ack.complete(refs[second], "2")])
    waits[2]()
    waits[3]()
    assert backend.reads == 4


# -- final or unknown: at once, after one read ---------------------------------------------------
@WAYS
def test_a_waiter_returns_at_once_for_a_final_or_unknown_job(
    backend: WatchedBackend, asynchronous: bool
) -> None:
    [job_id] = enqueue(backend)
    backend.cancel(job_id)
    listening(backend)
    for wanted in (job_id, 987_654_321):
        backend.reads = 0
        wait_finished(backend, wanted, 60, asynchronous)()
        assert backend.reads == 1


def test_a_zero_timeout_returns_without_reading_or_listening(backend: WatchedBackend) -> None:
    [job_id] = enqueue(backend)
    backend.wait_finished(job_id, 0)
    assert (backend.reads, backend._listener) == (0, None)


def test_a_producer_that_never_waits_for_a_result_opens_no_listen_connection(
    backend: WatchedBackend,
) -> None:
    [job_id] = enqueue(backend)
    backend.get(job_id)
    backend.cancel(job_id)
    assert backend._listener is None


# -- the race: a finish between the read and the wait ---------------------------------------------
@WAYS
def test_a_job_that_finishes_between_the_read_and_the_wait_is_not_missed(
    backend: WatchedBackend, other: PostgresBackend, asynchronous: bool
) -> None:
    [job_id] = enqueue(other)
    [ref] = claim(other)
    listening(backend)
    backend.after_read = lambda: other.ack([Ack.complete(ref, "3")])  # committed before it waits
    wait_finished(backend, job_id, 60, asynchronous)()
    assert backend.reads == 1  # woken by the notification, not by a second look
    assert backend.get(job_id).state is S.SUCCEEDED  # type: ignore[union-attr]


def test_the_first_wait_in_a_process_waits_for_the_listen_before_it_reads(
    backend: WatchedBackend, other: PostgresBackend
) -> None:
    [job_id] = enqueue(other)
    [ref] = claim(other)
    assert backend._listener is None
    backend.after_read = lambda: other.ack([Ack.complete(ref, "3")])
    wait_finished(backend, job_id, 60, asynchronous=False)()
    assert backend.reads == 1


# -- the LISTEN connection lost and re-established -------------------------------------------------
@WAYS
def test_a_reconnected_listener_wakes_every_finish_waiter(
    backend: WatchedBackend, other: PostgresBackend, url: str, asynchronous: bool
) -> None:
    [job_id] = enqueue(other)
    listening(backend)
    listener = backend._get_listener()
    kill = after_the_read(backend, lambda: terminate_sessions(backend.schema))
    wait_finished(backend, job_id, 60, asynchronous)()  # returns: what it missed is unknown
    kill()
    assert backend.reads == 1
    assert retrying(lambda: backend.get(job_id)).state is S.AVAILABLE
    assert listener.connected.wait(HANG)
    # and it listens again: a finish after the reconnection wakes a new waiter
    [ref] = retrying(lambda: claim(other))
    backend.read_done.clear()
    backend.reads = 0
    finished = after_the_read(backend, lambda: other.ack([Ack.complete(ref, "3")]))
    wait_finished(backend, job_id, 60, asynchronous)()
    finished()
    assert backend.reads == 1
    assert backend.get(job_id).state is S.SUCCEEDED  # type: ignore[union-attr]


# -- what the statements send ----------------------------------------------------------------------
class FinishedChannel:
    """A LISTEN connection of the test's own on a schema's finished channel."""

    def __init__(self, backend: PostgresBackend) -> None:
        self.channel = backend.settings.finished_channel
        self.conn = psycopg.connect(SERVER_URL, autocommit=True)
        self.conn.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(self.channel)))

    def heard(self) -> list[str]:
        """Every payload sent since the last call: read up to a sentinel this sends, which
        arrives after everything committed before it (notifications come in commit order)."""
        with psycopg.connect(SERVER_URL, autocommit=True) as sender:
            sender.execute("SELECT pg_notify(%s, 'sentinel')", (self.channel,))
        payloads: list[str] = []
        for notify in self.conn.notifies(timeout=HANG):
            if notify.payload == "sentinel":
                return payloads
            payloads.append(notify.payload)
        raise AssertionError(f"the sentinel never arrived; heard {payloads}")

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def finished_channel(backend: WatchedBackend) -> Iterator[FinishedChannel]:
    heard = FinishedChannel(backend)
    yield heard
    heard.close()


def ids_of(payload: str) -> set[int]:
    return {int(part) for part in payload.split(",")}


def test_an_ack_batch_that_finishes_many_jobs_sends_one_notification_with_their_ids(
    backend: WatchedBackend, finished_channel: FinishedChannel
) -> None:
    enqueue(backend, 60)
    refs = claim(backend, 60)
    completed, dead, cancelled, retried = refs[:30], refs[30:40], refs[40:50], refs[50:]
    acks = (
        [Ack.complete(ref, "1") for ref in completed]
        + [Ack.dead_letter(ref, threads.boom(ref)) for ref in dead]
        + [Ack.cancel(ref) for ref in cancelled]
        + [Ack.retry(ref, threads.boom(ref)) for ref in retried]
    )
    assert backend.ack(acks) == [True] * 60
    [payload] = finished_channel.heard()
    assert ids_of(payload) == {ref.id for ref in completed + dead + cancelled}


def test_an_ack_batch_that_finishes_nothing_sends_no_notification(
    backend: WatchedBackend, finished_channel: FinishedChannel
) -> None:
    enqueue(backend, 10)
    refs = claim(backend, 10)
    assert backend.ack([Ack.retry(ref, threads.boom(ref)) for ref in refs[:5]]) == [True] * 5
    assert backend.ack([Ack.release(ref) for ref in refs[5:]]) == [True] * 5
    # fenced out: the claims no longer hold the jobs
    assert backend.ack([Ack.complete(ref, "1") for ref in refs]) == [False] * 10
    assert finished_channel.heard() == []


def test_a_batch_whose_ids_would_not_fit_sends_one_notification_for_any_job(
    backend: WatchedBackend, finished_channel: FinishedChannel
) -> None:
    enqueue(backend, 1500)
    refs = claim(backend, 1500)  # ids of 1 to 4 digits: over 4000 bytes comma-joined
    assert backend.ack([Ack.complete(ref, "1") for ref in refs]) == [True] * 1500
    assert finished_channel.heard() == [""]


def test_a_batch_naming_a_job_twice_sends_one_notification_per_statement(
    backend: WatchedBackend, finished_channel: FinishedChannel
) -> None:
    enqueue(backend, 2)
    first, second = claim(backend, 2)
    # the second ack of `first` goes in a statement of its own, and is fenced out
    acks = [Ack.complete(first, "1"), Ack.complete(second, "2"), Ack.complete(first, "3")]
    assert backend.ack(acks) == [True, True, False]
    [payload] = finished_channel.heard()
    assert ids_of(payload) == {first.id, second.id}


def test_cancel_and_release_worker_announce_only_the_jobs_they_end(
    backend: WatchedBackend, finished_channel: FinishedChannel
) -> None:
    waiting, running, flagged = enqueue(backend, 3)
    assert backend.cancel(waiting).state is S.CANCELLED  # type: ignore[union-attr]
    assert finished_channel.heard() == [str(waiting)]
    assert {ref.id for ref in claim(backend, 2)} == {running, flagged}
    assert backend.cancel(flagged).state is S.RUNNING  # type: ignore[union-attr]  # a request
    assert backend.cancel(waiting).state is S.CANCELLED  # type: ignore[union-attr]  # already
    assert finished_channel.heard() == []
    # the flagged job ends cancelled; the other goes back to available, unannounced
    report = backend.release_worker("w", max_lost=3)
    assert (report.requeued, report.cancelled) == (1, 1)
    assert finished_channel.heard() == [str(flagged)]
    assert [ref.id for ref in claim(backend)] == [running]
    assert backend.release_worker("w", max_lost=1).dead == 1
    assert finished_channel.heard() == [str(running)]


def test_complete_in_announces_the_job_only_when_the_transaction_commits(
    backend: WatchedBackend, finished_channel: FinishedChannel
) -> None:
    [job_id] = enqueue(backend)
    [ref] = claim(backend)
    with backend.transaction() as conn:
        assert backend.complete_in(conn, ref, "1")
        assert finished_channel.heard() == []  # not yet committed
    assert finished_channel.heard() == [str(job_id)]


def test_the_finished_channel_is_another_identifier_than_the_queue_channel() -> None:
    for schema in ("stagecrew", "s_finished", "x" * MAX_IDENTIFIER_BYTES):
        settings = parse_url(with_schema(SERVER_URL, schema))
        assert settings.finished_channel != settings.channel
        assert len(settings.finished_channel.encode()) <= MAX_IDENTIFIER_BYTES
    # no schema's queue channel is another schema's finished channel
    a, b = parse_url(with_schema(SERVER_URL, "a")), parse_url(with_schema(SERVER_URL, "a:finished"))
    assert a.finished_channel != b.channel


# -- JobHandle.result with a real worker process ---------------------------------------------------
WORKER_APP = """
import asyncio, time
from stagecrew import App

app = App()

@app.task(name="slow_add")
def slow_add(a: int, b: int) -> int:
    time.sleep(0.3)
    return a + b

@app.task(name="slow_fail", max_attempts=1)
async def slow_fail() -> None:
    await asyncio.sleep(0.3)
    raise ValueError("boom")
"""


@pytest.fixture
def worker_app(url: str, tmp_path: Path) -> Iterator[App]:
    """An app on a watched backend, with a `stagecrew worker` process on the same schema."""
    app = App(url)
    app.use_backend(WatchedBackend(url))

    @app.task(name="slow_add")
    def slow_add(a: int, b: int) -> int: ...

    @app.task(name="slow_fail", max_attempts=1)
    def slow_fail() -> None: ...

    worker = start_worker(
        tmp_path, write_app(tmp_path, "result_app", WORKER_APP), {"STAGECREW_URL": url}
    )
    try:
        yield app
    finally:
        code, output = stop(worker)
        app.close()
    assert code == 0, output


@WAYS
def test_result_returns_the_value_a_worker_process_computed_after_one_read(
    worker_app: App, asynchronous: bool
) -> None:
    backend = worker_app.backend
    assert isinstance(backend, WatchedBackend)
    listening(backend)
    handle = worker_app.tasks["slow_add"].enqueue(1, 2)
    if asynchronous:
        value = in_thread(lambda: asyncio.run(handle.result_async(timeout=60)))()
    else:
        value = in_thread(lambda: handle.result(timeout=60))()
    assert value == 3
    assert (backend.gets, backend.reads) == (2, 1)  # before and after the one wait


@WAYS
def test_result_raises_job_failed_for_a_job_a_worker_process_dead_letters(
    worker_app: App, asynchronous: bool
) -> None:
    backend = worker_app.backend
    assert isinstance(backend, WatchedBackend)
    listening(backend)
    handle = worker_app.tasks["slow_fail"].enqueue()
    with pytest.raises(JobFailedError, match="ValueError: boom"):
        if asynchronous:
            in_thread(lambda: asyncio.run(handle.result_async(timeout=60)))()
        else:
            in_thread(lambda: handle.result(timeout=60))()
    assert (backend.gets, backend.reads) == (2, 1)


def test_result_raises_job_cancelled_when_another_backend_cancels_the_waiting_job(
    backend: WatchedBackend, other: PostgresBackend, url: str
) -> None:
    app = App(url)
    app.use_backend(backend)

    @app.task(name="t")
    def t() -> None: ...

    handle = app.tasks["t"].enqueue()
    listening(backend)
    cancelled = after_the_read(backend, lambda: other.cancel(handle.id))
    with pytest.raises(JobCancelledError):
        in_thread(lambda: handle.result(timeout=60))()
    cancelled()
    assert (backend.gets, backend.reads) == (2, 1)
