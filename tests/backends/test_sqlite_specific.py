"""Guarantees of the SQLite engine beyond the shared conformance suite.

Query plans, several processes on one file, locked and damaged files, the
`data_version` wake-up, migrations, and a differential run against the memory
engine (the reference) with the same operations and the same fake time.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from stagecrew.backends.base import Ack, AckKind, Backend, JobFilter, Retention
from stagecrew.backends.caps import ClaimLimits
from stagecrew.backends.limit_states import LimitSwap
from stagecrew.backends.memory import MemoryBackend
from stagecrew.backends.sqlite import SQLiteBackend
from stagecrew.backends.sqlite.backend import (
    CAPPED_PAGE,
    MAX_UNION_QUEUES,
    _capped_candidates_sql,
    _claim_chosen_sql,
    _claim_keyed_sql,
    _claim_sql,
    _migrations,
    _record_params,
    _settle_lost_sql,
    _sql,
    schema_version,
)
from stagecrew.clock import FakeClock
from stagecrew.errors import ConfigurationError, EnqueueError
from stagecrew.job import AttemptError, ErrorKind, JobRef, JobState, NewJob

PAYLOAD = '{"args":[],"kwargs":{}}'


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "jobs.db"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def backend(db_path: Path, clock: FakeClock) -> Iterator[SQLiteBackend]:
    b = SQLiteBackend(f"sqlite:///{db_path}", clock)
    b.migrate()
    yield b
    b.close()


def raw(db_path: Path) -> sqlite3.Connection:
    return sqlite3.connect(db_path, isolation_level=None)


def plan(conn: sqlite3.Connection, sql: str, params: dict[str, Any]) -> str:
    return "\n".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))


# -- query plans -----------------------------------------------------------------


@pytest.mark.parametrize("queue_count", [1, 3])
def test_claim_reads_the_partial_claim_index_in_order(
    backend: SQLiteBackend, db_path: Path, queue_count: int
) -> None:
    backend.enqueue([NewJob("t", PAYLOAD, queue=f"q{i % 3}") for i in range(300)])
    params: dict[str, Any] = {"worker": "w", "now": 0.0, "lease_expires_at": 1.0, "limit": 10}
    params.update({f"q{i}": f"q{i}" for i in range(queue_count)})
    text = plan(raw(db_path), _claim_sql(queue_count), params)
    assert text.count("INDEX stagecrew_jobs_claim (queue=? AND run_at<?)") == queue_count or (
        text.count("INDEX stagecrew_jobs_claim (queue=?)") == queue_count
    ), text
    # each queue's head comes off the index already ordered: only the short merge sorts
    assert text.count("USE TEMP B-TREE FOR ORDER BY") <= 1, text


@pytest.mark.parametrize("queue_count", [1, 3])
def test_a_capped_claim_seeks_each_page_in_the_claim_index(
    backend: SQLiteBackend, db_path: Path, queue_count: int
) -> None:
    backend.enqueue(
        [NewJob("t", PAYLOAD, queue=f"q{i % 3}", concurrency_key=f"k{i % 7}") for i in range(300)]
    )
    params: dict[str, Any] = {
        "now": 0.0,
        "page": CAPPED_PAGE,
        "full_tasks": "[]",
        "full_keys": "[]",
        "priority": 0,
        "order_at": 0.0,
        "id": 0,
    }
    params.update({f"q{i}": f"q{i}" for i in range(queue_count)})
    text = plan(raw(db_path), _capped_candidates_sql(queue_count), params)
    # each queue's page starts at the keyset, not at the queue's first job
    seek = "INDEX stagecrew_jobs_claim (queue=? AND (priority,order_at)>(?,?))"
    assert text.count(seek) == queue_count, text
    assert "SCAN stagecrew_jobs" not in text, text
    # what is sorted is each queue's page (at most :page rows) and their merge, never the index
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "USE TEMP B-TREE" in line:
            assert lines[i - 1].startswith("SCAN (subquery"), text


def test_a_capped_claim_counts_only_running_jobs_and_takes_its_choice_by_id(
    backend: SQLiteBackend, db_path: Path
) -> None:
    backend.enqueue([NewJob("t", PAYLOAD, concurrency_key=f"k{i % 7}") for i in range(300)])
    conn = raw(db_path)
    running = plan(
        conn, _sql("claim_running"), {"now": 0.0, "tasks": "[]", "queues": "[]", "keyed": 1}
    )
    assert running.count("SEARCH stagecrew_jobs USING INDEX") == 1, running
    assert "SCAN stagecrew_jobs" not in running, running
    params = {"ids": "[1, 2]", "limit": 2, "worker": "w", "now": 0.0, "lease_expires_at": 1.0}
    chosen = plan(conn, _claim_chosen_sql(), params)
    assert chosen.count("USING INTEGER PRIMARY KEY (rowid=?)") == 2, chosen
    assert "stagecrew_jobs_state_queue" not in chosen and "stagecrew_jobs_claim" not in chosen


def test_rescue_prune_and_stats_use_their_indexes(backend: SQLiteBackend, db_path: Path) -> None:
    conn = raw(db_path)
    params = {"now": 1.0, "now_json": "1.0", "max_lost": 3, "worker": "w", **_record_params()}
    rescue = plan(conn, _settle_lost_sql("rescue"), params)
    assert "stagecrew_jobs_lease" in rescue, rescue
    release = plan(conn, _settle_lost_sql("release_worker"), params)
    assert "stagecrew_jobs_lease" in release, release
    prune = plan(
        conn,
        _sql("prune"),
        {"succeeded_before": 1.0, "cancelled_before": 1.0, "dead_before": None, "limit": 10},
    )
    assert prune.count("stagecrew_jobs_finished") == 3, prune
    stats = plan(conn, _sql("stats_counts"), {})
    assert "COVERING INDEX stagecrew_jobs_state_queue" in stats, stats


# -- several processes on one file -----------------------------------------------


def _claim_until_empty(url: str, worker: str, seed: int, start: Any, out: Any) -> None:
    """Claim and ack in random batch sizes until nothing is left; report the refs claimed."""
    rng = random.Random(seed)
    backend = SQLiteBackend(url)
    claimed: list[tuple[int, int]] = []
    try:
        backend.migrate()  # open the connection before the race starts
        start.wait()
        while jobs := backend.claim(["default"], worker, rng.randint(1, 40), 60.0):
            claimed.extend((j.id, j.attempt) for j in jobs)
            acks = backend.ack([Ack(j.ref, AckKind.COMPLETE, result="null") for j in jobs])
            assert all(acks)
    finally:
        backend.close()
        out.put((worker, claimed))


def test_two_processes_never_claim_the_same_attempt(db_path: Path) -> None:
    url = f"sqlite:///{db_path}"
    with SQLiteBackend(url) as producer:
        ids = [e.id for e in producer.enqueue([NewJob("t", PAYLOAD) for _ in range(2000)])]
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Barrier(2), ctx.Queue()
    processes = [
        ctx.Process(target=_claim_until_empty, args=(url, f"w{i}", i, start, out)) for i in range(2)
    ]
    for p in processes:
        p.start()
    results = dict(out.get(timeout=60) for _ in processes)
    for p in processes:
        p.join(timeout=30)
        assert p.exitcode == 0
    refs = [ref for claimed in results.values() for ref in claimed]
    assert len(refs) == len(set(refs)), "an attempt was claimed twice"
    assert sorted(job_id for job_id, _ in refs) == ids
    assert all(results.values()), "both processes should have claimed work"
    with SQLiteBackend(url) as check:
        assert check.stats()[0].counts == {JobState.SUCCEEDED: 2000}


def _enqueue_one(backend: SQLiteBackend) -> None:
    backend.enqueue([NewJob("from-child", PAYLOAD)])


def test_a_forked_child_uses_its_own_connection_and_leaves_the_parents_alone(
    backend: SQLiteBackend,
) -> None:
    backend.enqueue([NewJob("before-fork", PAYLOAD)])  # the parent's connection is open
    child = multiprocessing.get_context("fork").Process(target=_enqueue_one, args=(backend,))
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 0
    backend.enqueue([NewJob("after-fork", PAYLOAD)])
    tasks = [job.task for job in reversed(backend.list_jobs(JobFilter()))]
    assert tasks == ["before-fork", "from-child", "after-fork"]


# -- a store that cannot be written ------------------------------------------------


def test_enqueue_raises_enqueue_error_and_writes_nothing_while_the_file_is_locked(
    db_path: Path, clock: FakeClock
) -> None:
    url = f"sqlite:///{db_path}?busy_timeout_ms=20"
    with SQLiteBackend(url, clock) as backend:
        backend.migrate()
        holder = raw(db_path)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            started = time.monotonic()
            with pytest.raises(EnqueueError, match="busy_timeout_ms=20"):
                backend.enqueue([NewJob("t", PAYLOAD), NewJob("t", PAYLOAD)])
            assert time.monotonic() - started < 2.0
        finally:
            holder.execute("ROLLBACK")
        assert backend.list_jobs(JobFilter()) == []
        # the store works again once the lock is gone, and no id was burnt
        assert [e.id for e in backend.enqueue([NewJob("t", PAYLOAD)])] == [1]


def test_writers_wait_out_a_lock_held_for_seconds_within_the_busy_timeout(
    db_path: Path, clock: FakeClock
) -> None:
    """Every write waits for the lock up to busy_timeout_ms (5 s by default), however long."""
    with SQLiteBackend(f"sqlite:///{db_path}", clock) as backend:
        backend.migrate()
        holder = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN EXCLUSIVE")
        release = threading.Timer(2.0, holder.execute, ("COMMIT",))
        release.start()
        started = time.monotonic()
        try:
            [entry] = backend.enqueue([NewJob("t", PAYLOAD)])
            [claimed] = backend.claim(["default"], "w", 1, 30.0)
        finally:
            release.join()
            holder.close()
        assert time.monotonic() - started >= 1.9
        assert claimed.id == entry.id


def test_enqueue_into_an_unwritable_path_raises_enqueue_error(tmp_path: Path) -> None:
    backend = SQLiteBackend(f"sqlite:///{tmp_path}/missing-folder/jobs.db")
    with pytest.raises(EnqueueError, match="nothing was written"):
        backend.enqueue([NewJob("t", PAYLOAD)])
    backend.close()


# -- damaged rows ------------------------------------------------------------------


@pytest.mark.parametrize(
    "stored",
    ['[{"attempt": 1, "at"', '{"not": "a list"}', "42", '[1, {"kind": "no such kind"}]'],
)
def test_a_corrupt_errors_column_does_not_break_inspection_or_acks(
    backend: SQLiteBackend, db_path: Path, stored: str
) -> None:
    [job] = backend.enqueue([NewJob("t", PAYLOAD)])
    raw(db_path).execute("UPDATE stagecrew_jobs SET errors = ? WHERE id = ?", (stored, job.id))

    found = backend.get(job.id)
    assert found is not None
    assert found.errors and all(e.type == "CorruptErrorRecord" for e in found.errors)
    assert backend.list_jobs(JobFilter())[0].id == job.id

    [claimed] = backend.claim(["default"], "w", 1, 30.0)
    error = AttemptError(1, 5.0, ErrorKind.ERROR, "ValueError", "boom")
    assert backend.ack([Ack(claimed.ref, AckKind.DEAD_LETTER, error=error)]) == [True]
    after = backend.get(job.id)
    assert after is not None and after.state is JobState.DEAD
    assert after.errors[-1] == error
    # what could not be read is still there for a person to look at
    assert [(e.type, e.traceback) for e in after.errors[:-1]] == [
        (e.type, e.traceback) for e in found.errors
    ]


def test_rescue_of_a_job_with_corrupt_errors_still_records_the_loss(
    backend: SQLiteBackend, db_path: Path, clock: FakeClock
) -> None:
    [job] = backend.enqueue([NewJob("t", PAYLOAD)])
    backend.claim(["default"], "w", 1, 30.0)
    raw(db_path).execute("UPDATE stagecrew_jobs SET errors = 'garbage' WHERE id = ?", (job.id,))
    clock.advance(31)
    assert backend.rescue().requeued == 1
    after = backend.get(job.id)
    assert after is not None and after.state is JobState.AVAILABLE
    assert [e.type for e in after.errors] == ["CorruptErrorRecord", "WorkerLost"]
    assert after.errors[0].traceback == "garbage"
    assert after.errors[1].at == clock.now()


# -- wake-ups ------------------------------------------------------------------------


def test_wait_returns_soon_after_another_process_commits(db_path: Path) -> None:
    url = f"sqlite:///{db_path}"

    async def scenario() -> float:
        with SQLiteBackend(url) as waiter, SQLiteBackend(url) as producer:
            await waiter.wait(["default"], 0.0)  # settle what this thread has seen
            timer = threading.Timer(0.1, producer.enqueue, [[NewJob("t", PAYLOAD)]])
            started = time.monotonic()
            timer.start()
            await waiter.wait(["default"], 10.0)
            timer.join()
            return time.monotonic() - started

    assert asyncio.run(scenario()) < 2.0


def test_wait_returns_at_once_after_this_backend_enqueued(backend: SQLiteBackend) -> None:
    async def scenario() -> float:
        await backend.wait(["default"], 0.0)
        backend.enqueue([NewJob("t", PAYLOAD)])  # same thread: data_version cannot see it
        started = time.monotonic()
        await backend.wait(["default"], 10.0)
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 0.5


def test_wait_sleeps_for_the_timeout_when_nothing_is_committed(backend: SQLiteBackend) -> None:
    async def scenario() -> float:
        await backend.wait(["default"], 0.0)
        started = time.monotonic()
        await backend.wait(["default"], 0.2)
        return time.monotonic() - started

    assert 0.15 <= asyncio.run(scenario()) < 2.0


# -- schema and configuration ---------------------------------------------------------


def test_the_constructor_does_not_touch_the_file(db_path: Path) -> None:
    SQLiteBackend(f"sqlite:///{db_path}").close()
    assert not db_path.exists()


def test_the_first_connection_creates_the_schema_without_migrate(db_path: Path) -> None:
    with SQLiteBackend(f"sqlite:///{db_path}") as backend:
        assert backend.enqueue([NewJob("t", PAYLOAD)])[0].id == 1
    assert raw(db_path).execute("PRAGMA user_version").fetchone()[0] == schema_version()
    assert raw(db_path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_migrate_is_safe_when_many_callers_race_on_a_new_file(db_path: Path) -> None:
    url = f"sqlite:///{db_path}"
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def migrate() -> None:
        try:
            start.wait()
            with SQLiteBackend(url) as b:
                b.migrate()
                b.migrate()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert raw(db_path).execute("PRAGMA user_version").fetchone()[0] == schema_version()


def test_opening_a_new_file_waits_for_a_writer_instead_of_failing(db_path: Path) -> None:
    """Switching a file to WAL while another connection writes in rollback-journal mode is a
    lock SQLite reports at once (no busy handler); the first connection waits for the writer
    as a write would, within busy_timeout_ms. Racing processes opening one new file meet this."""
    writer = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    writer.execute("CREATE TABLE other (x)")
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO other VALUES (1)")
    released = threading.Timer(0.2, lambda: writer.execute("COMMIT"))
    released.start()
    try:
        with SQLiteBackend(f"sqlite:///{db_path}?busy_timeout_ms=10000") as b:
            b.migrate()
    finally:
        released.join()
        writer.close()
    assert raw(db_path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw(db_path).execute("PRAGMA user_version").fetchone()[0] == schema_version()


def test_upgrading_a_store_to_the_fencing_token_keeps_a_claim_in_flight_matching(
    db_path: Path, clock: FakeClock
) -> None:
    """Schema 2 adds claims; jobs written under schema 1 start from their attempt."""
    conn = raw(db_path)
    [(_, _, version_1)] = [m for m in _migrations() if m[0] == 1]
    conn.executescript(version_1)
    conn.execute("PRAGMA user_version = 1")
    columns = "task, queue, state, payload, run_at, attempt, max_attempts, enqueued_at"
    conn.execute(
        f"INSERT INTO stagecrew_jobs ({columns}, lease_owner, lease_expires_at) "
        "VALUES ('t', 'default', 'running', ?, 0, 2, 5, 0, 'w1', ?)",
        (PAYLOAD, clock.now() + 30),
    )
    conn.execute(
        f"INSERT INTO stagecrew_jobs ({columns}, finished_at) "
        "VALUES ('t', 'default', 'dead', ?, 0, 3, 3, 0, 0)",
        (PAYLOAD,),
    )
    conn.close()
    with SQLiteBackend(f"sqlite:///{db_path}", clock) as backend:
        backend.migrate()
        running, dead = backend.get(1), backend.get(2)
        assert running is not None and dead is not None
        assert (running.claims, dead.claims) == (2, 3)
        in_flight = JobRef(1, 2)  # claimed before the upgrade: its token is its attempt
        assert backend.heartbeat("w1", [in_flight], 30.0).lost == frozenset()
        assert backend.ack([Ack(in_flight, AckKind.COMPLETE, result="1")]) == [True]
        assert backend.requeue(JobFilter(ids=frozenset({2}))) == 1
        [again] = backend.claim(["default"], "w2", 1, 30.0)
        assert (again.id, again.attempt, again.token) == (2, 1, 4)
    assert raw(db_path).execute("PRAGMA user_version").fetchone()[0] == schema_version()


def test_upgrading_a_store_to_snoozes_and_pauses_keeps_its_jobs_and_claims_them_as_before(
    db_path: Path, clock: FakeClock
) -> None:
    """Schema 4 adds snoozes (0 for existing jobs) and the paused-queues table."""
    conn = raw(db_path)
    for version, _, script in _migrations():
        if version <= 2:
            conn.executescript(script)
    conn.execute("PRAGMA user_version = 2")
    conn.execute(
        "INSERT INTO stagecrew_jobs (task, queue, state, payload, run_at, max_attempts, "
        "enqueued_at) VALUES ('t', 'default', 'available', ?, 0, 3, 0)",
        (PAYLOAD,),
    )
    conn.close()
    with SQLiteBackend(f"sqlite:///{db_path}", clock) as backend:
        backend.migrate()
        assert backend.paused_queues() == []
        [claimed] = backend.claim(["default"], "w1", 1, 30.0)
        assert (claimed.id, claimed.snoozes) == (1, 0)
        assert backend.ack([Ack.snooze(claimed.ref, 0.0)]) == [True]
        assert backend.get(1).snoozes == 1  # type: ignore[union-attr]
        backend.pause_queue("default")
        assert backend.claim(["default"], "w1", 1, 30.0) == []
    assert raw(db_path).execute("PRAGMA user_version").fetchone()[0] == schema_version()


def test_upgrading_a_store_to_fair_queues_keeps_the_waiting_jobs_in_their_order(
    db_path: Path, clock: FakeClock
) -> None:
    """Schema 5 adds order_at; jobs written before it are ordered by their run_at, as before."""
    conn = raw(db_path)
    for _, _, script in [m for m in _migrations() if m[0] <= 2]:
        conn.executescript(script)
    conn.execute("PRAGMA user_version = 2")
    columns = "task, queue, state, payload, run_at, max_attempts, enqueued_at"
    now = clock.now()
    for run_at in (now - 5, now - 30, now - 10):
        conn.execute(
            f"INSERT INTO stagecrew_jobs ({columns}) "
            "VALUES ('t', 'default', 'available', ?, ?, 3, 0)",
            (PAYLOAD, run_at),
        )
    conn.close()
    with SQLiteBackend(f"sqlite:///{db_path}", clock) as backend:
        backend.migrate()
        claimed = backend.claim(["default"], "w1", 3, 30.0)
        assert [c.id for c in claimed] == [2, 3, 1]
        assert [c.order_at for c in claimed] == [c.run_at for c in claimed]


def test_ids_are_never_reused_after_the_newest_job_is_purged(backend: SQLiteBackend) -> None:
    [first] = backend.enqueue([NewJob("t", PAYLOAD)])
    backend.cancel(first.id)
    assert backend.purge(JobFilter()) == 1
    assert backend.enqueue([NewJob("t", PAYLOAD)])[0].id == first.id + 1


@pytest.mark.parametrize(
    "url", ["sqlite:///:memory:", "sqlite://", "postgres://x", "sqlite:///a.db?nope=1"]
)
def test_urls_that_cannot_work_are_refused(url: str) -> None:
    with pytest.raises(ConfigurationError):
        SQLiteBackend(url)


def test_url_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = SQLiteBackend("sqlite:///data/jobs.db?busy_timeout_ms=250&poll_ms=2")
    assert relative.path == str(tmp_path / "data" / "jobs.db")
    assert relative.busy_timeout_ms == 250
    assert relative.poll_interval == pytest.approx(0.002)
    assert SQLiteBackend("sqlite:////srv/jobs.db").path == "/srv/jobs.db"


def test_every_sql_file_starts_with_a_one_line_header() -> None:
    folder = resources.files("stagecrew.backends.sqlite") / "sql"
    files = [f for f in folder.iterdir() if f.name.endswith(".sql")]
    files += [f for f in (folder / "migrations").iterdir() if f.name.endswith(".sql")]
    assert len(files) > 10
    for f in files:
        assert f.read_text().startswith("-- "), f.name


# -- concurrency caps --------------------------------------------------------------


def _statements_run(backend: SQLiteBackend, call: Callable[[], object]) -> list[str]:
    """The statements `call` runs on this thread's connection, the busy-timeout pragmas left out."""
    seen: list[str] = []
    conn = backend._conn()
    conn.set_trace_callback(seen.append)
    try:
        call()
    finally:
        conn.set_trace_callback(None)
    return [s for s in seen if not s.startswith("PRAGMA busy_timeout")]


