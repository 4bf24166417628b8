"""The store goes away mid-run: workers ride it out, producers fail fast, no job is lost.

Each scenario runs real `stagecrew worker` processes (2 processes, 8 slots each, 1.5 s
leases) over a few hundred jobs that record every execution in a ledger outside the store,
and takes the store away while they run:

- PostgreSQL: a private cluster (initdb, on a free port) stopped with `-m immediate` and
  started again, then `pg_ctl restart -m immediate`; and, on the shared server, every session
  of the test's schema terminated (`pg_terminate_backend`), as a server restart would.
- Redis: a private redis-server (AOF, appendfsync always) SIGKILLed and started again.
- SQLite: another connection holds the write lock for a few seconds.

Passing means: no job lost, none left waiting or running, no (job, attempt) started twice,
and every job that ran more than once was in flight while the store was away. A producer that
enqueues while a server is down gets `EnqueueError` at once, with a message that says what is
wrong. The shared PostgreSQL and Redis are never restarted: other test runs use them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stagecrew import App, JobState
from stagecrew.backends.postgres import PostgresBackend
from stagecrew.backends.sqlite.backend import DEFAULT_BUSY_TIMEOUT_MS
from stagecrew.errors import EnqueueError
from stagecrew.task import Task
from stagecrew.testing.ledger import Ledger, check
from tests.backends.test_postgres import URL as SHARED_POSTGRES_URL
from tests.backends.test_postgres import Schemas, _server_or_skip, terminate_sessions, with_schema
from tests.support.processes import start_worker, stop, wait_for, write_app
from tests.support.servers import REDIS_BINARY, PostgresCluster, RedisServer

pytestmark = pytest.mark.slow

S = JobState
LEASE = 1.5
JOBS = 400
FAIL_FAST = 2.0
"""Seconds within which an enqueue against a store that is down must raise."""
OUTAGE = 2.0
"""Seconds a server stays down: longer than a lease, so leases do expire meanwhile."""


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


class Run:
    """Workers draining jobs from one store, and what the test did to that store meanwhile."""

    def __init__(self, tmp_path: Path, url: str, *, worker_url: str | None = None) -> None:
        self.app = App(url)

        # The workers run the ledger app's tasks; these stand-ins only enqueue them.
        @self.app.task(name="work", max_attempts=20)
        def work(i: int) -> None: ...

        @self.app.task(name="awork", max_attempts=20)
        def awork(i: int) -> None: ...

        self.work: Task[Any, Any] = work
        self.ids = [h.id for h in work.enqueue_many([(i,) for i in range(JOBS // 2)])]
        self.ids += [h.id for h in awork.enqueue_many([(i,) for i in range(JOBS // 2)])]
        self.ledger = Ledger(tmp_path / "ledger.txt")
        self.log = tmp_path / "workers.log"
        self.outages: list[tuple[float, float]] = []
        env = {
            "STAGECREW_URL": worker_url or url,
            "LEDGER_PATH": str(self.ledger.path),
            "JOB_MIN_SECONDS": "0.02",
            "JOB_SECONDS": "0.12",
            # An outage longer than a lease costs the jobs in flight a lost worker each; on a
            # loaded machine one job can lose several. What is tested here is that none is lost.
            "MAX_WORKER_LOSSES": "10",
        }
        self.workers = start_worker(
            tmp_path,
            write_app(tmp_path),
            env,
            *("--processes", "2", "--concurrency", "8", "--lease-seconds", str(LEASE)),
            log_file=self.log,
        )

    def wait_for_progress(self, jobs: int = 60) -> None:
        """Until `jobs` more executions have ended: the outage then hits a busy fleet."""
        target = self._ended() + jobs
        assert wait_for(lambda: self._ended() >= target, timeout=60), self.output()

    def _ended(self) -> int:
        return sum(e.event == "end" for e in self.ledger.entries())

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        started = time.time()
        try:
            yield
        finally:
            self.outages.append((started, time.time()))

    def enqueue_more(self, count: int) -> None:
        handles = self.work.enqueue_many([(JOBS + i,) for i in range(count)])
        self.ids += [h.id for h in handles]

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def finish(self) -> str:
        """Check the pass criteria once every job is done; returns the workers' log."""

        def unfinished() -> int:
            waiting = (S.AVAILABLE, S.SCHEDULED, S.RUNNING)
            return sum(q.count(s) for q in self.app.jobs.stats() for s in waiting)

        try:
            assert wait_for(lambda: unfinished() == 0, timeout=90), self.app.jobs.stats()
        finally:
            code, _ = stop(self.workers)
        output = self.output()
        tail = output[-4000:]
        report = check(self.ledger, self.ids)
        assert report.lost == frozenset(), tail
        assert report.attempts_started_twice == frozenset(), tail
        states = {j.id: j.state for j in self.app.jobs.list(limit=len(self.ids) + 100)}
        assert {states.get(i) for i in self.ids} == {S.SUCCEEDED}, tail
        assert code == 0, tail
        self._check_duplicates_come_from_the_outages(tail)
        self.app.close()
        print(f"outages={len(self.outages)} duplicate runs={report.duplicate_runs}")
        return output

    def _check_duplicates_come_from_the_outages(self, tail: str) -> None:
        """A job that started more than once was running (or not yet acked) during an outage.

        A lease is renewed every third of its length, so only a job in flight while the store
        was away can lose it: its first start lies within a lease of an outage.
        """
        starts: dict[int, list[float]] = defaultdict(list)
        for entry in self.ledger.entries():
            if entry.event == "start":
                starts[entry.job_id].append(entry.at)
        elsewhere = {
            job_id: [round(t, 3) for t in times]
            for job_id, times in starts.items()
            if len(times) > 1
            and not any(a - LEASE <= min(times) <= b + LEASE for a, b in self.outages)
        }
        assert not elsewhere, (
            f"jobs ran again away from the outages {self.outages}: {elsewhere}\n{tail}"
        )


