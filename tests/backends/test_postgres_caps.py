"""Concurrency caps on PostgreSQL: what the engine's own way of enforcing them risks.

The conformance suite (ConcurrencyConformance) holds the engine to the rule. These tests hold
it to how it gets there: an uncapped claim is still the one statement it was, capped claims
count the running jobs only once the claim before them committed, a read the caps cut short is
followed by reads that leave the full groups out in SQL (so jobs behind them are reached), the
statements keep to their indexes, and a schema of the previous version upgrades in place.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from importlib import resources
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from stagecrew.backends.base import JobFilter
from stagecrew.backends.caps import ClaimLimits
from stagecrew.backends.postgres import PostgresBackend, schema_version
from stagecrew.clock import FakeClock
from stagecrew.job import ClaimedJob, JobState, NewJob
from stagecrew.testing.engines import POSTGRES_SERVER, Schemas, with_schema

URL = POSTGRES_SERVER.url
PAYLOAD = '{"args":[],"kwargs":{}}'
LEASE = 30.0


@pytest.fixture(scope="module", autouse=True)
def _postgres_server() -> None:
    POSTGRES_SERVER.require()


@pytest.fixture
def schemas() -> Iterator[Schemas]:
    made = Schemas()
    yield made
    made.drop()


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


def admin() -> psycopg.Connection[Any]:
    return psycopg.connect(URL, autocommit=True)


def job(task: str = "t", **fields: Any) -> NewJob:
    return NewJob(task, PAYLOAD, **fields)


def claim(
    backend: PostgresBackend,
    limits: ClaimLimits | None,
    limit: int = 10,
    queues: tuple[str, ...] = ("default",),
) -> list[ClaimedJob]:
    return backend.claim(queues, "w1", limit, LEASE, limits)


def sql_file(name: str) -> str:
    path = resources.files("stagecrew.backends.postgres") / "sql" / f"{name}.sql"
    return path.read_text(encoding="utf-8")


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The text of every statement the sync pool's connections execute from here on."""
    sent: list[str] = []
    execute = psycopg.Cursor.execute

    def recording(self: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(str(query))
        return execute(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", recording)
    return sent


# -- the uncapped claim is untouched -------------------------------------------------------------
def test_an_uncapped_claim_is_the_one_claim_statement_and_takes_no_lock(
    backend: PostgresBackend, statements: list[str]
) -> None:
    backend.enqueue([job() for _ in range(3)])
    statements.clear()
    assert len(claim(backend, None)) == 3
    assert statements == [backend._sql.get("claim")]


def test_limits_for_other_queues_only_leave_the_claim_uncapped(
    backend: PostgresBackend, statements: list[str]
) -> None:
    backend.enqueue([job() for _ in range(3)])
    statements.clear()
    assert len(claim(backend, ClaimLimits(queues={"elsewhere": 1}))) == 3
    assert statements == [backend._sql.get("claim")]


def test_a_capped_claim_is_one_statement_of_its_own(
    backend: PostgresBackend, statements: list[str]
) -> None:
    """claim_within_caps (migration 14) does the lock, the count, the read and the claim in
    one round trip; run on its own, the statement commits at once and frees the lock."""
    backend.enqueue([job() for _ in range(3)])
    statements.clear()
    assert len(claim(backend, ClaimLimits(tasks={"t": 2}))) == 2
    assert statements == [backend._sql.get("claim_capped")]
    statements.clear()
    assert claim(backend, ClaimLimits(queues={"default": 1})) == []  # every queue full
    assert statements == [backend._sql.get("claim_capped")]


def test_the_capped_claim_returns_the_columns_claim_sql_returns() -> None:
    """claim_capped.sql's rows are read by the same parser as claim.sql's: the two must not
    drift apart."""
    plain, capped = sql_file("claim"), sql_file("claim_capped")
    returned = plain[plain.index("RETURNING ") + len("RETURNING ") :]
    selected = capped[capped.index("SELECT ") + len("SELECT ") : capped.index("\nFROM ")]
    assert [c.strip() for c in returned.split(",")] == [c.strip() for c in selected.split(",")]


# -- capped claims one after another -------------------------------------------------------------
def _lock_waiters(schema: str) -> int:
    """Sessions of the backend on `schema` waiting for an advisory lock."""
    with admin() as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity AS a JOIN pg_locks AS l ON l.pid = a.pid "
            "WHERE a.application_name = %s AND l.locktype = 'advisory' AND NOT l.granted",
            (f"stagecrew:{schema}"[:63],),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_capped_claim_counts_only_after_the_capped_claim_before_it_committed(
    backend: PostgresBackend, schema: str, clock: FakeClock
) -> None:
    """Another capped claim holds the lock and takes the cap's one slot, then commits: the
    claim that waited for the lock must see that job running, and take nothing."""
    backend.enqueue([job(), job()])
    limits = ClaimLimits(tasks={"t": 1})
    got: list[list[ClaimedJob] | BaseException] = []

    def capped_claim() -> None:
        try:
            got.append(claim(backend, limits))
        except BaseException as exc:  # reported below
            got.append(exc)

    with psycopg.connect(URL) as other:
        other.execute(backend._sql.get("claim_caps_lock"))
        waiter = threading.Thread(target=capped_claim)
        waiter.start()
        deadline = time.monotonic() + 30
        while _lock_waiters(schema) < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _lock_waiters(schema) == 1, got
        params = {
            "now": clock.now(),
            "queues": ["default"],
            "worker": "other",
            "limit": 1,
            "lease_seconds": LEASE,
        }
        assert len(other.execute(backend._sql.get("claim"), params).fetchall()) == 1
        other.commit()
    waiter.join(30)
    assert got == [[]]


def test_an_uncapped_claim_does_not_wait_for_the_lock_of_capped_claims(
    backend: PostgresBackend,
) -> None:
    backend.enqueue([job(), job()])
    with psycopg.connect(URL) as other:
        other.execute(backend._sql.get("claim_caps_lock"))
        assert len(claim(backend, None)) == 2
        other.rollback()


# -- the bounded read reaches past full groups ----------------------------------------------------
AHEAD = 60
"""More waiting jobs ahead than a capped claim of one job reads at once (one)."""


def test_the_jobs_of_a_full_task_do_not_hide_the_jobs_behind_them(
    backend: PostgresBackend, clock: FakeClock
) -> None:
    now = clock.now()
    backend.enqueue([job("t", run_at=now - 100 + i * 0.1) for i in range(AHEAD)])
    [behind] = backend.enqueue([job("u", run_at=now - 1)])
    limits = ClaimLimits(tasks={"t": 1})
    [first] = claim(backend, limits, limit=1)
    assert first.task == "t"
    assert [c.id for c in claim(backend, limits, limit=1)] == [behind.id]


def test_the_jobs_of_a_full_queue_do_not_hide_another_queues_jobs(
    backend: PostgresBackend,
) -> None:
    backend.enqueue([job(queue="q", priority=-1) for _ in range(AHEAD)])
    [behind] = backend.enqueue([job(queue="r")])
    limits = ClaimLimits(queues={"q": 1})
    [first] = claim(backend, limits, limit=1, queues=("q", "r"))
    assert first.queue == "q"
    assert [c.id for c in claim(backend, limits, limit=1, queues=("q", "r"))] == [behind.id]


def test_the_jobs_of_a_full_key_do_not_hide_the_jobs_behind_them(
    backend: PostgresBackend, clock: FakeClock
) -> None:
    now = clock.now()
    keyed = [job("t", concurrency_key="k", run_at=now - 100 + i * 0.1) for i in range(AHEAD)]
    backend.enqueue(keyed)
    [behind] = backend.enqueue([job("t", concurrency_key="other", run_at=now - 1)])
    limits = ClaimLimits(keys={"t": 1})
    [first] = claim(backend, limits, limit=1)
    assert [c.id for c in claim(backend, limits, limit=1)] == [behind.id]
    assert first.id != behind.id


def test_a_key_full_for_a_task_of_a_smaller_cap_does_not_hide_the_jobs_behind(
    backend: PostgresBackend, clock: FakeClock
) -> None:
    """Key k is held by two jobs of u (whose key cap is 5): full for t (cap 1), not for u.
    t's jobs of k must be left out in SQL, or they fill every bounded read."""
    now = clock.now()
    backend.enqueue([job("u", concurrency_key="k", run_at=now - 200) for _ in range(2)])
    limits = ClaimLimits(keys={"t": 1, "u": 5})
    assert len(claim(backend, limits)) == 2
    backend.enqueue(
        [job("t", concurrency_key="k", run_at=now - 100 + i * 0.1) for i in range(AHEAD)]
    )
    [behind] = backend.enqueue([job("t", run_at=now - 1)])
    assert [c.id for c in claim(backend, limits, limit=1)] == [behind.id]


def test_a_full_key_limits_only_the_tasks_that_cap_keys(
    backend: PostgresBackend,
) -> None:
    """u sends no key cap: its job of a key full for t is claimed (caps.Running.admits)."""
    backend.enqueue([job("t", concurrency_key="k"), job("t", concurrency_key="k")])
    limits = ClaimLimits(keys={"t": 1})
    assert len(claim(backend, limits)) == 1
    [free] = backend.enqueue([job("u", concurrency_key="k")])
    assert [c.id for c in claim(backend, limits)] == [free.id]


# -- enqueue paths ----------------------------------------------------------------------------
LIVE = frozenset({JobState.SCHEDULED, JobState.AVAILABLE, JobState.RUNNING})
PATHS: dict[str, tuple[int, Callable[[int], dict[str, Any]]]] = {
    "one": (1, lambda i: {}),
    "batch": (3, lambda i: {}),
    "copy": (250, lambda i: {}),
    "idempotency": (3, lambda i: {"idempotency_key": f"i{i}"}),
    "fair": (3, lambda i: {"fairness_key": f"f{i}"}),
    "unique": (3, lambda i: {"unique_key": f"u{i}", "unique_states": LIVE}),
}
"""Batch size and other fields for each way enqueue writes jobs (see PostgresBackend._enqueue)."""


@pytest.mark.parametrize("path", PATHS)
def test_every_enqueue_path_stores_the_concurrency_key(backend: PostgresBackend, path: str) -> None:
    size, fields = PATHS[path]

    def key(i: int) -> str | None:
        return None if i % 2 else f"k{i}"

    entries = backend.enqueue([job(concurrency_key=key(i), **fields(i)) for i in range(size)])
    assert [e.created for e in entries] == [True] * size
    for i, entry in enumerate(entries):
        stored = backend.get(entry.id)
        assert stored is not None
        assert stored.concurrency_key == key(i)


def test_listing_and_cancelling_return_the_concurrency_key(
    backend: PostgresBackend,
) -> None:
    [keyed, plain] = backend.enqueue([job(concurrency_key="k"), job()])
    listed = {j.id: j.concurrency_key for j in backend.list_jobs(JobFilter())}
    assert listed == {keyed.id: "k", plain.id: None}
    cancelled = [backend.cancel(keyed.id), backend.cancel(plain.id)]
    assert [j.concurrency_key if j else "gone" for j in cancelled] == ["k", None]


# -- plans ----------------------------------------------------------------------------------------
def test_a_capped_claim_uses_the_indexes_even_with_stale_statistics(
    backend: PostgresBackend, schema: str
) -> None:
    """The queries inside claim_within_caps count the running jobs off an index of them and
    read the candidates off jobs_claim, never by a scan of the table, though the statistics
    were taken while every job waited. pg_stat_xact_user_tables counts the scans of this
    transaction's statements, the function's own queries included."""
    backend.enqueue(
        [job(f"t{i % 3}", queue=f"q{i % 4}", concurrency_key=f"k{i % 50}") for i in range(20_000)]
    )
    with admin() as conn:
        # statistics taken while every job waits, as autoanalyze would leave them
        conn.execute(psycopg.sql.SQL("ANALYZE {}.jobs").format(psycopg.sql.Identifier(schema)))
    limits = ClaimLimits(tasks={"t0": 100}, queues={"q1": 100}, keys={"t1": 2})
    for _ in range(5):
        claim(backend, limits, limit=50, queues=("q0", "q1"))
    params = {
        "now": None,
        "queues": ["q0", "q1", "q2"],
        "worker": "w",
        "limit": 50,
        "lease_seconds": LEASE,
        "read": 232,
        "task_names": ["t0"],
        "task_caps": Jsonb({"t0": 100}),
        "queue_names": ["q1"],
        "queue_caps": Jsonb({"q1": 100}),
        "key_caps": Jsonb({"t1": 2}),
    }
    with psycopg.connect(URL) as conn:  # one transaction: its scan counts are this claim's
        claimed = conn.execute(backend._sql.get("claim_capped"), params).fetchall()
        row = conn.execute(
            "SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables WHERE relid = %s::regclass",
            (f'"{schema}".jobs',),
        ).fetchone()
        conn.rollback()
    assert len(claimed) == 50
    assert row is not None
    seq_scans, index_scans = row
    assert seq_scans == 0
    assert index_scans > 0


# -- upgrading -----------------------------------------------------------------------------------
def test_the_previous_versions_capped_claim_still_runs_beside_this_one(
    backend: PostgresBackend, schema: str, clock: FakeClock
) -> None:
    """A worker of the previous version, still running during an upgrade, calls migration 10's
    claim_within_caps (13 arguments, the caps as arrays): it is still there, takes the same
    lock, and counts what this version's capped claims hold."""
    backend.enqueue([job() for _ in range(4)])
    limits = ClaimLimits(tasks={"t": 3})
    assert len(claim(backend, limits, limit=2)) == 2
    previous = psycopg.sql.SQL(
        "SELECT id FROM {}.claim_within_caps(hashtextextended({} || ':caps', 0), %s, "
        "ARRAY['default'], 'old', 10, 30.0, 100, ARRAY['t'], ARRAY[3], '{{}}'::text[], "
        "'{{}}'::integer[], '{{}}'::text[], '{{}}'::integer[])"
    ).format(
        psycopg.sql.Identifier(schema),
        psycopg.sql.Literal(psycopg.sql.Identifier(schema, "jobs").as_string()),
    )
    with admin() as conn:
        assert len(conn.execute(previous, (clock.now(),)).fetchall()) == 1
    assert claim(backend, limits) == []


def test_a_schema_of_the_previous_version_upgrades_and_its_jobs_have_no_key(
    schema: str, clock: FakeClock
) -> None:
    """Jobs written under schema 8 have no concurrency key; a running one still counts
    against its task's cap after the upgrade, and the jobs waiting are claimed within it."""
    backend = PostgresBackend(with_schema(URL, schema), clock)
    statements = backend._sql
    jobs = psycopg.sql.Identifier(schema, "jobs")
    now = clock.now()
    with admin() as conn, conn.transaction():
        conn.execute(statements.get("migrate_bootstrap"))
        for version, name, script in statements.migrations():
            if version < schema_version():
                conn.execute(script)
                conn.execute(statements.get("migrate_record"), {"version": version, "name": name})
        insert = psycopg.sql.SQL(
            "INSERT INTO {} (id, task, queue, state, payload, run_at, order_at, attempt, claims,"
            " max_attempts, enqueued_at, lease_owner, lease_expires_at)"
            " VALUES (%s, 't', 'default', %s, %s, %s, %s, %s, %s, 5, %s, %s, %s)"
        ).format(jobs)
        conn.execute(insert, (1, "running", PAYLOAD, now, now, 1, 1, now, "w0", now + LEASE))
        for job_id in (2, 3, 4):
            conn.execute(insert, (job_id, "available", PAYLOAD, now, now, 0, 0, now, None, None))
        conn.execute(
            psycopg.sql.SQL("SELECT setval({}, 4)").format(
                psycopg.sql.Literal(f"{schema}.jobs_id_seq")
            )
        )
    try:
        backend.migrate()
        backend.prepare()
        assert all(j.concurrency_key is None for j in backend.list_jobs(JobFilter()))
        limits = ClaimLimits(tasks={"t": 2}, keys={"t": 1})
        assert [c.id for c in claim(backend, limits)] == [2]
        [new] = backend.enqueue([job("t", concurrency_key="k")])
        running = backend.get(1)
        assert running is not None and running.state is JobState.RUNNING
        assert claim(backend, limits) == []
        assert backend.get(new.id).concurrency_key == "k"  # type: ignore[union-attr]
    finally:
        backend.close()