def _headers(statements: list[str]) -> list[str]:
    """Each statement by its first line: the header naming its .sql file, or the statement."""
    return [s.splitlines()[0] for s in statements]


def test_a_claim_without_limits_runs_the_one_claim_statement_and_nothing_more(
    backend: SQLiteBackend,
) -> None:
    backend.enqueue([NewJob("t", PAYLOAD, concurrency_key="t:a") for _ in range(3)])
    run = _statements_run(backend, lambda: backend.claim(["default"], "w", 2, 30.0))
    assert _headers(run) == _headers(["BEGIN IMMEDIATE", _claim_sql(1), "COMMIT"])
    assert "json_each" not in run[1] and "stagecrew_paused_queues" in run[1]  # today's claim
    capped = _statements_run(
        backend, lambda: backend.claim(["default"], "w", 2, 30.0, ClaimLimits(tasks={"t": 3}))
    )
    assert _headers(capped) == _headers(
        [
            "BEGIN IMMEDIATE",
            _sql("claim_running"),
            "SAVEPOINT capped_claim",
            _claim_keyed_sql(1),
            "RELEASE capped_claim",
            "COMMIT",
        ]
    )


def test_a_capped_claim_the_caps_cut_short_is_undone_and_chosen_again(
    backend: SQLiteBackend,
) -> None:
    """The usual claim took a job the caps refuse (the second of a key capped at one): it is
    undone, and the candidates the caps admit are read and claimed instead, one transaction."""
    backend.enqueue([NewJob("t", PAYLOAD, concurrency_key=k) for k in ("a", "a", "b")])
    limits = ClaimLimits(keys={"t": 1})
    run = _statements_run(backend, lambda: backend.claim(["default"], "w", 2, 30.0, limits))
    assert _headers(run) == _headers(
        [
            "BEGIN IMMEDIATE",
            _sql("claim_running"),
            "SAVEPOINT capped_claim",
            _claim_keyed_sql(1),
            "ROLLBACK TO capped_claim",
            "RELEASE capped_claim",
            _capped_candidates_sql(1),
            _claim_chosen_sql(),
            "COMMIT",
        ]
    )
    jobs = {j.id: j for j in backend.list_jobs(JobFilter())}
    assert [jobs[i].state for i in (1, 2, 3)] == [
        JobState.RUNNING,
        JobState.AVAILABLE,
        JobState.RUNNING,
    ]
    assert [jobs[i].attempt for i in (1, 2, 3)] == [1, 0, 1]


