"""`ctx.transaction()`: a task's own writes and its job's success commit together or not at all."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from stagecrew import App, ConfigurationError, Context, ErrorKind, JobState
from stagecrew.backends.base import Ack, AckKind, JobFilter
from stagecrew.job import ClaimedJob
from stagecrew.worker.runner import Worker
from tests.backends import test_postgres
from tests.support.processes import start_worker, stop, wait_for, write_app
from tests.support.stores import fresh_store

psycopg = pytest.importorskip("psycopg")


@dataclass
class Store:
    url: str
    schema: str
    admin: psycopg.Connection  # type: ignore[type-arg]

    @property
    def payments(self) -> str:
        return f'"{self.schema}".payments'

    def paid(self) -> list[tuple[int, int]]:
        rows = self.admin.execute(f"SELECT job_id, attempt FROM {self.payments} ORDER BY 1, 2")
        return [(int(job_id), int(attempt)) for job_id, attempt in rows.fetchall()]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with fresh_store("postgres", tmp_path) as url:
        schema = parse_qs(urlsplit(url).query)["schema"][0]
        with psycopg.connect(test_postgres.URL, autocommit=True) as admin:
            admin.execute(f'CREATE TABLE "{schema}".payments (job_id bigint, attempt int)')
            yield Store(url, schema, admin)


def drain(app: App, **options: float) -> Worker:
    worker = Worker(app, concurrency=2, lease_seconds=5, poll_interval=0.01, **options)  # type: ignore[arg-type]
    asyncio.run(worker.drain())
    return worker


def test_writes_and_success_commit_together(store: Store) -> None:
    app = App(store.url)

    @app.task
    def pay(amount: int, ctx: Context) -> None:
        with ctx.transaction() as conn:
            conn.execute(f"INSERT INTO {store.payments} VALUES (%s, %s)", (ctx.job_id, ctx.attempt))

    handle = pay.enqueue(10)
    worker = drain(app)
    assert worker.acked[AckKind.COMPLETE] == 1  # counted as written, not sent again and fenced
    job = handle.get()
    assert job.state is JobState.SUCCEEDED
    assert job.result is None
    assert store.paid() == [(handle.id, 1)]
    app.close()


def test_a_workflow_member_completed_in_its_transaction_advances_the_workflow(
    store: Store,
) -> None:
    """complete_in runs the fan-in on the task's own connection: the next step is released by
    the same commit as the task's writes."""
    from stagecrew import chain

    app = App(store.url)

    @app.task
    def pay(amount: int, ctx: Context) -> int:
        with ctx.transaction() as conn:
            conn.execute(f"INSERT INTO {store.payments} VALUES (%s, %s)", (ctx.job_id, ctx.attempt))
        return amount

    @app.task
    def receipt(paid: None, note: str) -> str:
        return f"{note}: {paid}"

    handle = chain(pay.s(10), receipt.s("paid")).enqueue()
    drain(app)
    drain(app)
    assert (
        handle.result(timeout=10) == "paid: None"
    )  # a job completed in its transaction has no result
    assert len(store.paid()) == 1
    app.close()


def test_async_task_commits_with_async_with(store: Store) -> None:
    app = App(store.url)

    @app.task
    async def pay(ctx: Context) -> None:
        async with ctx.transaction() as conn:
            await conn.execute(
                f"INSERT INTO {store.payments} VALUES (%s, %s)", (ctx.job_id, ctx.attempt)
            )

    handle = pay.enqueue()
    drain(app)
    assert handle.get().state is JobState.SUCCEEDED
    assert store.paid() == [(handle.id, 1)]
    app.close()


