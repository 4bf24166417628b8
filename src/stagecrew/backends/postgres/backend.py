"""The PostgreSQL engine (`postgresql://...`): any number of workers on any number of hosts.

Every statement lives in a `.sql` file under `sql/` (see `statements.py`). Each operation
is written once, as a generator that yields the engine's commands and receives their rows
(`driver.py`); the `Backend` front runs it through `_drive` on a connection of the sync
pool, `_drive_async` on one of the asyncio pool, or `_drive_in` / `_drive_in_async` on the
caller's own connection (`enqueue_in`, `complete_in`). Almost every operation is one
statement in autocommit mode: one round trip, atomic on its own, whatever the batch size.
The exceptions: a large enqueue without idempotency keys (ids drawn, COPY, NOTIFY: one
transaction), and `migrate`.

Plans. A queue table's statistics are nearly always stale (every job was
waiting at the last ANALYZE), so no hot statement joins the jobs table to its
input: rows are found by index, through `id = ANY(...)` or the partial
indexes of the migration, and a statement cannot degrade into a scan per row.

Time. The server's clock is the only clock for due times, leases and
timestamps: statements read `store_now(NULL)`, the statement's start time on
the server, so a worker whose clock is off can neither run a job early nor
rescue one early. The one exception is a `FakeClock` (tests): its time is
passed to every statement instead. A retry's delay is added to that clock by
the ack statement; only an absolute `run_at` given at enqueue is stored as
given. Times are epoch seconds
(`double precision`) throughout, as in `Job`.

Concurrency. Claims lock rows with `FOR UPDATE SKIP LOCKED`, so concurrent
workers take different jobs without waiting on each other; acks, heartbeats
and `complete_in` are fenced on (id, claims, state) in their WHERE clauses
(rescues on state and lease expiry), which PostgreSQL re-checks on the newest
row version when two writers meet.

Failures. A driver wraps a psycopg error in a `StoreFailure` that says whether a
statement had reached the server; the front turns it into `EnqueueError` (enqueue) or
`BackendError` (everything else), whose message `_describe` writes: the server, the
schema and what to do. Nothing is retried here. The pools replace connections the
server dropped, and the worker's own retry with backoff carries it through a server
restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, TypeVar, cast

import orjson
import psycopg
from psycopg import AsyncConnection, Connection
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb

from ... import transitions
from ...clock import Clock, is_fake
from ...errors import BackendError, SchemaOutOfDateError
from ...job import ClaimedJob, EnqueuedJob, Job, JobRef, JobState, NewJob
from ..base import (
    Ack,
    Backend,
    Capabilities,
    HeartbeatReply,
    JobFilter,
    QueueStats,
    RescueReport,
    Retention,
)
from ..caps import ClaimLimits
from ..fairness import STALE_AFTER, fair_order, heads_wanted, keys_wanted
from ..filter_terms import filter_terms
from ..job_counts import CountBucket, CountHistory, CountKey
from ..limit_states import LimitState, LimitStates, LimitSwap
from ..ops import Op, run, run_async
from ..records import WORKER_LOST, decode_errors, job_from_row
from ..schedules import (
    ScheduleFire,
    ScheduleFired,
    ScheduleRecord,
    cas_holds,
    jobs_of,
    refused,
)
from ..steps import JobSteps, steps_from_rows
from ..unique import states_text
from ..worker_registry import WorkerBeat, WorkerRecord, WorkerRegistry, info_from, info_text
from ..workflows import (
    ADVANCING,
    HELD_AT,
    Member,
    NewWorkflow,
    OnFailure,
    Verdict,
    Workflow,
    WorkflowStatus,
    decide,
    settled_early,
    shape_from_json,
    shape_to_json,
)
from .deadlines import DEADLINES
from .driver import (
    TRANSACTION,
    Copy,
    Progress,
    SqlOp,
    Statement,
    StoreFailure,
    drive,
    drive_async,
    raw_connection,
)
from .listener import FINISHED_PAYLOAD_BYTES, NotificationListener, Pause, Read
from .pools import AsyncConn, AsyncPools, SyncConnection, SyncPool, connect_kwargs
from .settings import PostgresSettings, parse_url
from .statements import Statements, schema_version
from .vacuum import TableVacuumer

log = logging.getLogger("stagecrew.postgres")

T = TypeVar("T")

COPY_MIN_BATCH = 200
"""From this many jobs without idempotency keys, enqueue streams them with COPY."""
COPY_TYPES = ("int8", *["text"] * 4, "int4", "float8", "int4", "float8", "float8", "text")
"""Column types of enqueue_copy.sql: id, task, queue, state, payload, priority, run_at,
max_attempts, enqueued_at, order_at, concurrency_key."""
RESCUE_BATCH = 5000
"""Expired leases settled per statement, so rows are locked briefly however many expired."""
MAX_KEY_LOOKUPS = 3
_KEY_LOCKS = """locks AS (
    SELECT count(pg_advisory_xact_lock(lock_id)) AS taken
    FROM (
        SELECT DISTINCT hashtextextended({jobs_table} || ':i:' || key, 0) AS lock_id
        FROM unnest(%(keys)b::text[]) AS key
        WHERE key IS NOT NULL
        ORDER BY lock_id
    ) AS l
),
"""
"""enqueue.sql's {locks} for a keyed batch: the advisory lock of each of its idempotency keys,
as enqueue_lock_keys.sql takes them (the same lock ids), in the same order; the statement's
own transaction holds them."""
"""Times `enqueue` looks again for a key a concurrent transaction stored (see enqueue.sql)."""
_LOST_JOBS = {
    "rescue": {"lost": "lease_expires_at < {schema}.store_now(%(now)s)", "locked": "SKIP LOCKED"},
    "release_worker": {"lost": "lease_owner = %(worker)s", "locked": ""},
}
"""Which running jobs each operation settles as lost, and whether it skips locked rows
(see settle_lost.sql)."""


def _rounds(items: Sequence[T], key: Callable[[T], int]) -> list[list[int]]:
    """Positions of `items` split so that no key repeats within a round, each sorted by key.

    Round n holds the n-th occurrence of each key, so applying the rounds one
    after another applies the items in order. Nearly always there is one round.
    Sorted, the keys of a round can be searched by `width_bucket` in SQL.
    """
    rounds: list[list[int]] = []
    seen: dict[int, int] = {}
    for position, item in enumerate(items):
        k = key(item)
        n = seen.get(k, 0)
        seen[k] = n + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(position)
    for positions in rounds:
        positions.sort(key=lambda p: key(items[p]))
    return rounds


# -- rows to records -----------------------------------------------------------------
_JOB_STATE = {state.value: state for state in JobState}


def _filter_sql(job_filter: JobFilter) -> tuple[str, dict[str, Any]]:
    """The WHERE terms (each starting with AND) and parameters of a JobFilter.

    Lists are bound as one array each, so the statement text depends only on
    which fields are set, and stays prepared.
    """
    sql: list[str] = []
    params: dict[str, Any] = {}
    for term in filter_terms(job_filter):
        if term.values is not None:
            sql.append(f" AND {term.column} = ANY(%({term.param})b::{term.sql_type}[])")
            params[term.param] = term.values
        else:
            cast_to = "::double precision" if term.sql_type == "double precision" else ""
            sql.append(f" AND {term.column} < %({term.param})s{cast_to}")
            params[term.param] = term.bound
    return "".join(sql), params


def _aborted(conn: Connection[Any] | AsyncConnection[Any]) -> bool:
    return conn.info.transaction_status == TransactionStatus.INERROR


class PostgresBackend(Backend):
    """Jobs in one PostgreSQL schema, shared by every worker that can reach the server.

    `url` is a libpq URI; its query string may also carry `schema` (default
    `stagecrew`), `pool_min`, `pool_max` (default 1 and 4), `pool_timeout`,
    `task_pool_max` and `vacuum` (see settings.py), which are taken out before
    the URI reaches libpq.
    The constructor connects to nothing: pools open on first use, and
    `prepare()` (called by `App` once) only checks the schema version. Create
    or upgrade the schema with `migrate()` (`stagecrew migrate`).
    """

    capabilities = Capabilities(
        cross_process=True,
        server_clock=True,
        instant_wakeup=True,
        transactional_enqueue=True,
        transactional_complete=True,
    )
    _store_errors = (StoreFailure,)

    def __init__(self, url: str, clock: Clock | None = None) -> None:
        super().__init__(clock)
        self.url = url
        self.settings: PostgresSettings = parse_url(url)
        self.schema = self.settings.schema
        self._sql = Statements(self.schema)
        name = f"stagecrew:{self.schema}"
        self._deadline = self.settings.statement_deadline
        """Seconds the client gives a statement of its own pools (see deadlines.py), or None."""
        pool_max, task_pool_max = self.settings.pool_max, self.settings.task_pool_max
        self._pool = SyncPool(self.settings, name, pool_max, statement_timeout=True)
        self._apools = AsyncPools(self.settings, name, pool_max, statement_timeout=True)
        self._task_pool = SyncPool(
            self.settings, f"{name}:tasks", task_pool_max, statement_timeout=False
        )
        self._task_apools = AsyncPools(
            self.settings, f"{name}:tasks", task_pool_max, statement_timeout=False
        )
        self._vacuumer: TableVacuumer | None = None
        """Started by the first claim in a process (workers only): see vacuum.py."""
        self._listener: NotificationListener | None = None
        self._listener_lock = threading.Lock()
        """Held to start the listener: finish waits may start it from any thread."""
        self._seen = 0
        """The listener's sequence number when the last claim started (see listener.py)."""

    def __repr__(self) -> str:
        return f"<PostgresBackend {self.settings.where} schema={self.schema}>"

    def _now(self) -> float | None:
        """The time to pass to statements: None (the server's clock) unless the clock is fake."""
        return self.clock.now() if is_fake(self.clock) else None

    # -- the drivers -------------------------------------------------------------------
    def _drive(self, op: Op[T]) -> T:
        """Run `op` on a connection of the sync pool, each statement under the deadline."""
        progress = Progress()
        try:
            with self._pool.connection() as conn:
                return drive(conn, op, progress, self._deadline)
        except psycopg.Error as exc:
            raise StoreFailure(exc, sent=progress.sent) from exc

    async def _drive_async(self, op: Op[T]) -> T:
        progress = Progress()
        try:
            async with self._apools.connection() as conn:
                return await drive_async(conn, op, progress, self._deadline)
        except psycopg.Error as exc:
            raise StoreFailure(exc, sent=progress.sent) from exc

    def _drive_in(self, connection: object, op: Op[T]) -> T:
        """Run `op` inside the caller's transaction, on their psycopg connection or cursor.

        `connection` is a `psycopg.Connection` or `Cursor`, or a wrapper of one (Django's
        `connection`, SQLAlchemy's `Connection`); it must be a connection to this store's
        database. Statements are schema-qualified: its `search_path` does not matter and is
        not changed. In autocommit mode, with no transaction open, each statement commits by
        itself. A failure aborts the caller's transaction, which must then be rolled back
        (the error says so). See docs/postgres.md for what `complete_in` guarantees.
        """
        conn = raw_connection(connection)
        if not isinstance(conn, Connection):
            raise TypeError(
                "enqueue_in and complete_in need a psycopg (3) Connection or Cursor, not "
                f"{type(connection)!r}; use enqueue_in_async or complete_in_async for an "
                "AsyncConnection"
            )
        try:
            return drive(conn, op, Progress())
        except psycopg.Error as exc:
            raise StoreFailure(exc, sent=True, aborted=_aborted(conn)) from exc

    async def _drive_in_async(self, connection: object, op: Op[T]) -> T:
        """`_drive_in` on a `psycopg.AsyncConnection` or `AsyncCursor`."""
        conn = raw_connection(connection)
        if not isinstance(conn, AsyncConnection):
            raise TypeError(
                "enqueue_in_async and complete_in_async need a psycopg (3) AsyncConnection or "
                f"AsyncCursor, not {type(connection)!r}; use enqueue_in or complete_in for a "
                "Connection"
            )
        try:
            return await drive_async(conn, op, Progress())
        except psycopg.Error as exc:
            raise StoreFailure(exc, sent=True, aborted=_aborted(conn)) from exc

    def _describe_failure(self, operation: str, exc: BaseException) -> str:
        if isinstance(exc, StoreFailure):
            return self._describe(operation, exc.error, sent=exc.sent, aborted=exc.aborted)
        return self._describe(operation, exc, sent=True)

    def _describe(
        self, operation: str, exc: BaseException, *, sent: bool, aborted: bool = False
    ) -> str:
        """What failed, where, and what to do; `sent`: a statement had reached the server."""
        detail = " ".join(str(exc).split()) or type(exc).__name__
        text = (
            f"{operation} failed on PostgreSQL {self.settings.where} "
            f"(schema {self.schema!r}): {detail}"
        )
        if isinstance(
            exc,
            psycopg.errors.UndefinedTable
            | psycopg.errors.UndefinedFunction
            | psycopg.errors.InvalidSchemaName,
        ):
            text += ". The schema is missing or out of date: run `stagecrew migrate`"
        elif isinstance(exc, psycopg.OperationalError) and not sent:
            text += ". Check that the server is running and reachable from this host"
        if operation == "enqueue":
            sqlstate = getattr(exc, "sqlstate", None)
            connection_lost = isinstance(exc, psycopg.OperationalError) and (
                sqlstate is None or sqlstate.startswith(("08", "57P"))
            )
            if not (sent and connection_lost):  # the server rolled it back
                text += "; nothing was written"
            else:
                text += (
                    "; the connection failed while the jobs were being written, so they may "
                    "or may not be stored (enqueueing again with the same idempotency keys is "
                    "safe)"
                )
        if aborted:
            text += "; your transaction is aborted now: roll it back"
        return text

    @contextlib.contextmanager
    def _direct_connection(
        self, operation: str, *, deadline: bool = True
    ) -> Iterator[SyncConnection]:
        """A connection of its own, outside the pools (migrate, prepare, preflight).

        With `deadline` (not for migrate, whose DDL may run long) the block runs under
        the statement timeout and, as a whole, the client's statement deadline.
        """
        try:
            conn = psycopg.Connection.connect(
                self.settings.conninfo, **connect_kwargs(self.settings, statement_timeout=deadline)
            )
        except psycopg.Error as exc:
            raise BackendError(self._describe(operation, exc, sent=False)) from exc
        with conn, DEADLINES.guard(conn.pgconn.socket, self._deadline if deadline else None):
            yield conn

    # -- life cycle ------------------------------------------------------------------
    def migrate(self) -> list[str]:
        """Create the schema and apply the missing migrations, in one transaction.

        Safe from many hosts at once: a transaction-scoped advisory lock (one
        per schema) serialises them, and the applied version is read under it,
        so each migration runs once. Versions are recorded in
        `<schema>.schema_migrations`.
        """
        target = schema_version()
        applied: list[str] = []
        with self._direct_connection("migrate", deadline=False) as conn:
            try:
                with conn.transaction():
                    key = self.settings.migration_lock_key
                    conn.execute(self._sql.get("migrate_lock"), {"key": key})
                    conn.execute(self._sql.get("migrate_bootstrap"))
                    row = conn.execute(self._sql.get("schema_version")).fetchone()
                    current = int(row[0]) if row else 0
                    if current > target:
                        log.warning(
                            "schema %r is at version %d, newer than this stagecrew (%d): "
                            "nothing to do; upgrade stagecrew on this host",
                            self.schema,
                            current,
                            target,
                        )
                    for version, name, script in self._sql.migrations():
                        if version <= current:
                            continue
                        conn.execute(script)
                        conn.execute(
                            self._sql.get("migrate_record"), {"version": version, "name": name}
                        )
                        log.info("schema %r: applied migration %s", self.schema, name)
                        applied.append(name)
            except psycopg.Error as exc:
                raise BackendError(self._describe("migrate", exc, sent=True)) from exc
        return applied

    def _stored_version(self, conn: SyncConnection) -> int | None:
        """The schema's applied version, or None if it was never migrated."""
        try:
            row = conn.execute(self._sql.get("schema_version")).fetchone()
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
            return None
        return int(row[0]) if row else 0

    def _check_version(self, conn: SyncConnection) -> int:
        target = schema_version()
        stored = self._stored_version(conn)
        if stored is None or stored < target:
            state = "does not exist" if stored is None else f"is at version {stored}"
            raise SchemaOutOfDateError(
                f"the stagecrew schema {self.schema!r} in PostgreSQL {self.settings.where} "
                f"{state}, and this stagecrew needs version {target}: run `stagecrew migrate` "
                "against this database (STAGECREW_URL or --url), then start again"
            )
        return stored

    def prepare(self) -> None:
        """Check that the schema is migrated; never changes it.

        Raises `SchemaOutOfDateError` (naming `stagecrew migrate`) when the
        schema is missing or older than this stagecrew, and `BackendError`
        when the server cannot be reached.
        """
        with self._direct_connection("prepare") as conn:
            try:
                self._check_version(conn)
            except psycopg.Error as exc:
                raise BackendError(self._describe("prepare", exc, sent=True)) from exc

    def preflight(self) -> list[str]:
        """Check the schema and the server settings a healthy queue needs; return warnings."""
        warnings: list[str] = []
        with self._direct_connection("preflight") as conn:
            try:
                stored = self._check_version(conn)
                row = conn.execute(self._sql.get("server_settings")).fetchone()
            except psycopg.Error as exc:
                raise BackendError(self._describe("preflight", exc, sent=True)) from exc
        if stored > schema_version():
            warnings.append(
                f"the stagecrew schema {self.schema!r} is at version {stored}, newer than this "
                f"stagecrew knows ({schema_version()}): upgrade stagecrew on this host"
            )
        autovacuum, fsync, synchronous_commit = row if row else ("on", "on", "on")
        if autovacuum != "on":
            if self.settings.vacuum == "off":
                consequence = (
                    "the jobs table's dead rows are never reclaimed and claims slow down as it "
                    "bloats (vacuum=off in the URL)"
                )
            else:
                consequence = "stagecrew's workers vacuum the jobs table themselves meanwhile"
            warnings.append(
                f"autovacuum is off on PostgreSQL {self.settings.where}: {consequence}; turn "
                "autovacuum on (stagecrew's migration already tunes it for the jobs table)"
            )
        if fsync != "on":
            warnings.append(
                f"fsync is off on PostgreSQL {self.settings.where}: a server crash can lose "
                "or corrupt enqueued jobs"
            )
        if synchronous_commit == "off":
            warnings.append(
                f"synchronous_commit is off on PostgreSQL {self.settings.where}: a server crash "
                "can lose the jobs enqueued and the outcomes written in its last moments"
            )
        return warnings

    def close(self) -> None:
        if self._vacuumer is not None:
            self._vacuumer.stop()
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        self._apools.close()
        self._task_apools.close()
        self._pool.close()
        self._task_pool.close()
        super().close()

    async def aclose(self) -> None:
        """`close`, closing the running loop's async pools properly first."""
        await self._apools.aclose()
        await self._task_apools.aclose()
        await asyncio.to_thread(self.close)

    # -- producer --------------------------------------------------------------------
    def _enqueue(self, jobs: Sequence[NewJob]) -> SqlOp[list[EnqueuedJob]]:
        """One statement (INSERT ... SELECT FROM unnest(...)), or for a large batch without
        keys one transaction around a COPY. One `pg_notify` per queue of the batch goes out
        with the commit."""
        if len(jobs) >= COPY_MIN_BATCH and all(
            job.idempotency_key is None and job.fairness_key is None and job.unique_key is None
            for job in jobs
        ):
            return self._enqueue_by_copy(jobs)
        if any(job.unique_key is not None for job in jobs):
            return self._enqueue_unique(jobs, own_transaction=True)
        if any(job.fairness_key is not None for job in jobs):
            return self._enqueue_fair(jobs, own_transaction=True)
        return self._enqueue_rows(jobs, [None] * len(jobs))

    def _enqueue_in(self, jobs: Sequence[NewJob]) -> SqlOp[list[EnqueuedJob]]:
        """`_enqueue` on the caller's connection: its transaction holds the statements together."""
        if any(job.unique_key is not None for job in jobs):
            return self._enqueue_unique(jobs, own_transaction=False)
        if any(job.fairness_key is not None for job in jobs):
            return self._enqueue_fair(jobs, own_transaction=False)
        return self._enqueue_rows(jobs, [None] * len(jobs))

    def _enqueue_unique(
        self, jobs: Sequence[NewJob], *, own_transaction: bool
    ) -> SqlOp[list[EnqueuedJob]]:
        """A batch with unique keys: one enqueue_unique.sql per job, in one transaction (ours
        or the caller's); the partial unique index decides every race (see backends/unique.py)."""
        if own_transaction:
            yield TRANSACTION
        if any(job.fairness_key is not None for job in jobs):
            return (
                yield from self._enqueue_fair(jobs, own_transaction=False, rows=self._unique_rows)
            )
        return (yield from self._unique_rows(jobs, [None] * len(jobs)))

    def _unique_rows(
        self, jobs: Sequence[NewJob], order_ats: Sequence[float | None]
    ) -> SqlOp[list[EnqueuedJob]]:
        statements = [
            self._enqueue_one(job, at, unique=True) for job, at in zip(jobs, order_ats, strict=True)
        ]
        keys = [f"i:{job.idempotency_key}" for job in jobs if job.idempotency_key is not None]
        keys += [f"u:{job.unique_key}" for job in jobs if job.unique_key is not None]
        if len(keys) > 1:
            yield Statement(self._sql.get("enqueue_lock_keys"), {"keys": keys})
        yield from self._release_idempotency_keys(jobs)
        results: list[EnqueuedJob] = []
        for statement in statements:
            for _ in range(MAX_KEY_LOOKUPS):
                done = yield statement
                found = {tag: job_id for tag, job_id in done.rows}
                if "new" in found:
                    results.append(EnqueuedJob(found["new"], created=True))
                    break
                held = found.get("stored", found.get("held"))
                if held is not None:
                    results.append(EnqueuedJob(held, created=False))
                    break
            else:
                raise psycopg.errors.SerializationFailure(
                    "a unique key kept changing hands while being enqueued; retry"
                )
        return results

    def _release_idempotency_keys(self, jobs: Sequence[NewJob]) -> SqlOp[None]:
        """Finished jobs whose idempotency window has passed give up the keys of this batch."""
        keyed = [job for job in jobs if job.idempotency_key is not None]
        if not keyed:
            return
        yield Statement(
            self._sql.get("idempotency_release"),
            {
                "now": self._now(),
                "keys": [job.idempotency_key for job in keyed],
                "windows": [job.idempotency_window for job in keyed],
            },
        )

    def _enqueue_fair(
        self,
        jobs: Sequence[NewJob],
        *,
        own_transaction: bool,
        rows: Callable[[Sequence[NewJob], Sequence[float | None]], SqlOp[list[EnqueuedJob]]]
        | None = None,
    ) -> SqlOp[list[EnqueuedJob]]:
        """A batch with fairness keys: read the fair order's state, insert, record each key's
        latest order_at; in one transaction, ours or the caller's (see `fairness`). Two
        concurrent enqueues of one key may give their jobs the same ordering times: ties go
        by id."""
        if own_transaction:
            yield TRANSACTION
        heads = sorted(heads_wanted(jobs))
        keys = sorted(keys_wanted(jobs))
        done = yield Statement(
            self._sql.get("fair_state"),
            {
                "now": self._now(),
                "head_queues": [queue for queue, _ in heads],
                "head_priorities": [priority for _, priority in heads],
                "key_queues": [queue for queue, _ in keys],
                "keys": [key for _, key in keys],
            },
        )
        now = 0.0
        head_at: dict[tuple[str, int], float | None] = {}
        last_at: dict[tuple[str, str], float | None] = {}
        for tag, queue, priority, key, value in done.rows:
            if tag == "now":
                now = value
            elif tag == "head":
                head_at[(queue, priority)] = value
            else:
                last_at[(queue, key)] = value
        fair = fair_order(jobs, now, head_at, last_at)
        stored = yield from (rows or self._enqueue_rows)(jobs, fair.order_ats)
        recorded = sorted(fair.lasts.items())
        yield Statement(
            self._sql.get("fair_record"),
            {
                "queues": [queue for (queue, _), _ in recorded],
                "keys": [key for (_, key), _ in recorded],
                "lasts": [last for _, last in recorded],
            },
        )
        return stored

    def _enqueue_rows(
        self, jobs: Sequence[NewJob], order_ats: Sequence[float | None]
    ) -> SqlOp[list[EnqueuedJob]]:
        """Insert the batch with enqueue.sql (one job: enqueue_one.sql), skipping stored keys.

        Every field of every job is read before the first statement is sent, so a bad job
        fails the batch with nothing written. A key a concurrent transaction stored after
        the statement began is looked up again, up to MAX_KEY_LOOKUPS times.
        """
        if all(job.idempotency_key is None for job in jobs):  # the common case: no lookups
            if len(jobs) == 1:
                done = yield self._enqueue_one(jobs[0], order_ats[0])
                return [EnqueuedJob(row[1], created=True) for row in done.rows if row[0] == "new"]
            done = yield Statement(
                self._sql.get("enqueue", locks="", locked=""), self._enqueue_params(jobs, order_ats)
            )
            drawn: list[int] = next(row[1] for row in done.rows if row[0] == "new")
            return [EnqueuedJob(job_id, created=True) for job_id in drawn]

        results: list[EnqueuedJob | None] = [None] * len(jobs)
        pending = list(range(len(jobs)))
        for _ in range(MAX_KEY_LOOKUPS):
            expired: list[NewJob] = []  # holders past their window: release, then try again
            if len(pending) == 1:
                [index] = pending
                done = yield self._enqueue_one(jobs[index], order_ats[index])
                for tag, job_id, age in done.rows:
                    if tag == "stored" and _past_window(age, jobs[index]):
                        expired.append(jobs[index])
                    elif tag != "woken":
                        results[index] = EnqueuedJob(job_id, created=tag == "new")
            else:
                params = self._enqueue_params(
                    [jobs[i] for i in pending], [order_ats[i] for i in pending]
                )
                done = yield Statement(
                    self._sql.get("enqueue", locks=_KEY_LOCKS, locked=" CROSS JOIN locks"), params
                )
                drawn = []
                inserted_with_key: set[int] = set()
                stored: dict[str, tuple[int, float | None]] = {}
                for tag, ids, job_id, key, age in done.rows:
                    if tag == "new":
                        drawn = ids
                    elif tag == "key":
                        inserted_with_key.add(job_id)
                    elif tag == "stored":
                        stored[key] = (job_id, age)
                for index, job_id in zip(pending, drawn, strict=True):
                    key = jobs[index].idempotency_key
                    if key is None or job_id in inserted_with_key:
                        results[index] = EnqueuedJob(job_id, created=True)
                    elif key in stored:
                        holder, age = stored[key]
                        if _past_window(age, jobs[index]):
                            expired.append(jobs[index])
                        else:
                            results[index] = EnqueuedJob(holder, created=False)
            pending = [i for i in pending if results[i] is None]
            if not pending:
                return cast(list[EnqueuedJob], results)
            yield from self._release_idempotency_keys(expired)
        raise psycopg.errors.SerializationFailure(
            f"{len(pending)} idempotency key(s) kept changing hands while being enqueued; retry"
        )

    def _enqueue_by_copy(self, jobs: Sequence[NewJob]) -> SqlOp[list[EnqueuedJob]]:
        """A large batch without idempotency keys: draw ids, COPY, wake; in one transaction.

        COPY inserts a row for a fraction of what INSERT ... SELECT costs. Ids
        and the store's time come from the server first (enqueue_reserve.sql),
        so rows are complete when they are streamed, and every field of every
        job is read before anything is sent.
        """
        yield TRANSACTION
        fields = [
            (
                job.task,
                job.queue,
                job.payload,
                int(job.priority),
                None if job.run_at is None else float(job.run_at),
                float(job.delay),
                int(job.max_attempts),
                job.concurrency_key,
            )
            for job in jobs
        ]
        done = yield Statement(
            self._sql.get("enqueue_reserve"), {"now": self._now(), "count": len(jobs)}
        )
        now, ids = done.rows[0]
        due_now = transitions.initial_state(now, now).value  # a job without run_at or delay
        rows = []
        for job_id, (task, queue, payload, priority, run_at, delay, max_attempts, key) in zip(
            ids, fields, strict=True
        ):
            if run_at is None and not delay:
                due, state = now, due_now
            else:
                due = now + delay if run_at is None else run_at
                state = transitions.initial_state(due, now).value
            rows.append(
                (job_id, task, queue, state, payload, priority, due, max_attempts, now, due, key)
            )
        yield Copy(self._sql.get("enqueue_copy"), COPY_TYPES, rows)
        queues = sorted({row[1] for row in fields})
        yield Statement(
            self._sql.get("notify_queues"), {"channel": self.settings.channel, "queues": queues}
        )
        return [EnqueuedJob(job_id, created=True) for job_id in ids]

    def _enqueue_one(
        self, job: NewJob, order_at: float | None, *, unique: bool = False
    ) -> Statement:
        params = {
            "now": self._now(),
            "channel": self.settings.channel,
            "task": job.task,
            "queue": job.queue,
            "payload": job.payload,
            "priority": int(job.priority),
            "run_at": None if job.run_at is None else float(job.run_at),
            "delay": float(job.delay),
            "max_attempts": int(job.max_attempts),
            "key": job.idempotency_key,
            "order_at": order_at,
            "fairness_key": job.fairness_key,
            "concurrency_key": job.concurrency_key,
        }
        if unique:
            params["unique_key"] = job.unique_key
            params["unique_states"] = states_text(job.unique_states) or None
            return Statement(self._sql.get("enqueue_unique"), params)
        return Statement(self._sql.get("enqueue_one"), params)

    def _enqueue_params(
        self, jobs: Sequence[NewJob], order_ats: Sequence[float | None]
    ) -> dict[str, Any]:
        return {
            "now": self._now(),
            "channel": self.settings.channel,
            "tasks": [job.task for job in jobs],
            "queues": [job.queue for job in jobs],
            "payloads": [job.payload for job in jobs],
            "priorities": [int(job.priority) for job in jobs],
            "run_ats": [None if job.run_at is None else float(job.run_at) for job in jobs],
            "delays": [float(job.delay) for job in jobs],
            "max_attempts": [int(job.max_attempts) for job in jobs],
            "keys": [job.idempotency_key for job in jobs],
            "order_ats": list(order_ats),
            "fairness_keys": [job.fairness_key for job in jobs],
            "concurrency_keys": [job.concurrency_key for job in jobs],
        }

    # -- worker ------------------------------------------------------------------------
    def _mark_claim(self) -> None:
        """Notifications up to here are answered by the claim about to run (listener.py).

        The first claim in a process also starts the table vacuumer (vacuum.py).
        """
        if self._listener is not None:
            self._seen = max(self._seen, self._listener.sequence)
        if self._vacuumer is None:
            self._vacuumer = TableVacuumer(self.settings, self._sql)
            self._vacuumer.start()

    def _claim(
        self,
        queues: tuple[str, ...],
        worker: str,
        limit: int,
        lease_seconds: float,
        limits: ClaimLimits | None = None,
    ) -> SqlOp[list[ClaimedJob]]:
        """One statement: claim.sql, or claim_capped.sql for a claim within `limits`."""
        self._mark_claim()
        if limits is not None:
            return (
                yield from self._claim_within_caps(queues, worker, limit, lease_seconds, limits)
            )
        params = {
            "now": self._now(),
            "queues": list(queues),
            "worker": worker,
            "limit": limit,
            "lease_seconds": lease_seconds,
        }
        done = yield Statement(self._sql.get("claim"), params)
        return _claimed_jobs(done.rows)

    def _claim_within_caps(
        self,
        queues: tuple[str, ...],
        worker: str,
        limit: int,
        lease_seconds: float,
        limits: ClaimLimits,
    ) -> SqlOp[list[ClaimedJob]]:
        """A capped claim in one statement (claim_capped.sql): the schema's claim_within_caps
        (migration 14) takes the lock of capped claims, then counts the jobs holding slots,
        reads `limit` candidates in claim order and claims them all in one query when the caps
        admit every one; else it counts again and chooses by the rule
        (`caps.select_within_caps`, encoded again in PL/pgSQL: one by one, reading again past
        what the caps turned away) and claims the chosen.

        The lock (the one claim_caps_lock.sql takes) makes concurrent capped claims count one
        after another, each after the one before committed, so together they never exceed a
        cap; the statement runs on its own, so it holds the lock until it commits.
        """
        params = {
            "now": self._now(),
            "queues": list(queues),
            "worker": worker,
            "limit": limit,
            "lease_seconds": lease_seconds,
            "task_names": list(limits.tasks),
            "task_caps": Jsonb(dict(limits.tasks)),
            "queue_names": list(limits.queues),
            "queue_caps": Jsonb(dict(limits.queues)),
            "key_caps": Jsonb(dict(limits.keys)),
        }
        done = yield Statement(self._sql.get("claim_capped"), params)
        return _claimed_jobs(done.rows)

    def _heartbeat(
        self, worker: str, refs: tuple[JobRef, ...], lease_seconds: float
    ) -> SqlOp[HeartbeatReply]:
        """One statement; one more for each further claim of a job named in the batch."""
        held: set[tuple[int, int]] = set()
        cancel: set[int] = set()
        for batch in _rounds(refs, lambda ref: ref.id):
            params = {
                "now": self._now(),
                "worker": worker,
                "lease_seconds": lease_seconds,
                "ids": [refs[i].id for i in batch],
                "tokens": [refs[i].token for i in batch],
            }
            done = yield Statement(self._sql.get("heartbeat"), params)
            held.update((row[0], row[1]) for row in done.rows)
            cancel.update(row[0] for row in done.rows if row[2])
        lost = frozenset(ref.id for ref in refs if (ref.id, ref.token) not in held)
        return HeartbeatReply(lost, frozenset(cancel))

    def _ack(self, acks: Sequence[Ack]) -> SqlOp[list[bool]]:
        """Apply every outcome with one statement; each is fenced on (id, claim token, running).

        A batch that names a job twice takes one more statement per repeat.
        """
        applied = [False] * len(acks)
        if any(ack.in_workflow for ack in acks):  # the fan-in joins the ack's transaction
            yield TRANSACTION
        workflows: set[str] = set()
        for batch in _rounds(acks, lambda ack: ack.ref.id):
            done = yield Statement(self._sql.get("ack"), self._ack_params([acks[i] for i in batch]))
            for row in done.rows:
                applied[batch[row[0] - 1]] = True
                if row[3] is not None:
                    workflows.add(row[3])
        if workflows:
            yield from self._fan_in(sorted(workflows))
        return applied

    def _ack_params(self, acks: Sequence[Ack]) -> dict[str, Any]:
        """The arrays of ack.sql; each Ack carries its result and its delay (`run_in`)."""
        ids: list[int] = []
        tokens: list[int] = []
        kinds: list[str] = []
        states: list[str] = []
        results: list[str | None] = []
        errors: list[str | None] = []
        delays: list[float | None] = []
        for ack in acks:
            ids.append(ack.ref.id)
            tokens.append(ack.ref.token)
            kinds.append(ack.kind.value)
            states.append(ack.target.value)
            results.append(ack.result)
            errors.append(None if ack.error is None else orjson.dumps(ack.error.to_json()).decode())
            delays.append(ack.run_in)
        return {
            "now": self._now(),
            **self._channels(),
            "ids": ids,
            "tokens": tokens,
            "kinds": kinds,
            "states": states,
            "results": results,
            "errors": errors,
            "delays": delays,
        }

    def _rescue(self, max_lost: int) -> SqlOp[RescueReport]:
        """Settle up to RESCUE_BATCH expired leases in one transaction, with the fan-in of the
        workflow members among them; `more` asks the front layer for the next batch."""
        yield TRANSACTION
        params = self._settle_lost_params(max_lost, limit=RESCUE_BATCH)
        done = yield Statement(self._settle_lost_sql("rescue"), params)
        requeued, dead, cancelled = done.rows[0][:3]
        if done.rows[0][5]:
            yield from self._fan_in(sorted(done.rows[0][5]))
        more = requeued + dead + cancelled >= RESCUE_BATCH
        return RescueReport(requeued=requeued, dead=dead, cancelled=cancelled, more=more)

    def _release_worker(self, worker: str, max_lost: int) -> SqlOp[RescueReport]:
        yield TRANSACTION  # the fan-in of the workflow members among the jobs joins it
        params = self._settle_lost_params(max_lost, limit=None, worker=worker)
        done = yield Statement(self._settle_lost_sql("release_worker"), params)
        requeued, dead, cancelled = done.rows[0][:3]
        if done.rows[0][5]:
            yield from self._fan_in(sorted(done.rows[0][5]))
        return RescueReport(requeued=requeued, dead=dead, cancelled=cancelled)

    def _settle_lost_sql(self, operation: str) -> str:
        """settle_lost.sql for `operation` (rescue, release_worker): see _LOST_JOBS."""
        return self._sql.get("settle_lost", **_LOST_JOBS[operation])

    def _settle_lost_params(self, max_lost: int, **params: Any) -> dict[str, Any]:
        return {
            "now": self._now(),
            **self._channels(),
            "max_lost": max_lost,
            **WORKER_LOST.params(),
            **params,
        }

    def _channels(self) -> dict[str, Any]:
        """The parameters of a statement that wakes queues and announces finished jobs."""
        return {
            "channel": self.settings.channel,
            "finished_channel": self.settings.finished_channel,
            "finished_payload_bytes": FINISHED_PAYLOAD_BYTES,
        }

    def _prune(self, retention: Retention, limit: int) -> SqlOp[int]:
        params = {
            "now": self._now(),
            "limit": limit,
            "succeeded": retention.horizon(JobState.SUCCEEDED),
            "cancelled": retention.horizon(JobState.CANCELLED),
            "dead": retention.horizon(JobState.DEAD),
        }
        done = yield Statement(self._sql.get("prune"), params)
        yield Statement(
            self._sql.get("fair_prune"), {"now": params["now"], "stale_seconds": STALE_AFTER}
        )
        if done.rowcount > 0:
            yield Statement(self._sql.get("workflow_prune"), {})
        return max(done.rowcount, 0)

    def _age_priorities(self, every: float, floor: int, limit: int) -> SqlOp[int]:
        params = {"now": self._now(), "every": every, "floor": floor, "limit": limit}
        done = yield Statement(self._sql.get("age_priorities"), params)
        return max(done.rowcount, 0)

    def _get_listener(self) -> NotificationListener:
        listener = self._listener
        if listener is None or listener.pid != os.getpid():
            with self._listener_lock:
                listener = self._listener
                if listener is None or listener.pid != os.getpid():
                    listener = NotificationListener(self.settings)
                    self._listener = listener
                    self._seen = 0
                    listener.start()
        return listener

    async def _wait(self, queues: tuple[str, ...], timeout: float) -> None:
        """Return on a NOTIFY for one of `queues`, or after `timeout` seconds.

        Returns at once if such a notification arrived since the last claim
        began (or the LISTEN connection was (re)established meanwhile, when
        notifications may have been missed). See `listener.py`.
        """
        listener = self._get_listener()
        waiter = listener.add_waiter(queues)
        try:
            latest = listener.latest(queues)
            if latest <= self._seen:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.event.wait(), timeout)
                latest = listener.latest(queues)
            self._seen = max(self._seen, latest)
        finally:
            listener.remove_waiter(waiter)

    # -- completing with the task's own writes ---------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[SyncConnection]:
        """A connection in an open transaction, for a task's own writes and `complete_in`.

        Commits when the block ends normally, rolls back when it raises. The
        connection comes from a pool of its own (`task_pool_max`, default 10),
        so tasks holding transactions never starve the worker's claims and acks.
        """
        try:
            with self._task_pool.connection() as conn, conn.transaction():
                yield conn
        except psycopg.OperationalError as exc:
            if exc.sqlstate is None:  # reaching the server, not the task's own SQL
                raise BackendError(self._describe("transaction", exc, sent=False)) from exc
            raise

    @contextlib.asynccontextmanager
    async def transaction_async(self) -> AsyncIterator[AsyncConn]:
        """`transaction` for async tasks, on an `AsyncConnection`."""
        try:
            async with self._task_apools.connection() as conn, conn.transaction():
                yield conn
        except psycopg.OperationalError as exc:
            if exc.sqlstate is None:
                raise BackendError(self._describe("transaction", exc, sent=False)) from exc
            raise

    # -- inspection and admin ----------------------------------------------------------
    def _get(self, job_id: int) -> SqlOp[Job | None]:
        done = yield Statement(self._sql.get("get_job"), {"id": job_id})
        return job_from_row(done.rows[0]) if done.rows else None

    def _finished_or_gone(self, job_id: int) -> SqlOp[bool]:
        """The one read of a finish wait: a state, not the whole job (job_finished.sql)."""
        done = yield Statement(self._sql.get("job_finished"), {"id": job_id})
        return not done.rows or bool(done.rows[0][0])

    def _wait_finished(self, job_id: int, timeout: float) -> None:
        """Wait in this thread for the listener's word that `job_id` finished (listener.py).

        The waiter is registered with the listener first, then the job is read once, then
        the thread waits: a finish committed after that read cannot go unheard.
        """
        if timeout <= 0:
            return
        listener = self._get_listener()
        with listener.finish_waiter(job_id) as waiter:

            def execute(step: Pause | Read) -> bool:
                if isinstance(step, Pause):
                    return waiter.wait(step.seen, step.seconds)
                return self._drive(self._finished_or_gone(job_id))

            run(listener.finish_steps(waiter, timeout), execute)

    async def _wait_finished_async(self, job_id: int, timeout: float) -> None:
        """`_wait_finished` on the running event loop, which it never blocks."""
        if timeout <= 0:
            return
        listener = self._get_listener()
        with listener.finish_waiter(job_id, asyncio.get_running_loop()) as waiter:

            async def execute(step: Pause | Read) -> bool:
                if isinstance(step, Pause):
                    return await waiter.wait_async(step.seen, step.seconds)
                return await self._drive_async(self._finished_or_gone(job_id))

            await run_async(listener.finish_steps(waiter, timeout), execute)

    def _list_jobs(self, job_filter: JobFilter) -> SqlOp[list[Job]]:
        terms, params = _filter_sql(job_filter)
        params["f_limit"] = job_filter.limit
        done = yield Statement(self._sql.get("list_jobs", terms), params)
        return [job_from_row(row) for row in done.rows]

    def _stats(self) -> SqlOp[list[QueueStats]]:
        done = yield Statement(self._sql.get("stats"), {"now": self._now()})
        counts: dict[str, dict[JobState, int]] = {}
        oldest: dict[str, float] = {}
        for queue, state, count, age in done.rows:
            counts.setdefault(queue, {})[_JOB_STATE[state]] = count
            if age is not None:
                oldest[queue] = max(oldest.get(queue, age), age)
        return [
            QueueStats(queue=queue, counts=counts[queue], oldest_available_age=oldest.get(queue))
            for queue in sorted(counts)
        ]

    def _cancel(self, job_id: int) -> SqlOp[Job | None]:
        channel = self.settings.finished_channel
        params = {"now": self._now(), "id": job_id, "finished_channel": channel}
        yield TRANSACTION  # a workflow member's cancel advances its workflow in the same write
        done = yield Statement(self._sql.get("cancel"), params)
        job = job_from_row(done.rows[0]) if done.rows else None
        if job is not None and job.workflow_id is not None and job.state.is_final:
            yield from self._fan_in([job.workflow_id])
        return job

    def _requeue(self, job_filter: JobFilter) -> SqlOp[int]:
        """Requeue every match; `job_filter.limit` is ignored, as by the memory engine."""
        terms, params = _filter_sql(job_filter)
        params.update(now=self._now(), channel=self.settings.channel)
        done = yield Statement(self._sql.get("requeue", terms), params)
        count: int = done.rows[0][0]
        return count

    def _purge(self, job_filter: JobFilter) -> SqlOp[int]:
        """Delete every match; `job_filter.limit` is ignored, as by the memory engine."""
        terms, params = _filter_sql(job_filter)
        done = yield Statement(self._sql.get("purge", terms), params)
        if done.rowcount > 0:
            yield Statement(self._sql.get("workflow_prune"), {})
        return max(done.rowcount, 0)

    # -- workflows ---------------------------------------------------------------------
    def _enqueue_workflow(self, workflow: NewWorkflow) -> SqlOp[list[list[int]]]:
        """The record and every member in one statement (workflow_insert.sql)."""
        members = [
            (step, index, job)
            for step, jobs in enumerate(workflow.steps)
            for index, job in enumerate(jobs)
        ]
        params = {
            "now": self._now(),
            "channel": self.settings.channel,
            "id": workflow.id,
            "shape": shape_to_json(workflow.shape),
            "on_failure": workflow.on_failure.value,
            "held_at": HELD_AT,
            "tasks": [job.task for _, _, job in members],
            "queues": [job.queue for _, _, job in members],
            "payloads": [job.payload for _, _, job in members],
            "priorities": [job.priority for _, _, job in members],
            "max_attempts": [job.max_attempts for _, _, job in members],
            "steps": [step for step, _, _ in members],
            "indexes": [index for _, index, _ in members],
        }
        done = yield Statement(self._sql.get("workflow_insert"), params)
        ids: list[list[int]] = [[] for _ in workflow.steps]
        for (step, _, _), row in zip(members, done.rows, strict=True):
            ids[step].append(row[0])
        return ids

    def _fan_in(self, workflow_ids: Sequence[str]) -> SqlOp[None]:
        """Advance each workflow as far as its members allow, in the caller's transaction.

        The record is locked first (FOR UPDATE, in id order), so of two transactions that
        each finished one of the last two members, the second reads the members after the
        first committed: one of them sees the step done, and its compare-and-set advances."""
        for workflow_id in workflow_ids:
            while True:
                locked = yield Statement(self._sql.get("workflow_lock"), {"id": workflow_id})
                if not locked.rows or WorkflowStatus(locked.rows[0][1]) not in ADVANCING:
                    break
                _, _, step, shape_text, mode, *_ = locked.rows[0]
                at = {"id": workflow_id, "step": step}
                probe = yield Statement(self._sql.get("workflow_step_probe"), at)
                decision = settled_early(OnFailure(mode), *probe.rows[0])
                if decision is None:
                    read = yield Statement(self._sql.get("workflow_step_members"), at)
                    members = [
                        Member(i, JobState(state), result, (decode_errors(errors) or (None,))[-1])
                        for i, state, result, errors in read.rows
                    ]
                    decision = decide(shape_from_json(shape_text), step, OnFailure(mode), members)
                if decision.verdict is Verdict.WAIT:
                    break
                if decision.verdict is Verdict.FAIL:
                    yield Statement(self._sql.get("workflow_failed"), {"id": workflow_id})
                    break
                if decision.verdict is Verdict.FINISH:
                    assert decision.status is not None
                    params = {
                        "id": workflow_id,
                        "status": decision.status.value,
                        "result": decision.output,
                        "now": self._now(),
                    }
                    yield Statement(self._sql.get("workflow_finished"), params)
                    break
                params = {
                    "id": workflow_id,
                    "step": step,
                    "input": decision.output,
                    "now": self._now(),
                    "channel": self.settings.channel,
                }
                yield Statement(self._sql.get("workflow_release"), params)

    def _get_workflow(self, workflow_id: str) -> SqlOp[Workflow | None]:
        found = yield Statement(self._sql.get("workflow_get"), {"id": workflow_id})
        if not found.rows:
            return None
        members = yield Statement(self._sql.get("workflow_members"), {"id": workflow_id})
        return _workflow_from_rows(found.rows[0], members.rows)

    def _cancel_workflow(self, workflow_id: str) -> SqlOp[Workflow | None]:
        yield TRANSACTION
        params = {"id": workflow_id, "now": self._now()}
        yield Statement(self._sql.get("workflow_cancel"), params)
        found = yield Statement(self._sql.get("workflow_get"), {"id": workflow_id})
        if not found.rows:
            return None
        members = yield Statement(self._sql.get("workflow_members"), {"id": workflow_id})
        return _workflow_from_rows(found.rows[0], members.rows)

    # -- queue control -----------------------------------------------------------------
    # -- steps, checkpoints and progress -------------------------------------------------
    def _store_step(self, ref: JobRef, name: str, text: str) -> SqlOp[bool]:
        params = {"id": ref.id, "token": ref.token, "name": name, "value": text}
        done = yield Statement(self._sql.get("store_step"), {**params, "now": self._now()})
        return bool(done.rows)

    def _store_state(self, ref: JobRef, text: str) -> SqlOp[bool]:
        params = {"id": ref.id, "token": ref.token, "value": text, "now": self._now()}
        done = yield Statement(self._sql.get("store_state"), params)
        return bool(done.rows)

    def _store_progress(self, ref: JobRef, text: str) -> SqlOp[bool]:
        params = {"id": ref.id, "token": ref.token, "progress": text, "now": self._now()}
        done = yield Statement(self._sql.get("store_progress"), params)
        return bool(done.rows)

    def _read_steps(self, job_id: int) -> SqlOp[JobSteps]:
        done = yield Statement(self._sql.get("read_steps"), {"id": job_id})
        return steps_from_rows(done.rows)

    def _pause_queue(self, queue: str) -> SqlOp[bool]:
        params = {"now": self._now(), "queue": queue}
        done = yield Statement(self._sql.get("pause_queue"), params)
        return bool(done.rows)

    def _resume_queue(self, queue: str) -> SqlOp[bool]:
        """Resume `queue`; the same statement NOTIFYs its workers, which claim at once."""
        params = {"queue": queue, "channel": self.settings.channel}
        done = yield Statement(self._sql.get("resume_queue"), params)
        return bool(done.rows)

    def _paused_queues(self, queues: tuple[str, ...] | None) -> SqlOp[list[str]]:
        """Read whole: the table holds one row per paused queue, and a pause is rare."""
        done = yield Statement(self._sql.get("paused_queues"), {})
        return [row[0] for row in done.rows if queues is None or row[0] in queues]

    def _next_run_at(self, queues: tuple[str, ...] | None) -> SqlOp[float | None]:
        if queues is None:
            done = yield Statement(self._sql.get("next_run_at"), {})
        else:
            done = yield Statement(self._sql.get("next_run_at_queues"), {"queues": list(queues)})
        value: float | None = done.rows[0][0] if done.rows else None
        return value

    # -- schedules ---------------------------------------------------------------------
    def _fire_schedule(self, fire: ScheduleFire) -> SqlOp[ScheduleFired]:
        """One transaction: lock the schedule's row, compare, insert the jobs, store the fire.

        The row lock (schedule_lock.sql) makes racing fires of one schedule wait for each
        other; each then compares with the committed last tick, so one of them applies.
        """
        yield TRANSACTION
        done = yield Statement(
            self._sql.get("schedule_lock"), {"name": fire.name, "queue": fire.queue}
        )
        [(last_tick, paused)] = done.rows
        stored = ScheduleRecord(fire.name, fire.queue, last_tick, None, None, None, paused)
        if not cas_holds(stored, fire):
            return refused(last_tick, paused)
        entries = (yield from self._enqueue_in(jobs_of(fire.jobs))) if fire.jobs else []
        yield Statement(
            self._sql.get("schedule_fired"),
            {
                "name": fire.name,
                "queue": fire.queue,
                "last_tick": fire.advance_to,
                "last_job_id": entries[-1].id if entries else None,
                "last_job_tick": fire.jobs[-1].tick if fire.jobs else None,
                "now": self._now(),
            },
        )
        return ScheduleFired(True, tuple(entries), fire.advance_to, False)

    def _set_schedule_paused(
        self, name: str, queue: str, paused: bool, now: float
    ) -> SqlOp[ScheduleRecord]:
        params = {"name": name, "queue": queue, "paused": paused, "at": now}
        done = yield Statement(self._sql.get("schedule_paused"), params)
        return ScheduleRecord(*done.rows[0])

    def _list_schedules(self) -> SqlOp[list[ScheduleRecord]]:
        done = yield Statement(self._sql.get("schedule_list"), {})
        return [ScheduleRecord(*row) for row in done.rows]

    # -- limit states -----------------------------------------------------------------
    def _read_limits(self, names: tuple[str, ...]) -> SqlOp[LimitStates]:
        params = {"names": list(names), "now": self._now()}
        done = yield Statement(self._sql.get("limit_read"), params)
        states = {r[1]: LimitState(*r[1:]) for r in done.rows if r[1] is not None}
        return LimitStates(True, done.rows[0][0], states)

    def _swap_limits(self, swaps: tuple[LimitSwap, ...]) -> SqlOp[LimitStates]:
        """One statement, a call of swap_limits (migration 11): it takes an advisory lock per
        name, so racing swaps of a name, creations included, apply one at a time, then reads,
        compares and writes inside the server."""
        params = {
            "now": self._now(),
            "names": [s.name for s in swaps],
            "expected": [s.expected for s in swaps],
            "versions": [s.version for s in swaps],
            "values": [s.value for s in swaps],
            "ttls": [float(s.ttl) for s in swaps],
        }
        done = yield Statement(self._sql.get("limit_swap"), params)
        [(applied, now, *columns)] = done.rows
        states = {r[0]: LimitState(*r) for r in zip(*columns, strict=True)}
        return LimitStates(applied, now, states)

    def _list_limits(self, prefix: str) -> SqlOp[list[LimitState]]:
        done = yield Statement(self._sql.get("limit_list"), {"prefix": prefix, "now": self._now()})
        return [LimitState(*row) for row in done.rows]

    def _prune_limits(self, limit: int) -> SqlOp[int]:
        done = yield Statement(self._sql.get("limit_prune"), {"limit": limit, "now": self._now()})
        return done.rowcount

    # -- the history of finished attempts (migration 13) -------------------------------
    def _add_counts(self, counts: tuple[tuple[CountKey, int], ...]) -> SqlOp[None]:
        params = {
            "now": self._now(),
            "queues": [k.queue for k, _ in counts],
            "tasks": [k.task for k, _ in counts],
            "outcomes": [k.outcome for k, _ in counts],
            "ns": [n for _, n in counts],
        }
        yield Statement(self._sql.get("counts_add"), params)

    def _read_counts(self, since: float) -> SqlOp[CountHistory]:
        done = yield Statement(self._sql.get("counts_read"), {"now": self._now(), "since": since})
        buckets = tuple(
            CountBucket(r[1], CountKey(r[2], r[3], r[4]), r[5])
            for r in done.rows
            if r[1] is not None
        )
        return CountHistory(done.rows[0][0], buckets)

    def _prune_counts(self, keep: float, limit: int) -> SqlOp[int]:
        params = {"now": self._now(), "keep": keep, "limit": limit}
        done = yield Statement(self._sql.get("counts_prune"), params)
        return done.rowcount

    # -- the worker registry (migration 12) -------------------------------------------
    def _record_worker(self, beat: WorkerBeat) -> SqlOp[None]:
        params = {
            "now": self._now(),
            "id": beat.id,
            "info": info_text(beat.info),
            "ttl": float(beat.ttl),
            "stopped": beat.stopped,
        }
        yield Statement(self._sql.get("worker_record"), params)

    def _list_workers(self) -> SqlOp[WorkerRegistry]:
        done = yield Statement(self._sql.get("worker_list"), {"now": self._now()})
        workers = tuple(
            WorkerRecord(r[1], info_from(r[2]), *r[3:]) for r in done.rows if r[1] is not None
        )
        return WorkerRegistry(done.rows[0][0], workers)

    def _prune_workers(self, keep: float, limit: int) -> SqlOp[int]:
        params = {"now": self._now(), "keep": keep, "limit": limit}
        done = yield Statement(self._sql.get("worker_prune"), params)
        return done.rowcount