@pytest.mark.parametrize("queue_count", [1, 3, MAX_UNION_QUEUES + 6])
def test_a_capped_claim_reads_on_past_pages_of_jobs_its_caps_turn_away(
    backend: SQLiteBackend, queue_count: int
) -> None:
    """Jobs of one order (one batch) over several pages: the first page's are turned away in
    Python once the claim's first job fills their key, the next pages leave them out; the claim
    reads on, takes each page's last job once, and stops at its limit."""
    pages = 4
    queues = [f"q{i}" for i in range(queue_count)]
    backend.enqueue(
        [
            NewJob(
                "t",
                PAYLOAD,
                queue=queues[n % queue_count],
                concurrency_key=None if n % CAPPED_PAGE == 0 else "hot",
            )
            for n in range(1, pages * CAPPED_PAGE + 2)
        ]
    )
    limits = ClaimLimits(keys={"t": 1, "other": 10**6})
    claimed = backend.claim(queues, "w", pages, 30.0, limits)
    assert [c.id for c in claimed] == [1, *(CAPPED_PAGE * n for n in range(1, pages))]
    [last] = backend.claim(queues, "w", pages, 30.0, limits)
    assert last.id == pages * CAPPED_PAGE
    assert backend.claim(queues, "w", pages, 30.0, limits) == []


