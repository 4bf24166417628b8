"""The PostgreSQL engine: what only a server engine can promise, beyond the conformance suite.

The conformance suite runs on PostgreSQL in test_conformance.py, through the engine
registry (`stagecrew.testing.engines`), which also makes the schemas used here: it reads
STAGECREW_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test). Every
test gets schemas of its own, with random names, dropped afterwards. Without a reachable
server these tests skip, except in CI (the CI variable set), where that is a failure.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import psycopg
import pytest

from stagecrew import App, Retry
from stagecrew.backends import backend_from_url
from stagecrew.backends.base import Ack, AckKind, JobFilter, Retention
from stagecrew.backends.postgres import PostgresBackend, schema_version
from stagecrew.backends.postgres.settings import parse_url
from stagecrew.backends.records import WORKER_LOST
from stagecrew.clock import FakeClock
from stagecrew.errors import (
    BackendError,
    ConfigurationError,
    EnqueueError,
    SchemaOutOfDateError,
)
from stagecrew.job import JobRef, JobState, NewJob
from stagecrew.testing.engines import POSTGRES_SERVER, Schemas, with_schema
from stagecrew.worker.runner import Worker

URL = POSTGRES_SERVER.url
PAYLOAD = '{"args":[],"kwargs":{}}'
S = JobState
_server_or_skip = POSTGRES_SERVER.require


@pytest.fixture(scope="module", autouse=True)
def _postgres_server() -> None:
    _server_or_skip()


def admin() -> psycopg.Connection[Any]:
    return psycopg.connect(URL, autocommit=True)


@pytest.fixture
def schemas() -> Iterator[Schemas]:
    made = Schemas()
    yield made
    made.drop()


# -- helpers for the PostgreSQL-specific tests ----------------------------------------------
@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def schema(schemas: Schemas) -> str:
    return schemas.new()


@pytest.fixture
def backend(schema: str, clock: FakeClock) -> Iterator[PostgresBackend]:
    b = PostgresBackend(with_schema(URL, schema), clock)
    b.migrate()
    yield b
    b.close()


def job(task: str = "t", **fields: Any) -> NewJob:
    return NewJob(task, PAYLOAD, **fields)


def count_jobs(schema: str) -> int:
    with admin() as conn:
        row = conn.execute(
            psycopg.sql.SQL("SELECT count(*) FROM {}.jobs").format(psycopg.sql.Identifier(schema))
        ).fetchone()
    assert row is not None
    return int(row[0])


def terminate_sessions(schema: str) -> int:
    """Kill every session of the backends on `schema`, as a server restart would.

    Sessions are told apart by their application_name (`stagecrew:<schema>`),
    so tests running at the same time on the same database are left alone.
    """
    with admin() as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND application_name = %s",
            (f"stagecrew:{schema}"[:63],),
        ).fetchall()
    return len(rows)


def retrying(fn: Callable[[], Any], seconds: float = 15.0) -> Any:
    """Call `fn` until it stops raising BackendError, as the worker's claim/ack loops do."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return fn()
        except BackendError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class SkewedClock:
    """A worker clock an hour fast: not a FakeClock, so the server's clock must win."""

    def now(self) -> float:
        return time.time() + 3600.0


# -- URL and construction ----------------------------------------------------------------------
def test_url_options_are_taken_out_before_the_url_reaches_libpq() -> None:
    settings = parse_url(
        "postgresql://u:secret@db.example.com:6543/app?schema=jobs&pool_max=8&pool_min=2"
        "&sslmode=require&task_pool_max=3"
    )
    assert settings.schema == "jobs"
    assert (settings.pool_min, settings.pool_max, settings.task_pool_max) == (2, 8, 3)
    assert "schema" not in settings.conninfo
    assert "pool_max" not in settings.conninfo
    assert "sslmode=require" in settings.conninfo
    assert settings.where == "u@db.example.com:6543/app"
    assert "secret" not in settings.where


def test_libpq_parameters_in_the_url_reach_the_server_unchanged(schema: str) -> None:
    options = "options=-c%20statement_timeout%3D12345&application_name=bench%20one"
    backend = PostgresBackend(f"{with_schema(URL, schema)}&{options}")
    backend.migrate()
    with backend._pool.connection() as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("12345ms",)
        assert conn.execute("SHOW application_name").fetchone() == ("bench one",)
    backend.close()


def test_one_thread_enqueueing_keeps_to_one_connection(schema: str) -> None:
    """A new pool's first checkout waits for the pool's connection rather than asking for one
    before it is ready, which would open a second that the two then alternate with."""
    backend = PostgresBackend(with_schema(URL, schema))
    backend.migrate()
    for _ in range(20):
        backend.enqueue([job()])
    assert backend._pool._get_pool().get_stats()["pool_size"] == 1
    backend.close()


def test_a_new_asyncio_pool_waits_for_its_first_connection(schema: str) -> None:
    backend = PostgresBackend(with_schema(URL, schema))
    backend.migrate()

    async def one_by_one() -> int:
        for _ in range(20):
            await backend.enqueue_async([job()])
        [entry] = backend._apools._pools.values()
        return entry.pool.get_stats()["pool_size"]

    assert asyncio.run(one_by_one()) == 1
    backend.close()


@pytest.mark.parametrize(
    "query", ["pool_max=zero", "pool_max=0", "pool_min=5&pool_max=2", "schema="]
)
def test_bad_url_options_are_configuration_errors(query: str) -> None:
    with pytest.raises(ConfigurationError):
        PostgresBackend(f"postgresql://localhost/db?{query}")