def enqueue_fails_fast(work: Task[Any, Any], *, asynchronous: bool = False) -> str:
    """Enqueue while the store is down: EnqueueError within FAIL_FAST seconds; its message."""
    started = time.monotonic()
    with pytest.raises(EnqueueError) as raised:
        if asynchronous:
            asyncio.run(work.enqueue_async(-1))
        else:
            work.enqueue(-1)
    elapsed = time.monotonic() - started
    assert elapsed < FAIL_FAST, f"enqueue took {elapsed:.2f}s to fail: {raised.value}"
    return str(raised.value)


def fresh_producer(url: str) -> Task[Any, Any]:
    """A producer that never reached the store (it started during the outage)."""
    app = App(url)

    @app.task(name="work")
    def work(i: int) -> None: ...

    return work


def assert_workers_logged_their_recovery(output: str, *, outage_seen: bool = True) -> None:
    """Each worker process whose claim failed later logged that the store is reachable again."""
    failed: dict[str, int] = {}
    recovered: dict[str, int] = {}
    for number, line in enumerate(output.splitlines()):
        fields = line.split()
        if "stagecrew.worker: claim failed" in line:
            failed[fields[3]] = number
        elif "stagecrew.worker: store reachable again" in line:
            recovered[fields[3]] = number
    if outage_seen:
        assert failed, f"no worker logged a failed claim:\n{output[-4000:]}"
    for process, number in failed.items():
        assert recovered.get(process, -1) > number, f"{process} never logged its recovery"


def sleep_until(deadline: float) -> None:
    time.sleep(max(0.0, deadline - time.monotonic()))


# -- PostgreSQL -------------------------------------------------------------------------------
@pytest.fixture
def postgres_cluster() -> Iterator[PostgresCluster]:
    reason = PostgresCluster.missing_reason()
    if reason is not None:
        _missing(f"a private PostgreSQL cluster cannot run here: {reason}")
    cluster = PostgresCluster()
    try:
        cluster.create()
        yield cluster
    finally:
        cluster.remove()


def test_postgres_restarted_mid_run_loses_no_job_and_enqueue_fails_fast_while_down(
    tmp_path: Path, postgres_cluster: PostgresCluster
) -> None:
    # trust authentication ignores the password: it is here to show it never appears
    url = postgres_cluster.url.replace("postgres@", "postgres:s3cret@")
    backend = PostgresBackend(url)
    backend.migrate()
    backend.close()
    run = Run(tmp_path, url)
    run.wait_for_progress()

    with run.outage():
        back_at = time.monotonic() + OUTAGE
        postgres_cluster.stop("immediate")
        messages = [
            enqueue_fails_fast(run.work),
            enqueue_fails_fast(run.work, asynchronous=True),
            enqueue_fails_fast(fresh_producer(url)),
        ]
        sleep_until(back_at)
        postgres_cluster.start()
    for message in messages:
        assert f"127.0.0.1:{postgres_cluster.port}" in message, message
        assert "Check that the server is running and reachable" in message, message
        assert "nothing was written" in message, message
        assert "s3cret" not in message, message

    run.enqueue_more(300)
    run.wait_for_progress()
    with run.outage():
        postgres_cluster.restart("immediate")  # sessions cut again, crash recovery on start

    output = run.finish()
    assert_workers_logged_their_recovery(output)
    assert "s3cret" not in output