@pytest.mark.parametrize(
    "limits",
    [ClaimLimits(tasks={"t": 1}), ClaimLimits(keys={"t": 1, "x": 5})],
    ids=["task", "key-of-its-task"],
)
def test_a_capped_claim_behind_many_jobs_of_a_full_cap_reads_one_page(
    backend: SQLiteBackend, clock: FakeClock, limits: ClaimLimits
) -> None:
    """What is full when the claim starts is left out by the query, not page by page."""
    backend.enqueue([NewJob("t", PAYLOAD, concurrency_key="hot") for _ in range(5 * CAPPED_PAGE)])
    clock.advance(1.0)
    [behind] = backend.enqueue([NewJob("u", PAYLOAD)])
    assert len(backend.claim(["default"], "w", 1, 30.0, limits)) == 1  # a t: the cap is full
    run = _statements_run(backend, lambda: backend.claim(["default"], "w", 1, 30.0, limits))
    assert _headers(run).count(_headers([_capped_candidates_sql(1)])[0]) == 1
    assert backend.get(behind.id).state is JobState.RUNNING  # type: ignore[union-attr]


def test_a_capped_claim_of_more_queues_than_a_compound_select_takes_reads_them_in_one_scan(
    backend: SQLiteBackend,
) -> None:
    queues = [f"q{i}" for i in range(MAX_UNION_QUEUES + 6)]
    backend.enqueue([NewJob(task, PAYLOAD, queue=q) for q in queues for task in ("t", "u")])
    backend.pause_queue("q0")
    limits = ClaimLimits(tasks={"t": 3}, queues={"q1": 1, "q2": 1})
    claimed = backend.claim(queues, "w", 10**3, 30.0, limits)
    assert sum(c.task == "t" for c in claimed) == 3
    assert sorted(c.queue for c in claimed if c.queue in ("q0", "q1", "q2")) == ["q1", "q2"]
    # q1 and q2 are full with their t, q0 is paused: every other queue's u comes too
    assert len(claimed) == 3 + len(queues) - 3