def test_postgres_urls_pick_this_engine_without_connecting() -> None:
    for scheme in ("postgres", "postgresql"):
        backend = backend_from_url(f"{scheme}://nobody@127.0.0.1:1/none?schema=x")
        assert isinstance(backend, PostgresBackend)
        assert backend.capabilities.server_clock
        assert backend.capabilities.transactional_enqueue
        backend.close()


# -- migrations ------------------------------------------------------------------------------
def test_prepare_on_an_unmigrated_schema_names_stagecrew_migrate_and_creates_nothing(
    schema: str,
) -> None:
    backend = PostgresBackend(with_schema(URL, schema))
    with pytest.raises(SchemaOutOfDateError, match="stagecrew migrate"):
        backend.prepare()
    with pytest.raises(SchemaOutOfDateError, match="stagecrew migrate"):
        backend.preflight()
    with admin() as conn:
        found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
    assert found is None
    backend.close()


def test_prepare_on_an_older_schema_names_stagecrew_migrate(schema: str) -> None:
    backend = PostgresBackend(with_schema(URL, schema))
    backend.migrate()
    with admin() as conn:
        conn.execute(
            psycopg.sql.SQL("DELETE FROM {}.schema_migrations").format(
                psycopg.sql.Identifier(schema)
            )
        )
    with pytest.raises(SchemaOutOfDateError, match=r"version 0.*stagecrew migrate"):
        backend.prepare()
    backend.close()


def test_app_refuses_an_unmigrated_schema_and_enqueue_says_to_migrate(schema: str) -> None:
    app = App(with_schema(URL, schema))

    @app.task
    def noop() -> None: ...

    with pytest.raises(EnqueueError, match="stagecrew migrate"):
        noop.enqueue()
    app.close()


def test_migrate_is_idempotent_and_records_the_version(schema: str) -> None:
    backend = PostgresBackend(with_schema(URL, schema))
    for _ in range(3):
        backend.migrate()
    backend.prepare()
    with admin() as conn:
        rows = conn.execute(
            psycopg.sql.SQL("SELECT version FROM {}.schema_migrations ORDER BY version").format(
                psycopg.sql.Identifier(schema)
            )
        ).fetchall()
    assert [r[0] for r in rows] == list(range(1, schema_version() + 1))
    backend.close()


def test_upgrading_a_schema_to_the_fencing_token_keeps_a_claim_in_flight_matching(
    schema: str,
) -> None:
    """Schema 2 adds claims; jobs written under schema 1 start from their attempt."""
    backend = PostgresBackend(with_schema(URL, schema))
    statements = backend._sql
    jobs = psycopg.sql.Identifier(schema, "jobs")
    with admin() as conn, conn.transaction():
        conn.execute(statements.get("migrate_bootstrap"))
        [(version, name, script)] = [m for m in statements.migrations() if m[0] == 1]
        conn.execute(script)
        conn.execute(statements.get("migrate_record"), {"version": version, "name": name})
        insert = psycopg.sql.SQL(
            "INSERT INTO {} (id, task, queue, state, payload, run_at, attempt, max_attempts,"
            " enqueued_at, lease_owner, lease_expires_at, finished_at)"
            " VALUES (%s, 't', 'default', %s, %s, 0, %s, 5, 0, %s, %s, %s)"
        ).format(jobs)
        conn.execute(insert, (1, "running", PAYLOAD, 2, "w1", time.time() + 30, None))
        conn.execute(insert, (2, "dead", PAYLOAD, 3, None, None, 0))
    with pytest.raises(SchemaOutOfDateError, match="version 1"):
        backend.prepare()
    try:
        backend.migrate()
        backend.prepare()
        running, dead = backend.get(1), backend.get(2)
        assert running is not None and dead is not None
        assert (running.claims, dead.claims) == (2, 3)
        in_flight = JobRef(1, 2)  # claimed before the upgrade: its token is its attempt
        assert backend.heartbeat("w1", [in_flight], 30.0).lost == frozenset()
        assert backend.ack([Ack(in_flight, AckKind.COMPLETE, result="1")]) == [True]
        assert backend.requeue(JobFilter(ids=frozenset({2}))) == 1
        [again] = backend.claim(["default"], "w2", 1, 30.0)
        assert (again.id, again.attempt, again.token) == (2, 1, 4)
    finally:
        backend.close()


def test_preflight_on_a_migrated_schema_warns_about_settings_that_hurt_a_queue(
    backend: PostgresBackend,
) -> None:
    warnings = backend.preflight()
    with admin() as conn:
        row = conn.execute("SHOW autovacuum").fetchone()
    assert row is not None
    assert any("autovacuum is off" in w for w in warnings) == (row[0] == "off")


def test_migration_sets_aggressive_autovacuum_on_the_jobs_table(backend: PostgresBackend) -> None:
    with admin() as conn:
        row = conn.execute(
            "SELECT reloptions FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = 'jobs'",
            (backend.schema,),
        ).fetchone()
    assert row is not None
    options = dict(option.split("=") for option in row[0])
    assert float(options["autovacuum_vacuum_scale_factor"]) <= 0.05