def _claimed_jobs(rows: Sequence[Sequence[Any]]) -> list[ClaimedJob]:
    """The claimed jobs of claim.sql's (or claim_capped.sql's) rows."""
    return [
        ClaimedJob(
            id=r[0],
            task=r[1],
            queue=r[2],
            payload=r[3],
            attempt=r[4],
            token=r[12],
            max_attempts=r[5],
            priority=r[6],
            enqueued_at=r[7],
            run_at=r[8],
            started_at=r[9],
            lease_expires_at=r[10],
            order_at=r[14],
            lost=r[11],
            snoozes=r[13],
            workflow_id=r[15],
            workflow_input=r[16],
        )
        for r in rows
    ]


def _past_window(age: float | None, job: NewJob) -> bool:
    """Whether the finished job holding `job`'s idempotency key (finished `age` seconds ago by
    the store's clock; None: not finished) is past `job`'s idempotency window."""
    window = job.idempotency_window
    return age is not None and window is not None and age >= window


def _workflow_from_rows(row: Sequence[Any], members: Sequence[Sequence[Any]]) -> Workflow:
    return Workflow(
        id=row[0],
        status=WorkflowStatus(row[1]),
        step=row[2],
        shape=shape_from_json(row[3]),
        on_failure=OnFailure(row[4]),
        created_at=row[5],
        finished_at=row[6],
        result=row[7],
        members=tuple(job_from_row(member) for member in members),
    )