def test_a_key_full_for_the_tasks_that_cap_keys_does_not_hold_back_a_task_that_does_not(
    backend: SQLiteBackend,
) -> None:
    """The candidate query leaves full keys out only for the tasks that cap keys."""
    backend.enqueue([NewJob("t", PAYLOAD, concurrency_key="k") for _ in range(2)])
    backend.enqueue([NewJob("u", PAYLOAD, concurrency_key="k")])
    limits = ClaimLimits(keys={"t": 1})
    assert [c.task for c in backend.claim(["default"], "w", 1, 30.0, limits)] == ["t"]
    assert [c.task for c in backend.claim(["default"], "w", 5, 30.0, limits)] == ["u"]


def _claims_around_a_pause(url: str, pause_at: Callable[[str], bool]) -> list[int]:
    """Claimer A (queue a) stops at the first statement `pause_at` picks while claimer B
    (queue b) claims, both within tasks={"t": 1}; the ids both claimed. B gets 0.5 s to finish
    before A goes on (B may be waiting for A's write lock)."""
    limits = ClaimLimits(tasks={"t": 1})
    paused, go_on = threading.Event(), threading.Event()
    claimed: list[int] = []

    def pause(statement: str) -> None:
        if not paused.is_set() and pause_at(statement):
            paused.set()
            go_on.wait(10.0)

    def claim(queue: str) -> None:
        with SQLiteBackend(url) as backend:
            if queue == "a":
                backend._conn().set_trace_callback(pause)
            claimed.extend(c.id for c in backend.claim([queue], queue, 5, 60.0, limits))

    first = threading.Thread(target=claim, args=("a",))
    first.start()
    assert paused.wait(10.0)
    second = threading.Thread(target=claim, args=("b",))
    second.start()
    second.join(0.5)
    go_on.set()
    first.join()
    second.join()
    return claimed