def test_the_last_checkpoint_and_progress_are_stored_before_the_commit(store: Store) -> None:
    """The values still pending when the block ends (given within a second of the last write)
    are written before the job's success commits, not refused after it."""
    app = App(store.url)
    after_commit: list[str] = []

    @app.task
    def pay(ctx: Context) -> None:
        ctx.checkpoint_state({"row": 1})  # written at once
        ctx.progress(1, 2)
        ctx.checkpoint_state({"row": 2})  # within a second: pending when the block ends
        ctx.progress(2, 2, "paid")
        with ctx.transaction() as conn:
            conn.execute(f"INSERT INTO {store.payments} VALUES (%s, %s)", (ctx.job_id, ctx.attempt))
        ctx.progress(3, 3, "too late")  # the job succeeded: refused, without an error
        after_commit.append("returned")

    @app.task
    async def pay_async(ctx: Context) -> None:
        ctx.checkpoint_state({"row": 1})
        ctx.progress(1, 2)
        while (await app.jobs.get_async(ctx.job_id)).progress is None:  # the first writes landed
            await asyncio.sleep(0.01)
        ctx.checkpoint_state({"row": 2})
        ctx.progress(2, 2, "paid")
        async with ctx.transaction() as conn:
            await conn.execute(
                f"INSERT INTO {store.payments} VALUES (%s, %s)", (ctx.job_id, ctx.attempt)
            )
        ctx.progress(3, 3, "too late")
        after_commit.append("returned")

    handles = [pay.enqueue(), pay_async.enqueue()]
    worker = drain(app)
    assert worker.acked[AckKind.COMPLETE] == 2
    assert after_commit == ["returned", "returned"]
    for handle in handles:
        job = handle.get()
        assert job.state is JobState.SUCCEEDED
        assert job.progress is not None
        assert (job.progress.done, job.progress.total, job.progress.message) == (2, 2, "paid")
        stored = app.jobs.steps(handle.id).state
        assert stored is not None
        assert orjson.loads(stored.text) == {"row": 2}
    app.close()


def test_a_block_that_raises_rolls_back_its_writes_and_the_job_retries(store: Store) -> None:
    app = App(store.url)

    @app.task(max_attempts=3)
    def pay(ctx: Context) -> None:
        with ctx.transaction() as conn:
            conn.execute(f"INSERT INTO {store.payments} VALUES (%s, %s)", (ctx.job_id, ctx.attempt))
            raise RuntimeError("card declined")

    handle = pay.enqueue()
    drain(app)
    job = handle.get()
    assert job.state is JobState.SCHEDULED
    assert job.errors[-1].message == "card declined"
    assert store.paid() == []
    app.close()