def test_postgres_sessions_terminated_on_the_shared_server_mid_run_lose_no_job(
    tmp_path: Path,
) -> None:
    _server_or_skip()
    schemas = Schemas()
    schema = schemas.new()
    try:
        url = with_schema(SHARED_POSTGRES_URL, schema)
        backend = PostgresBackend(url)
        backend.migrate()
        backend.close()
        run = Run(tmp_path, url)
        killed = 0
        for _ in range(3):
            run.wait_for_progress(40)
            with run.outage():
                killed += terminate_sessions(schema)
        output = run.finish()
    finally:
        schemas.drop()
    assert killed >= 6, output[-4000:]
    assert "discarding closed connection" in output, output[-4000:]  # replaced, not reused
    # a session killed while idle is replaced unnoticed; one killed mid-statement fails it
    assert_workers_logged_their_recovery(output, outage_seen=False)


# -- Redis ----------------------------------------------------------------------------------------
def test_redis_restarted_mid_run_loses_no_job_and_enqueue_fails_fast_while_down(
    tmp_path: Path,
) -> None:
    if REDIS_BINARY is None:
        _missing("redis-server is not installed: the Redis outage test starts its own")
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory, appendonly="yes", appendfsync="always")
    server.start()
    try:
        url = f"{server.url}?prefix=outage"
        run = Run(tmp_path, url)
        run.wait_for_progress()
        with run.outage():
            back_at = time.monotonic() + OUTAGE
            server.crash()
            messages = [
                enqueue_fails_fast(run.work),
                enqueue_fails_fast(run.work, asynchronous=True),
                enqueue_fails_fast(fresh_producer(url)),
            ]
            sleep_until(back_at)
            server.start()
        for message in messages:
            assert f"127.0.0.1:{server.port}" in message, message
            assert "Check that Redis is running and reachable" in message, message
        run.enqueue_more(200)
        output = run.finish()
    finally:
        server.crash()
    assert_workers_logged_their_recovery(output)


# -- SQLite ---------------------------------------------------------------------------------------
LOCK_SECONDS = 3.5


@pytest.mark.parametrize(
    "worker_busy_ms",
    [None, 1000],
    ids=["workers-wait-for-the-lock", "workers-retry-past-their-busy-timeout"],
)
def test_sqlite_write_lock_held_for_seconds_mid_run_loses_no_job(
    tmp_path: Path, worker_busy_ms: int | None
) -> None:
    """A producer waits for the lock up to its busy timeout (5 s by default), then fails.

    SQLite has one writer at a time, so a held write lock is normal, not an outage: an
    enqueue waits for it like any other writer, and raises `EnqueueError` naming
    `busy_timeout_ms` only once it has waited that long.
    """
    path = tmp_path / "jobs.db"
    url = f"sqlite:///{path}"
    worker_url = url if worker_busy_ms is None else f"{url}?busy_timeout_ms={worker_busy_ms}"
    run = Run(tmp_path, url, worker_url=worker_url)
    run.wait_for_progress()

    locked = threading.Event()
    released: list[float] = []

    def hold_the_write_lock() -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("BEGIN EXCLUSIVE")
            locked.set()
            time.sleep(LOCK_SECONDS)
            released.append(time.monotonic())
            conn.execute("COMMIT")
        finally:
            conn.close()

    holder = threading.Thread(target=hold_the_write_lock)
    with run.outage():
        holder.start()
        assert locked.wait(10)
        impatient = fresh_producer(f"{url}?busy_timeout_ms=300")
        started = time.monotonic()
        with pytest.raises(EnqueueError, match=r"busy_timeout_ms=300.*raise \?busy_timeout_ms"):
            impatient.enqueue(-1)
        assert 0.3 <= time.monotonic() - started < FAIL_FAST
        started = time.monotonic()
        run.ids.append(run.work.enqueue(-2).id)  # waits for the lock, then goes in
        waited = time.monotonic() - started
        holder.join()
    assert waited < DEFAULT_BUSY_TIMEOUT_MS / 1000
    assert started + waited >= released[0], "the enqueue returned while the lock was held"

    output = run.finish()
    if worker_busy_ms is None:
        assert "database is locked" not in output, output[-4000:]
    else:
        assert "database is locked" in output, output[-4000:]
        assert_workers_logged_their_recovery(output)