def test_a_capped_claim_counts_and_chooses_under_its_write_lock(db_path: Path) -> None:
    """A stops after counting the running jobs: had it counted outside the write lock, both
    would take the one slot (each from its own queue, so A's UPDATE could not notice)."""
    url = f"sqlite:///{db_path}"
    with SQLiteBackend(url) as setup:
        [a, _] = setup.enqueue([NewJob("t", PAYLOAD, queue=q) for q in ("a", "b")])
    assert _claims_around_a_pause(url, lambda s: s == "SAVEPOINT capped_claim") == [a.id]


def test_a_capped_claim_that_reads_a_damaged_job_again_chooses_again(db_path: Path) -> None:
    """A damaged row makes the claim roll back and claim again, leniently, under a new write
    lock: B takes the slot in between, so A must count again and take nothing."""
    url = f"sqlite:///{db_path}"
    with SQLiteBackend(url) as setup:
        [damaged, b] = setup.enqueue([NewJob("t", PAYLOAD, queue=q) for q in ("a", "b")])
    raw(db_path).execute(
        "UPDATE stagecrew_jobs SET payload = CAST(x'ff' AS TEXT) WHERE id = ?", (damaged.id,)
    )
    rolled_back = threading.Event()

    def after_the_rollback(statement: str) -> bool:
        if statement == "ROLLBACK":
            rolled_back.set()
            return False
        return rolled_back.is_set()

    assert _claims_around_a_pause(url, after_the_rollback) == [b.id]


def test_a_capped_claim_of_a_damaged_job_salvages_it_and_counts_its_slot(
    backend: SQLiteBackend, db_path: Path
) -> None:
    [damaged, _] = backend.enqueue([NewJob("t", PAYLOAD), NewJob("t", PAYLOAD)])
    raw(db_path).execute(
        "UPDATE stagecrew_jobs SET payload = CAST(x'ff' AS TEXT), concurrency_key = "
        "CAST(x'fe' AS TEXT) WHERE id = ?",
        (damaged.id,),
    )
    limits = ClaimLimits(tasks={"t": 1}, keys={"t": 1})
    [claimed] = backend.claim(["default"], "w", 5, 30.0, limits)
    assert claimed.id == damaged.id and claimed.defect is not None
    assert backend.claim(["default"], "w", 5, 30.0, limits) == []