def test_concurrent_migrate_from_many_threads_applies_each_migration_once(schema: str) -> None:
    url = with_schema(URL, schema)
    failures: list[BaseException] = []
    barrier = threading.Barrier(8)

    def migrate() -> None:
        backend = PostgresBackend(url)
        try:
            barrier.wait()
            backend.migrate()
        except BaseException as exc:
            failures.append(exc)
        finally:
            backend.close()

    threads = [threading.Thread(target=migrate) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == []
    PostgresBackend(url).prepare()


def _migrate_in_a_process(url: str, start_at: float) -> None:
    time.sleep(max(0.0, start_at - time.time()))
    PostgresBackend(url).migrate()


def test_concurrent_migrate_from_many_processes_succeeds_everywhere(schema: str) -> None:
    url = with_schema(URL, schema)
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 2.0
    processes = [ctx.Process(target=_migrate_in_a_process, args=(url, start_at)) for _ in range(4)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(60)
    assert [p.exitcode for p in processes] == [0, 0, 0, 0]
    backend = PostgresBackend(url)
    backend.prepare()
    assert backend.enqueue([job()])[0].created
    backend.close()


def test_two_schemas_in_one_database_are_independent(schemas: Schemas, clock: FakeClock) -> None:
    first = PostgresBackend(with_schema(URL, schemas.new()), clock)
    second = PostgresBackend(with_schema(URL, schemas.new()), clock)
    for b in (first, second):
        b.migrate()
    first.enqueue([job(idempotency_key="k")])
    [entry] = second.enqueue([job(idempotency_key="k")])
    assert entry.created
    assert len(first.claim(["default"], "w", 10, 30)) == 1
    assert len(second.claim(["default"], "w", 10, 30)) == 1
    first.close()
    second.close()


@pytest.mark.parametrize("batch", [1, 3], ids=["one", "batch"])
def test_a_key_stored_by_a_concurrent_transaction_returns_that_jobs_id(
    backend: PostgresBackend, batch: int
) -> None:
    with psycopg.connect(URL) as conn:
        conn.execute("BEGIN")
        [theirs] = backend.enqueue_in(conn, [job(idempotency_key="k")])
        outcome: list[Any] = []
        ours = threading.Thread(
            target=lambda: outcome.append(
                backend.enqueue([job(idempotency_key="k")] + [job() for _ in range(batch - 1)])
            )
        )
        ours.start()  # blocks on the uncommitted key, then finds it
        time.sleep(0.3)
        conn.commit()
        ours.join(10)
    entries = outcome[0]
    assert (entries[0].id, entries[0].created) == (theirs.id, False)
    assert all(e.created for e in entries[1:])
    assert len(backend.list_jobs(JobFilter())) == batch


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_large_batch_without_keys_is_copied_with_the_same_fields_and_ids_in_order(
    backend: PostgresBackend, clock: FakeClock, mode: str
) -> None:
    now = clock.now()
    batch = [
        job(f"t{i}", queue=f"q{i % 2}", priority=i % 5, delay=60.0 if i % 3 == 0 else 0.0)
        for i in range(500)
    ] + [job("past", run_at=now - 10.0), job("future", run_at=now + 10.0)]
    if mode == "sync":
        entries = backend.enqueue(batch)
    else:
        entries = asyncio.run(backend.enqueue_async(batch))
    ids = [e.id for e in entries]
    assert all(e.created for e in entries)
    assert ids == sorted(set(ids))
    stored = {j.id: j for j in backend.list_jobs(JobFilter())}
    for entry, new in zip(entries, batch, strict=True):
        got = stored[entry.id]
        assert (got.task, got.queue, got.priority) == (new.task, new.queue, new.priority)
        due = now + new.delay if new.run_at is None else new.run_at
        assert got.run_at == pytest.approx(due, abs=1e-3)
        assert got.state is (S.SCHEDULED if due > now else S.AVAILABLE)
        assert got.enqueued_at == pytest.approx(now, abs=1e-3)


def test_a_large_batch_that_fails_part_way_writes_nothing(
    backend: PostgresBackend, schema: str
) -> None:
    batch = [job() for _ in range(300)] + [job("bad\x00task")] + [job() for _ in range(300)]
    with pytest.raises(EnqueueError, match="nothing was written"):
        backend.enqueue(batch)
    assert count_jobs(schema) == 0
    assert len(backend.enqueue([job() for _ in range(300)])) == 300


# -- transactional enqueue -------------------------------------------------------------------
def test_enqueue_in_a_committed_transaction_is_enqueued_only_at_commit(
    backend: PostgresBackend,
) -> None:
    with psycopg.connect(URL) as conn:
        with conn.transaction():
            [entry] = backend.enqueue_in(conn, [job("in-tx")])
            assert entry.created
            assert backend.claim(["default"], "w", 10, 30) == []  # not visible before commit
        claimed = backend.claim(["default"], "w", 10, 30)
    assert [c.id for c in claimed] == [entry.id]


def test_enqueue_in_a_rolled_back_transaction_is_never_enqueued(
    backend: PostgresBackend, schema: str
) -> None:
    class Boom(Exception):
        pass

    with psycopg.connect(URL) as conn, pytest.raises(Boom), conn.transaction():
        backend.enqueue_in(conn.cursor(), [job("lost", idempotency_key="k")])
        raise Boom
    assert count_jobs(schema) == 0
    assert backend.claim(["default"], "w", 10, 30) == []
    [again] = backend.enqueue([job(idempotency_key="k")])
    assert again.created  # the key was never taken


def test_a_fair_keyed_enqueue_in_is_rolled_back_with_the_callers_transaction(
    backend: PostgresBackend, schema: str
) -> None:
    """A keyed batch writes the fairness table too: none of it may commit on its own."""
    with psycopg.connect(URL) as conn:
        backend.enqueue_in(conn, [job("lost", fairness_key="tenant"), job(fairness_key="b")])
        conn.rollback()
    assert count_jobs(schema) == 0
    with psycopg.connect(URL) as conn:
        [entry] = backend.enqueue_in(conn, [job("kept", fairness_key="tenant")])
        conn.commit()
    assert [c.id for c in backend.claim(["default"], "w", 10, 30)] == [entry.id]


def test_enqueue_in_keeps_the_callers_transaction_and_search_path(
    backend: PostgresBackend,
) -> None:
    with psycopg.connect(URL) as conn:
        conn.execute("SET search_path TO pg_catalog")
        conn.execute("CREATE TEMP TABLE orders (id int)")
        conn.execute("INSERT INTO orders VALUES (1)")
        backend.enqueue_in(conn, [job()])
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert conn.execute("SHOW search_path").fetchone() == ("pg_catalog",)
        conn.rollback()
    assert backend.list_jobs(JobFilter()) == []


def test_enqueue_in_async_commits_and_rolls_back_with_the_callers_transaction(
    backend: PostgresBackend, schema: str
) -> None:
    async def scenario() -> int:
        async with await psycopg.AsyncConnection.connect(URL) as conn:
            async with conn.transaction():
                [kept] = await backend.enqueue_in_async(conn, [job("kept")])
            try:
                async with conn.transaction():
                    await backend.enqueue_in_async(conn.cursor(), [job("dropped")])
                    raise RuntimeError("roll back")
            except RuntimeError:
                pass
        return kept.id

    kept_id = asyncio.run(scenario())
    assert [j.id for j in backend.list_jobs(JobFilter())] == [kept_id]
    assert count_jobs(schema) == 1


def test_enqueue_in_with_a_broken_statement_raises_enqueue_error_and_aborts_the_transaction(
    backend: PostgresBackend,
) -> None:
    with psycopg.connect(URL) as conn:
        with pytest.raises(EnqueueError, match="roll it back"):
            backend.enqueue_in(conn, [job(priority=2**40)])  # out of range for the column
        conn.rollback()


def test_enqueue_in_unwraps_sqlalchemy_and_django_style_connection_wrappers(
    backend: PostgresBackend,
) -> None:
    class Fairy:  # SQLAlchemy's pooled connection: .driver_connection is the psycopg one
        def __init__(self, conn: psycopg.Connection[Any]) -> None:
            self.driver_connection = conn

    class SAConnection:  # sqlalchemy.engine.Connection: .connection is the fairy
        def __init__(self, conn: psycopg.Connection[Any]) -> None:
            self.connection = Fairy(conn)

    class DjangoWrapper:  # django.db connection: connects lazily, then .connection
        def __init__(self, conn: psycopg.Connection[Any]) -> None:
            self.connection: psycopg.Connection[Any] | None = None
            self._conn = conn

        def ensure_connection(self) -> None:
            self.connection = self._conn

    with psycopg.connect(URL) as conn:
        for wrapper in (SAConnection(conn), DjangoWrapper(conn)):
            with conn.transaction():
                [entry] = backend.enqueue_in(wrapper, [job()])
            assert backend.get(entry.id) is not None


def test_enqueue_in_rejects_objects_that_are_not_psycopg_connections(
    backend: PostgresBackend,
) -> None:
    with pytest.raises(TypeError):
        backend.enqueue_in(object(), [job()])


# -- completing with the task's own writes ------------------------------------------------------
@pytest.fixture
def ledger_table(schema: str) -> Iterator[str]:
    table = f"{schema}_ledger"
    with admin() as conn:
        conn.execute(
            psycopg.sql.SQL("CREATE TABLE {} (note text)").format(psycopg.sql.Identifier(table))
        )
    yield table
    with admin() as conn:
        conn.execute(psycopg.sql.SQL("DROP TABLE {}").format(psycopg.sql.Identifier(table)))


def notes(table: str) -> list[str]:
    with admin() as conn:
        rows = conn.execute(
            psycopg.sql.SQL("SELECT note FROM {}").format(psycopg.sql.Identifier(table))
        ).fetchall()
    return [r[0] for r in rows]


def test_complete_in_commits_the_tasks_writes_and_the_success_together(
    backend: PostgresBackend, ledger_table: str
) -> None:
    backend.enqueue([job()])
    [claimed] = backend.claim(["default"], "w", 1, 30)
    insert = psycopg.sql.SQL("INSERT INTO {} VALUES ('paid')").format(
        psycopg.sql.Identifier(ledger_table)
    )
    with backend.transaction() as conn:
        conn.execute(insert)
        assert backend.complete_in(conn, claimed.ref, '"done"')
        assert backend.get(claimed.id).state is S.RUNNING  # type: ignore[union-attr]
    stored = backend.get(claimed.id)
    assert stored is not None
    assert (stored.state, stored.result) == (S.SUCCEEDED, "done")
    assert notes(ledger_table) == ["paid"]
    assert backend.ack([Ack(claimed.ref, AckKind.COMPLETE, result='"again"')]) == [False]


def test_complete_in_rolled_back_leaves_neither_the_writes_nor_the_success(
    backend: PostgresBackend, ledger_table: str
) -> None:
    backend.enqueue([job()])
    [claimed] = backend.claim(["default"], "w", 1, 30)
    insert = psycopg.sql.SQL("INSERT INTO {} VALUES ('paid')").format(
        psycopg.sql.Identifier(ledger_table)
    )
    with pytest.raises(ZeroDivisionError), backend.transaction() as conn:
        conn.execute(insert)
        assert backend.complete_in(conn, claimed.ref, "1")
        _ = 1 / 0
    assert backend.get(claimed.id).state is S.RUNNING  # type: ignore[union-attr]
    assert notes(ledger_table) == []


def test_complete_in_for_a_lost_lease_returns_false_and_changes_nothing(
    backend: PostgresBackend, clock: FakeClock
) -> None:
    backend.enqueue([job()])
    [stale] = backend.claim(["default"], "w1", 1, 30)
    clock.advance(31)
    assert backend.rescue().requeued == 1
    [fresh] = backend.claim(["default"], "w2", 1, 30)
    with backend.transaction() as conn:
        assert backend.complete_in(conn, stale.ref, "1") is False
    job_now = backend.get(stale.id)
    assert job_now is not None
    assert (job_now.state, job_now.attempt, job_now.lease_owner) == (S.RUNNING, 2, "w2")
    assert fresh.attempt == 2


def test_complete_in_async_commits_with_the_callers_transaction(
    backend: PostgresBackend, ledger_table: str
) -> None:
    backend.enqueue([job()])
    [claimed] = backend.claim(["default"], "w", 1, 30)
    insert = psycopg.sql.SQL("INSERT INTO {} VALUES ('async')").format(
        psycopg.sql.Identifier(ledger_table)
    )

    async def scenario() -> bool:
        async with backend.transaction_async() as conn:
            await conn.execute(insert)
            return await backend.complete_in_async(conn, claimed.ref, "2")

    assert asyncio.run(scenario())
    assert backend.get(claimed.id).state is S.SUCCEEDED  # type: ignore[union-attr]
    assert notes(ledger_table) == ["async"]


# -- instant pickup ----------------------------------------------------------------------------
def test_wait_returns_on_an_enqueue_from_another_connection(backend: PostgresBackend) -> None:
    other = PostgresBackend(backend.url)  # its own pool: a different session, maybe another host

    async def scenario() -> float:
        await backend.wait(["default"], 5.0)  # starts listening (returns at once the first time)
        assert backend.claim(["default"], "w", 10, 30) == []
        waiter = asyncio.create_task(backend.wait(["default"], 10.0))
        await asyncio.sleep(0.2)
        assert not waiter.done()
        started = time.monotonic()
        await asyncio.to_thread(other.enqueue, [job()])
        await waiter
        return time.monotonic() - started

    try:
        assert asyncio.run(scenario()) < 1.0
    finally:
        other.close()


def test_wait_ignores_notifications_for_other_queues(backend: PostgresBackend) -> None:
    async def scenario() -> float:
        await backend.wait(["mine"], 5.0)
        waiter = asyncio.create_task(backend.wait(["mine"], 0.6))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await asyncio.to_thread(backend.enqueue, [job(queue="theirs")])
        await waiter
        return time.monotonic() - started

    assert asyncio.run(scenario()) >= 0.4


def test_a_notification_between_fetch_and_wait_is_not_missed(backend: PostgresBackend) -> None:
    async def scenario() -> float:
        await backend.wait(["default"], 5.0)
        assert await backend.claim_async(["default"], "w", 10, 30) == []
        await asyncio.to_thread(backend.enqueue, [job()])
        await asyncio.sleep(0.2)  # the NOTIFY arrives before the worker waits again
        started = time.monotonic()
        await backend.wait(["default"], 10.0)
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 0.5


def test_enqueue_sends_one_notification_per_queue_per_batch(backend: PostgresBackend) -> None:
    with psycopg.connect(URL, autocommit=True) as listener:
        listener.execute(
            psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(backend.settings.channel))
        )
        for size in (1, 100, 1000):  # one job, one statement, COPY
            backend.enqueue([job(queue="a") for _ in range(size)])
            backend.enqueue([job(queue="a") for _ in range(size)] + [job(queue="b")] * size)
        heard = [n.payload for n in listener.notifies(timeout=1.0)]
    assert heard.count("a") == 6
    assert heard.count("b") == 3


def test_wait_survives_terminated_connections_and_listens_again(backend: PostgresBackend) -> None:
    async def scenario() -> float:
        await backend.wait(["default"], 5.0)
        assert await asyncio.to_thread(terminate_sessions, backend.schema) >= 1
        # the listener reconnects in the background; wait keeps working meanwhile
        for _ in range(10):
            await backend.wait(["default"], 0.1)
        waiter = asyncio.create_task(backend.wait(["default"], 10.0))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await asyncio.to_thread(retrying, lambda: backend.enqueue([job()]))
        await waiter
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 1.0


# -- the server's clock ---------------------------------------------------------------------------
def test_due_times_follow_the_servers_clock_not_the_workers(schema: str) -> None:
    backend = PostgresBackend(with_schema(URL, schema), SkewedClock())
    backend.migrate()
    try:
        future = time.time() + 5.0  # due in 5 s by the server; an hour ago by the worker's clock
        backend.enqueue([job("absolute", run_at=future), job("relative", delay=30.0)])
        assert backend.claim(["default"], "w", 10, 30) == []
        by_task = {j.task: j for j in backend.list_jobs(JobFilter())}
        assert by_task["relative"].run_at == pytest.approx(time.time() + 30.0, abs=5.0)
        assert by_task["relative"].state is S.SCHEDULED
    finally:
        backend.close()


def test_leases_expire_by_the_servers_clock_not_the_workers(schema: str) -> None:
    backend = PostgresBackend(with_schema(URL, schema), SkewedClock())
    backend.migrate()
    try:
        backend.enqueue([job()])
        [claimed] = backend.claim(["default"], "w", 1, 30.0)
        assert claimed.lease_expires_at == pytest.approx(time.time() + 30.0, abs=5.0)
        assert backend.rescue().total == 0  # the worker's clock says the lease ended long ago
        [stats] = backend.stats()
        assert stats.count(S.RUNNING) == 1
    finally:
        backend.close()


def server_now() -> float:
    with admin() as conn:
        row = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
    assert row is not None
    return float(row[0])


def test_a_retry_is_due_at_the_servers_now_plus_its_delay_whatever_the_workers_clock(
    schema: str,
) -> None:
    url = with_schema(URL, schema)
    with PostgresBackend(url) as backend:
        backend.migrate()
    app = App(url, clock=SkewedClock())

    @app.task(name="flaky")
    def flaky() -> None:
        raise Retry(in_=60.0)

    handle = flaky.enqueue()
    before = server_now()
    try:
        assert asyncio.run(Worker(app, concurrency=1).drain()) == 1
        after = server_now()
        stored = app.jobs.get(handle.id)
    finally:
        app.close()
    assert stored is not None
    assert (stored.state, stored.attempt) == (S.SCHEDULED, 1)
    # not an hour late: the worker sends the delay and the server adds it to its own clock
    assert before + 60.0 - 0.01 <= stored.run_at <= after + 60.0 + 0.01


def test_a_job_with_run_at_just_ahead_of_the_server_is_not_fetched_until_then(
    schema: str,
) -> None:
    backend = PostgresBackend(with_schema(URL, schema))
    backend.migrate()
    try:
        with admin() as conn:
            row = conn.execute("SELECT extract(epoch FROM now())::float8").fetchone()
        assert row is not None
        [entry] = backend.enqueue([job(run_at=row[0] + 1.5)])
        assert backend.claim(["default"], "w", 10, 30) == []
        time.sleep(2.0)
        assert [c.id for c in backend.claim(["default"], "w", 10, 30)] == [entry.id]
    finally:
        backend.close()


# -- failures ------------------------------------------------------------------------------------
def test_enqueue_to_an_unreachable_server_raises_enqueue_error_at_once(schema: str) -> None:
    backend = PostgresBackend(with_schema("postgresql://postgres@127.0.0.1:1/test", schema))
    started = time.monotonic()
    with pytest.raises(EnqueueError, match="nothing was written"):
        backend.enqueue([job()])
    with pytest.raises(BackendError):
        backend.claim(["default"], "w", 1, 30)
    assert time.monotonic() - started < 2.0
    backend.close()


def test_app_enqueue_to_an_unreachable_server_raises_enqueue_error_at_once() -> None:
    app = App("postgresql://postgres@127.0.0.1:1/test")

    @app.task
    def noop() -> None: ...

    started = time.monotonic()
    with pytest.raises(EnqueueError):
        noop.enqueue()
    assert time.monotonic() - started < 2.0


def test_async_operations_on_an_unreachable_server_fail_promptly(schema: str) -> None:
    backend = PostgresBackend(with_schema("postgresql://postgres@127.0.0.1:1/test", schema))

    async def scenario() -> None:
        with pytest.raises(EnqueueError):
            await backend.enqueue_async([job()])
        with pytest.raises(BackendError):
            await backend.claim_async(["default"], "w", 1, 30)

    started = time.monotonic()
    asyncio.run(scenario())
    assert time.monotonic() - started < 2.0
    backend.close()


def test_a_busy_pool_waits_its_turn_instead_of_opening_more_connections(schema: str) -> None:
    backend = PostgresBackend(f"{with_schema(URL, schema)}&pool_max=2")
    pids: set[int] = set()
    lock = threading.Lock()

    def slow_statement() -> None:
        with backend._pool.connection() as conn:
            row = conn.execute("SELECT pg_backend_pid() FROM pg_sleep(0.3)").fetchone()
            assert row is not None
            with lock:
                pids.add(row[0])

    threads = [threading.Thread(target=slow_statement) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    backend.close()
    assert 1 <= len(pids) <= 2


def test_terminated_connections_lose_no_job_and_operations_recover(
    backend: PostgresBackend, clock: FakeClock
) -> None:
    ids = [e.id for e in backend.enqueue([job() for _ in range(200)])]
    done: set[int] = set()
    held: list[JobRef] = []
    rounds = 0
    killed = 0
    while len(done) < len(ids):
        rounds += 1
        if rounds % 5 == 0:
            killed += terminate_sessions(backend.schema)
        claimed = retrying(lambda: backend.claim(["default"], "w", 20, 30))
        if not claimed and held:
            clock.advance(31)  # acks lost with a connection: their leases expire
            retrying(backend.rescue)
            held.clear()
            continue
        acks = [Ack(c.ref, AckKind.COMPLETE, result="1") for c in claimed]
        try:
            applied = backend.ack(acks)
        except BackendError:
            held.extend(c.ref for c in claimed)
            continue
        done.update(a.ref.id for a, ok in zip(acks, applied, strict=True) if ok)
        assert rounds < 500
    assert {j.state for j in backend.list_jobs(JobFilter())} == {S.SUCCEEDED}
    assert done == set(ids)
    assert killed >= 2


def test_async_pool_recovers_after_terminated_connections(backend: PostgresBackend) -> None:
    async def scenario() -> int:
        await backend.enqueue_async([job() for _ in range(10)])
        assert await asyncio.to_thread(terminate_sessions, backend.schema) >= 1
        deadline = time.monotonic() + 15
        while True:
            try:
                claimed = await backend.claim_async(["default"], "w", 10, 30)
                break
            except BackendError:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        applied = await backend.ack_async([Ack(c.ref, AckKind.COMPLETE) for c in claimed])
        return sum(applied)

    assert asyncio.run(scenario()) == 10


# -- scale: one round trip per batch, on the indexes -----------------------------------------
def test_a_worker_vacuums_the_jobs_table_itself_when_asked_or_when_autovacuum_is_off(
    schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stagecrew.backends.postgres import vacuum

    monkeypatch.setattr(vacuum, "CHECK_SECONDS", 0.1)
    monkeypatch.setattr(vacuum, "BASE_THRESHOLD", 100)
    backend = PostgresBackend(f"{with_schema(URL, schema)}&vacuum=on")
    backend.migrate()
    try:
        backend.enqueue([job() for _ in range(1000)])
        while claimed := backend.claim(["default"], "w", 100, 30):
            backend.ack([Ack(c.ref, AckKind.COMPLETE) for c in claimed])
        vacuumer = backend._vacuumer
        assert vacuumer is not None
        deadline = time.monotonic() + 30  # the server publishes dead-row counts lazily
        while vacuumer.vacuums == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert vacuumer.vacuums >= 1
    finally:
        backend.close()


def test_vacuum_off_starts_no_vacuumer_thread(schema: str) -> None:
    backend = PostgresBackend(f"{with_schema(URL, schema)}&vacuum=off")
    backend.migrate()
    backend.claim(["default"], "w", 1, 30)
    assert backend._vacuumer is not None
    assert backend._vacuumer._thread is None
    backend.close()


def test_a_batch_of_500_acks_and_one_of_10000_jobs_are_one_statement_each(
    backend: PostgresBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    statements: list[str] = []
    execute = psycopg.Cursor.execute

    def counting(self: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        statements.append(str(query))
        return execute(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", counting)
    entries = backend.enqueue([job(idempotency_key=str(i % 9000)) for i in range(10_000)])
    assert len(statements) == 1
    assert sum(e.created for e in entries) == 9000
    claimed = backend.claim(["default"], "w", 500, 30)
    statements.clear()
    acks = [Ack(c.ref, AckKind.COMPLETE, result="1") for c in claimed[:250]] + [
        Ack(c.ref, AckKind.RETRY, delay=0.0) for c in claimed[250:]
    ]
    assert backend.ack(acks) == [True] * 500
    assert len(statements) == 1


def test_claims_acks_heartbeats_rescue_and_prune_use_their_indexes_even_with_stale_statistics(
    backend: PostgresBackend, schema: str
) -> None:
    backend.enqueue([job(queue=f"q{i % 4}", priority=i % 3) for i in range(20_000)])
    with admin() as conn:
        # statistics taken while every job waits, as autoanalyze would leave them
        conn.execute(psycopg.sql.SQL("ANALYZE {}.jobs").format(psycopg.sql.Identifier(schema)))
    running = [c.ref for _ in range(20) for c in backend.claim(["q0", "q1"], "w", 250, 30)]
    with admin() as conn:

        def plan(name: str, params: dict[str, Any]) -> str:
            text = backend._settle_lost_sql(name) if name == "rescue" else backend._sql.get(name)
            return "\n".join(r[0] for r in conn.execute(f"EXPLAIN {text}", params).fetchall())

        ids = sorted(ref.id for ref in running[:500])
        plans = {
            "claim": plan(
                "claim",
                {
                    "now": None,
                    "queues": ["q2", "q3"],
                    "worker": "w",
                    "limit": 50,
                    "lease_seconds": 30.0,
                },
            ),
            "ack": plan(
                "ack",
                {
                    "now": None,
                    **backend._channels(),
                    "ids": ids,
                    "tokens": [1] * 500,
                    "kinds": ["complete"] * 500,
                    "states": ["succeeded"] * 500,
                    "results": ["1"] * 500,
                    "errors": [None] * 500,
                    "delays": [None] * 500,
                },
            ),
            "heartbeat": plan(
                "heartbeat",
                {
                    "now": None,
                    "worker": "w",
                    "lease_seconds": 30.0,
                    "ids": ids,
                    "tokens": [1] * 500,
                },
            ),
            "rescue": plan(
                "rescue",
                {
                    "now": None,
                    **backend._channels(),
                    "max_lost": 3,
                    "limit": 5000,
                    **WORKER_LOST.params(),
                },
            ),
            "prune": plan(
                "prune",
                {"now": None, "limit": 500, "succeeded": 1.0, "cancelled": 1.0, "dead": None},
            ),
        }
    expected = {
        "claim": "jobs_claim",
        "ack": "jobs_running",
        "heartbeat": "jobs_running",
        "rescue": "jobs_",
        "prune": "jobs_finished",
    }
    for name, text in plans.items():
        assert expected[name] in text, text
        assert "Seq Scan on jobs" not in text, text
        assert "Nested Loop" not in text or name not in ("ack", "heartbeat"), text


# -- prune against a concurrent requeue --------------------------------------------------------
PAUSE_LOCK = 424242


def _pause_store_now(schema: str) -> None:
    """Make every statement of `schema` wait on an advisory lock the first time it reads the clock.

    The statement's snapshot is taken before `store_now()` runs, so a change committed while
    the statement waits is one its snapshot cannot see: exactly the race a prune can meet.
    """
    with admin() as conn:
        conn.execute(
            psycopg.sql.SQL(
                "CREATE OR REPLACE FUNCTION {}.store_now(fake_now double precision) "
                "RETURNS double precision LANGUAGE plpgsql VOLATILE AS $$ BEGIN "
                "PERFORM pg_advisory_xact_lock_shared({}); "
                "RETURN coalesce(fake_now, extract(epoch FROM statement_timestamp())); END $$"
            ).format(psycopg.sql.Identifier(schema), psycopg.sql.Literal(PAUSE_LOCK))
        )


def _wait_for_a_paused_statement(conn: psycopg.Connection[Any]) -> None:
    deadline = time.monotonic() + 30.0
    while not conn.execute(
        "SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory' AND objid = %s "
        "AND NOT granted",
        (PAUSE_LOCK,),
    ).fetchone()[0]:  # type: ignore[index]
        assert time.monotonic() < deadline, "the prune never reached the store clock"
        time.sleep(0.01)


def test_prune_never_deletes_a_job_requeued_while_it_runs(
    backend: PostgresBackend, schema: str, clock: FakeClock
) -> None:
    (entry,) = backend.enqueue([job()])
    jobs = psycopg.sql.SQL("{}.jobs").format(psycopg.sql.Identifier(schema))
    with admin() as conn:
        conn.execute(
            psycopg.sql.SQL("UPDATE {} SET state = 'dead', finished_at = %s WHERE id = %s").format(
                jobs
            ),
            (clock.now() - 100.0, entry.id),
        )
    _pause_store_now(schema)
    pruned: list[int] = []
    with admin() as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (PAUSE_LOCK,))
        pruner = threading.Thread(target=lambda: pruned.append(backend.prune(Retention(dead=10.0))))
        pruner.start()
        try:
            _wait_for_a_paused_statement(holder)
            # requeued (as `dlq requeue` does) after the prune's snapshot was taken
            holder.execute(
                psycopg.sql.SQL(
                    "UPDATE {} SET state = 'available', attempt = 0, finished_at = NULL "
                    "WHERE id = %s"
                ).format(jobs),
                (entry.id,),
            )
        finally:
            holder.execute("SELECT pg_advisory_unlock(%s)", (PAUSE_LOCK,))
            pruner.join(timeout=30.0)
    assert pruned == [0]
    kept = backend.get(entry.id)
    assert kept is not None and kept.state is S.AVAILABLE


def test_a_members_ack_whose_fan_in_fails_is_rolled_back_with_it(
    backend: PostgresBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ack and the workflow's advance are one transaction: a failure between them (here a
    statement of the fan-in the server refuses) leaves the member running, to be acked again."""
    from stagecrew.backends.workflows import NewWorkflow

    flow = NewWorkflow(id="wf", steps=((job(),), (job(),)), groups=(False, False))
    [[first], [second]] = backend.enqueue_workflow(flow)
    [claimed] = backend.claim(["default"], "w", 1, 30.0)
    get = backend._sql.get

    def broken(name: str, *args: Any, **kwargs: Any) -> str:
        return "SELECT 1/0" if name == "workflow_lock" else get(name, *args, **kwargs)

    monkeypatch.setattr(backend._sql, "get", broken)
    ack = Ack.complete(claimed.ref, "1")
    with pytest.raises(BackendError):
        backend.ack([replace(ack, in_workflow=True)])
    monkeypatch.undo()
    assert backend.get(first).state is JobState.RUNNING  # type: ignore[union-attr]
    assert backend.ack([replace(ack, in_workflow=True)]) == [True]
    assert backend.get(second).state is JobState.AVAILABLE  # type: ignore[union-attr]


def test_a_hand_back_that_ends_a_member_joins_its_fan_ins_transaction(
    backend: PostgresBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's own hand-back (of a wait_and_claim cancelled after it claimed) is a member's
    outcome too: a member whose cancel was requested meanwhile ends cancelled by it, and that
    ack and the workflow's advance are one transaction (a failure in the fan-in leaves the
    member running, to be handed back again)."""
    from stagecrew.backends.workflows import NewWorkflow, WorkflowStatus

    flow = NewWorkflow(id="wf", steps=((job(),), (job(),)), groups=(False, False))
    [[first], [_second]] = backend.enqueue_workflow(flow)
    [claimed] = backend.claim(["default"], "w", 1, 30.0)
    backend.cancel(first)  # it runs: flagged, to end with its claim's outcome
    get = backend._sql.get

    def broken(name: str, *args: Any, **kwargs: Any) -> str:
        return "SELECT 1/0" if name == "workflow_lock" else get(name, *args, **kwargs)

    async def hand_back_twice() -> None:
        monkeypatch.setattr(backend._sql, "get", broken)
        with pytest.raises(Exception, match="division by zero"):
            await backend._hand_back([claimed])
        monkeypatch.undo()
        assert backend.get(first).state is JobState.RUNNING  # type: ignore[union-attr]
        await backend._hand_back([claimed])

    asyncio.run(hand_back_twice())
    assert backend.get(first).state is JobState.CANCELLED  # type: ignore[union-attr]
    assert backend.get_workflow("wf").status is WorkflowStatus.FAILED  # type: ignore[union-attr]


# -- keyed batches ------------------------------------------------------------------------------
def _waiting_sessions(schema: str) -> int:
    with admin() as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = %s AND wait_event_type = 'Lock'",
            (f"stagecrew:{schema}"[:63],),
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("kind", ["unique_key", "idempotency_key", "idempotency_only"])
def test_two_batches_of_the_same_keys_in_opposite_orders_do_not_deadlock(
    backend: PostgresBackend, schema: str, kind: str
) -> None:
    """Both batches are made to wait on a third transaction holding their middle key; once it
    rolls back, each goes on to the key the other took first. Batches that take their keys in
    batch order deadlock there (PostgreSQL then fails one of them); taking them in one order
    store-wide first makes the second wait for the first instead."""
    live = frozenset({JobState.SCHEDULED, JobState.AVAILABLE, JobState.RUNNING})

    def keyed(key: str, **fields: Any) -> NewJob:
        if kind == "unique_key":
            return job(unique_key=key, unique_states=live)
        if kind == "idempotency_only":
            return job(idempotency_key=key)
        return job(
            idempotency_key=key,
            unique_key=f"own-{key}-{fields.pop('n')}",
            unique_states=live,
            **fields,
        )

    blocker = psycopg.connect(URL)
    try:
        backend.enqueue_in(blocker, [keyed("x", n=0)])  # its transaction stays open
        results: dict[str, Any] = {}

        def run(name: str, keys: list[str]) -> None:
            try:
                results[name] = backend.enqueue([keyed(k, n=name) for k in keys])
            except BaseException as exc:  # reported below
                results[name] = exc

        threads = [
            threading.Thread(target=run, args=("1", ["a", "x", "b"])),
            threading.Thread(target=run, args=("2", ["b", "x", "a"])),
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while _waiting_sessions(schema) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _waiting_sessions(schema) == 2
        blocker.rollback()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        blocker.close()
    failures = [r for r in results.values() if isinstance(r, BaseException)]
    assert failures == []
    assert count_jobs(schema) == 3
    first, second = results["1"], results["2"]
    assert sum(e.created for e in first + second) == 3
    assert {e.id for e in first} == {e.id for e in second}
