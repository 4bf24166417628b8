"""Real workers on PostgreSQL: sessions killed mid-run, and several worker processes on one schema.

Reads STAGECREW_TEST_POSTGRES_URL like test_postgres.py; skips without a server
(fails in CI).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.backends.test_postgres import URL as SERVER_URL
from tests.backends.test_postgres import (
    Schemas,
    _server_or_skip,
    terminate_sessions,
    with_schema,
)
from tests.support.processes import start_worker, stop, wait_for, write_app

from stagecrew import App, JobState
from stagecrew.backends.postgres import PostgresBackend
from stagecrew.testing.ledger import Ledger, check
from stagecrew.worker.runner import Worker

S = JobState


@pytest.fixture(scope="module", autouse=True)
def _postgres_server() -> None:
    _server_or_skip()


@pytest.fixture
def schema() -> Iterator[str]:
    schemas = Schemas()
    name = schemas.new()
    yield name
    schemas.drop()


@pytest.fixture
def url(schema: str) -> str:
    url = with_schema(SERVER_URL, schema)
    backend = PostgresBackend(url)
    backend.migrate()
    backend.close()
    return url


def unfinished(app: App) -> int:
    waiting = (S.AVAILABLE, S.SCHEDULED, S.RUNNING)
    return sum(q.count(s) for q in app.jobs.stats() for s in waiting)


def test_a_worker_finishes_every_job_while_its_sessions_are_killed(url: str, schema: str) -> None:
    app = App(url)
    runs: Counter[int] = Counter()

    @app.task(name="work")
    async def work(i: int) -> int:
        runs[i] += 1
        await asyncio.sleep(0.002)
        return i

    handles = work.enqueue_many([(i,) for i in range(400)])
    worker = Worker(app, concurrency=20, lease_seconds=2.0, poll_interval=0.2, claim_batch=20)
    loops: list[asyncio.AbstractEventLoop] = []
    exit_codes: list[int] = []

    async def run() -> None:
        loops.append(asyncio.get_running_loop())
        exit_codes.append(await worker.run(install_signal_handlers=False))

    thread = threading.Thread(target=asyncio.run, args=(run(),))
    thread.start()
    killed = 0
    try:
        for _ in range(4):
            time.sleep(0.25)
            killed += terminate_sessions(schema)
        assert wait_for(lambda: unfinished(app) == 0, timeout=60), app.jobs.stats()
    finally:
        wait_for(lambda: bool(loops), timeout=10)
        loops[0].call_soon_threadsafe(worker.request_stop)
        thread.join(30)
    assert exit_codes == [0]
    assert killed >= 4
    assert {app.jobs.get(h.id).state for h in handles} == {S.SUCCEEDED}
    assert set(runs) == set(range(400))
    app.close()


@pytest.mark.slow
def test_several_worker_processes_share_one_schema_and_never_run_an_attempt_twice(
    url: str, schema: str, tmp_path: Path
) -> None:
    ledger_path = tmp_path / "ledger.txt"
    app_ref = write_app(tmp_path)
    env = {"STAGECREW_URL": url, "LEDGER_PATH": str(ledger_path), "JOB_SECONDS": "0.01"}
    app = App(url)

    @app.task(name="work")
    def work(i: int) -> int: ...

    @app.task(name="awork")
    def awork(i: int) -> int: ...

    jobs = work.enqueue_many([(i,) for i in range(300)]) + awork.enqueue_many(
        [(i,) for i in range(300)]
    )
    ids = [j.id for j in jobs]
    workers = start_worker(
        tmp_path, app_ref, env, "--processes", "3", "--concurrency", "8", "--lease-seconds", "2"
    )
    killed = 0
    try:
        for _ in range(3):
            time.sleep(1.0)
            killed += terminate_sessions(schema)
        assert wait_for(lambda: unfinished(app) == 0, timeout=120), app.jobs.stats()
    finally:
        code, output = stop(workers)
    report = check(Ledger(ledger_path), ids)
    assert killed >= 3, output[-3000:]
    assert report.lost == frozenset(), output[-3000:]
    assert report.attempts_started_twice == frozenset(), output[-3000:]
    assert len(report.pids) >= 2, output[-3000:]
    assert {app.jobs.get(i).state for i in ids} == {S.SUCCEEDED}
    assert code == 0, output[-3000:]
    app.close()