def test_upgrading_a_store_to_concurrency_keys_keeps_its_jobs_without_a_key(
    db_path: Path, clock: FakeClock
) -> None:
    """Schema 9 adds concurrency_key; jobs written before it have none, and caps count them."""
    conn = raw(db_path)
    for _, _, script in [m for m in _migrations() if m[0] <= 8]:
        conn.executescript(script)
    conn.execute("PRAGMA user_version = 8")
    columns = "task, queue, state, payload, run_at, max_attempts, enqueued_at, order_at"
    for state in ("running", "available", "available"):
        conn.execute(
            f"INSERT INTO stagecrew_jobs ({columns}, lease_expires_at) "
            "VALUES ('t', 'default', ?, ?, 0, 3, 0, 0, ?)",
            (state, PAYLOAD, clock.now() + 30 if state == "running" else None),
        )
    conn.close()
    with SQLiteBackend(f"sqlite:///{db_path}", clock) as backend:
        backend.migrate()
        assert [j.concurrency_key for j in backend.list_jobs(JobFilter())] == [None] * 3
        limits = ClaimLimits(tasks={"t": 2}, keys={"t": 1})
        [claimed] = backend.claim(["default"], "w", 5, 30.0, limits)  # job 1 holds a slot
        assert claimed.id == 2
        [keyed] = backend.enqueue([NewJob("u", PAYLOAD, concurrency_key="u:1")])
        assert backend.get(keyed.id).concurrency_key == "u:1"  # type: ignore[union-attr]
    assert raw(db_path).execute("PRAGMA user_version").fetchone()[0] == schema_version()


# -- limit states ------------------------------------------------------------------


def test_a_swap_reads_and_writes_under_one_write_lock(backend: SQLiteBackend) -> None:
    first = LimitSwap("rate:a", None, "1", 60.0)
    applied = _statements_run(backend, lambda: backend.swap_limits([first]))
    assert _headers(applied) == _headers(
        ["BEGIN IMMEDIATE", _sql("limit_read"), _sql("limit_write"), "COMMIT"]
    )
    stale = LimitSwap("rate:a", None, "2", 60.0)
    refused = _statements_run(backend, lambda: backend.swap_limits([stale]))
    assert _headers(refused) == _headers(["BEGIN IMMEDIATE", _sql("limit_read"), "COMMIT"])


def test_two_connections_never_both_swap_from_one_version(db_path: Path) -> None:
    """A stops after its compare-and-set's read; B, on its own connection, swaps from the same
    (absent) version meanwhile. B waits for A's write lock, then reads A's record: refused."""
    url = f"sqlite:///{db_path}"
    with SQLiteBackend(url) as setup:
        setup.migrate()
    header = _sql("limit_read").splitlines()[0]
    paused, go_on = threading.Event(), threading.Event()
    applied: dict[str, bool] = {}

    def pause(statement: str) -> None:
        if not paused.is_set() and statement.startswith(header):
            paused.set()
            go_on.wait(10.0)

    def swap(who: str) -> None:
        with SQLiteBackend(url) as backend:
            if who == "a":
                backend._conn().set_trace_callback(pause)
            done = backend.swap_limits([LimitSwap("rate:a", None, f'"{who}"', 60.0)])
            applied[who] = done.applied

    first = threading.Thread(target=swap, args=("a",))
    first.start()
    assert paused.wait(10.0)
    second = threading.Thread(target=swap, args=("b",))
    second.start()
    second.join(0.5)
    go_on.set()
    first.join()
    second.join()
    assert applied == {"a": True, "b": False}
    with SQLiteBackend(url) as check:
        assert check.read_limits(["rate:a"]).states["rate:a"].value == '"a"'


def test_a_listing_prefix_is_text_not_a_like_pattern(backend: SQLiteBackend) -> None:
    names = ["rate:a_b", "rate:axb", "rate:%x", "rate:zz", "rate:A_b"]
    backend.swap_limits([LimitSwap(name, None, "1", 60.0) for name in names])
    assert [r.name for r in backend.list_limits("rate:a_")] == ["rate:a_b"]
    assert [r.name for r in backend.list_limits("rate:%")] == ["rate:%x"]
    assert [r.name for r in backend.list_limits("rate:a_b")] == ["rate:a_b"]


def test_pruning_limit_records_reads_the_expiry_index(
    backend: SQLiteBackend, db_path: Path
) -> None:
    backend.swap_limits([LimitSwap(f"rate:{i}", None, "1", 60.0) for i in range(50)])
    text = plan(raw(db_path), _sql("limit_prune"), {"now": 0.0, "limit": 10})
    assert "stagecrew_limit_states_expiry (expires_at<?)" in text, text