def test_a_task_that_raises_after_its_commit_stays_succeeded(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    app = App(store.url)

    @app.task
    def pay(ctx: Context) -> None:
        with ctx.transaction() as conn:
            conn.execute(f"INSERT INTO {store.payments} VALUES (%s, %s)", (ctx.job_id, ctx.attempt))
        raise RuntimeError("after the fact")

    handle = pay.enqueue()
    with caplog.at_level(logging.WARNING, logger="stagecrew.worker"):
        worker = drain(app)
    assert handle.get().state is JobState.SUCCEEDED
    assert store.paid() == [(handle.id, 1)]
    assert "stays succeeded" in caplog.text
    assert worker.processed == 1
    app.close()


def test_a_lost_lease_rolls_back_the_writes(store: Store) -> None:
    """The first attempt's job is rescued while it is inside the block: its commit is refused."""
    app = App(store.url)

    @app.task(max_attempts=3)
    def pay(ctx: Context) -> None:
        with ctx.transaction() as conn:
            conn.execute(f"INSERT INTO {store.payments} VALUES (%s, %s)", (ctx.job_id, ctx.attempt))
            if ctx.attempt == 1:
                store.admin.execute(
                    f'UPDATE "{store.schema}".jobs SET lease_expires_at = 0 WHERE id = %s',
                    (ctx.job_id,),
                )
                assert app.backend.rescue().requeued == 1

    handle = pay.enqueue()
    drain(app)
    job = handle.get()
    assert job.state is JobState.SUCCEEDED
    assert [(e.attempt, e.kind) for e in job.errors] == [(1, ErrorKind.LOST)]
    assert store.paid() == [(handle.id, 2)]
    app.close()


def test_a_stale_claims_commit_after_requeue_and_reclaim_is_refused_and_rolls_back(
    store: Store,
) -> None:
    """Inside the block the job goes to the DLQ, is re-run and claimed as attempt 1 again."""
    app = App(store.url)
    taken_over: list[ClaimedJob] = []

    @app.task(max_attempts=1)
    def pay(ctx: Context) -> None:
        with ctx.transaction() as conn:
            conn.execute(f"INSERT INTO {store.payments} VALUES (%s, %s)", (ctx.job_id, ctx.attempt))
            if not taken_over:
                store.admin.execute(
                    f'UPDATE "{store.schema}".jobs SET lease_expires_at = 0 WHERE id = %s',
                    (ctx.job_id,),
                )
                assert app.backend.rescue().dead == 1
                assert app.backend.requeue(JobFilter(ids=frozenset({ctx.job_id}))) == 1
                taken_over.extend(app.backend.claim(["default"], "another-worker", 1, 30))

    handle = pay.enqueue()
    drain(app)
    [other] = taken_over
    assert other.attempt == 1  # the attempt users see repeats; the claim's token does not
    job = handle.get()
    assert (job.state, job.lease_owner) == (JobState.RUNNING, "another-worker")
    assert store.paid() == []
    assert app.backend.ack([Ack(other.ref, AckKind.COMPLETE, result="null")]) == [True]
    assert handle.get().state is JobState.SUCCEEDED
    app.close()


def test_a_timed_out_attempt_rolls_back_its_writes(store: Store) -> None:
    app = App(store.url)

    @app.task(timeout=0.2, max_attempts=3)
    def pay(ctx: Context) -> None:
        with ctx.transaction() as conn:
            conn.execute(f"INSERT INTO {store.payments} VALUES (%s, %s)", (ctx.job_id, ctx.attempt))
            time.sleep(0.5)

    handle = pay.enqueue()
    drain(app, stuck_grace=2.0)
    job = handle.get()
    assert job.state is JobState.SCHEDULED
    assert "timed out" in job.errors[-1].message
    assert store.paid() == []
    app.close()


def test_a_store_without_it_fails_the_attempt_with_a_clear_error() -> None:
    app = App("memory://")

    @app.task(max_attempts=1)
    def pay(ctx: Context) -> None:
        with ctx.transaction():
            pass

    handle = pay.enqueue()
    drain(app)
    job = handle.get()
    assert job.state is JobState.DEAD
    assert "ctx.transaction() needs PostgreSQL" in job.errors[-1].message
    assert not app.backend.capabilities.transactional_complete


def test_the_block_can_be_entered_once_per_attempt(store: Store) -> None:
    app = App(store.url)

    @app.task(max_attempts=1)
    def pay(ctx: Context) -> None:
        transaction = ctx.transaction()
        with transaction:
            pass
        with transaction:
            pass

    handle = pay.enqueue()
    drain(app)
    assert handle.get().state is JobState.SUCCEEDED  # the first block committed it


def test_outside_a_worker_it_is_a_configuration_error() -> None:
    ctx = Context(job_id=1, task="t", queue="q", attempt=1, max_attempts=1, enqueued_at=0.0)
    with pytest.raises(ConfigurationError):
        ctx.transaction()


CRASHING_APP = """
import os
from stagecrew import App, Context

app = App()
PAYMENTS = os.environ["PAYMENTS_TABLE"]

@app.task
def pay(ctx: Context) -> None:
    with ctx.transaction() as conn:
        conn.execute(f"INSERT INTO {PAYMENTS} VALUES (%s, %s)", (ctx.job_id, ctx.attempt))
        if ctx.attempt == 1:
            os._exit(9)  # the worker dies after the write, before the commit
"""


def test_a_worker_killed_before_the_commit_leaves_no_write_and_the_rerun_writes_once(
    store: Store, tmp_path: Path
) -> None:
    app_ref = write_app(tmp_path, "crashing_app", CRASHING_APP)
    app = App(store.url)

    @app.task(name="pay")
    def pay() -> None: ...

    handles = pay.enqueue_many([() for _ in range(5)])
    env = {"STAGECREW_URL": store.url, "PAYMENTS_TABLE": store.payments}
    worker = start_worker(
        tmp_path, app_ref, env, "--processes", "1", "--concurrency", "1", "--lease-seconds", "1"
    )
    try:
        finished = wait_for(
            lambda: all(h.get().state is JobState.SUCCEEDED for h in handles), timeout=60
        )
    finally:
        code, output = stop(worker)
    assert finished, output[-3000:]
    assert store.paid() == [(h.id, 2) for h in handles]
    assert code == 0, output[-3000:]
    app.close()