def test_upgrading_a_store_to_limit_states_keeps_its_jobs(db_path: Path, clock: FakeClock) -> None:
    """Schema 10 adds the limit records' table; the first connection upgrades the file."""
    conn = raw(db_path)
    for _, _, script in [m for m in _migrations() if m[0] <= 9]:
        conn.executescript(script)
    conn.execute("PRAGMA user_version = 9")
    conn.close()
    with SQLiteBackend(f"sqlite:///{db_path}", clock) as backend:
        [job] = backend.enqueue([NewJob("t", PAYLOAD)])
        assert backend.swap_limits([LimitSwap("rate:a", None, "1", 60.0)]).applied
        assert [r.name for r in backend.list_limits()] == ["rate:a"]
        assert backend.get(job.id) is not None
    assert [name for version, name, _ in _migrations() if version == 10] == [
        "0010_limit_states.sql"
    ]
    assert raw(db_path).execute("PRAGMA user_version").fetchone()[0] == schema_version()


# -- differential run against the memory engine ----------------------------------------


CLAIM_LIMITS = [
    None,
    None,
    ClaimLimits(tasks={"send": 2}),
    ClaimLimits(queues={"mail": 1, "slow": 2}),
    ClaimLimits(keys={"send": 1, "resize": 2}),
    ClaimLimits(tasks={"resize": 3}, queues={"default": 2}, keys={"send": 2}),
]
"""What the random claims send: none, and caps of every kind that fill up now and then."""


def _random_operations(
    a: Backend, b: Backend, clock_a: FakeClock, clock_b: FakeClock, seed: int
) -> None:
    """Apply the same random operations to both engines; every answer must be equal."""
    rng = random.Random(seed)
    queues = ["default", "mail", "slow"]
    workers = ["w1", "w2"]
    held: dict[str, list[Any]] = {w: [] for w in workers}

    def same(op: str, *args: Any) -> Any:
        left, right = getattr(a, op)(*args), getattr(b, op)(*args)
        assert left == right, (op, args)
        return left

    for step in range(600):
        roll = rng.random()
        if roll < 0.25:
            batch = [
                NewJob(
                    task=rng.choice(["send", "resize"]),
                    payload=PAYLOAD,
                    queue=rng.choice(queues),
                    priority=rng.randint(0, 2),
                    run_at=None if rng.random() < 0.7 else clock_a.now() + rng.uniform(-5, 30),
                    delay=rng.choice([0.0, 0.0, 3.0]),
                    max_attempts=rng.randint(1, 3),
                    idempotency_key=rng.choice([None, None, f"k{rng.randint(0, 40)}"]),
                    concurrency_key=rng.choice([None, "c:a", "c:b"]),
                )
                for _ in range(rng.randint(1, 6))
            ]
            same("enqueue", batch)
        elif roll < 0.45:
            worker = rng.choice(workers)
            wanted = rng.sample(queues, rng.randint(1, 3))
            limits = rng.choice(CLAIM_LIMITS)
            claimed = same(
                "claim", wanted, worker, rng.randint(1, 4), rng.choice([5.0, 30.0]), limits
            )
            held[worker].extend(claimed)
        elif roll < 0.65:
            worker = rng.choice(workers)
            rng.shuffle(held[worker])
            take, held[worker] = held[worker][:3], held[worker][3:]
            acks = []
            for job in take:
                kind = rng.choice(list(AckKind))
                error = AttemptError(job.attempt, clock_a.now(), ErrorKind.ERROR, "E", f"s{step}")
                delayed = kind is AckKind.RETRY or (kind is AckKind.RELEASE and rng.random() < 0.5)
                acks.append(
                    Ack(
                        job.ref,
                        kind,
                        result='{"ok": true}' if kind is AckKind.COMPLETE else None,
                        error=None if kind is AckKind.COMPLETE else error,
                        delay=rng.uniform(0, 10) if delayed else None,
                    )
                )
            same("ack", acks)
        elif roll < 0.72:
            worker = rng.choice(workers)
            same("heartbeat", worker, [j.ref for j in held[worker]], 30.0)
        elif roll < 0.78:
            same("rescue", rng.randint(1, 3))
        elif roll < 0.83:
            same("cancel", rng.randint(1, 60))
        elif roll < 0.86:
            same("requeue", JobFilter(queues=frozenset({rng.choice(queues)})))
        elif roll < 0.88:
            same("prune", Retention(succeeded=5.0, cancelled=20.0, dead=None), 10_000)
        elif roll < 0.89:
            same("purge", JobFilter(states=frozenset({JobState.CANCELLED})))
        elif roll < 0.93:
            states = frozenset(rng.sample(list(JobState), 2))
            same("list_jobs", JobFilter(states=states, limit=5, before_id=rng.randint(1, 80)))
            same("next_run_at", rng.sample(queues, 2))
            same("stats")
        else:
            step_seconds = rng.choice([0.5, 2.0, 10.0, 40.0])
            clock_a.advance(step_seconds)
            clock_b.advance(step_seconds)
    assert a.list_jobs(JobFilter()) == b.list_jobs(JobFilter())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sqlite_answers_exactly_as_the_memory_engine(db_path: Path, seed: int) -> None:
    clock_memory, clock_sqlite = FakeClock(), FakeClock()
    memory = MemoryBackend("memory://", clock_memory)
    with SQLiteBackend(f"sqlite:///{db_path}", clock_sqlite) as sqlite_backend:
        _random_operations(memory, sqlite_backend, clock_memory, clock_sqlite, seed)
