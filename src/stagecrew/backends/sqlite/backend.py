"""The SQLite engine (`sqlite:///path.db`): one machine, any number of processes, zero set-up.

Every query lives in a `.sql` file under `sql/`; this module only binds
parameters, runs them in the right transactions, and turns rows into records.
The one exception is a `JobFilter`: its optional terms are short fragments
appended to `list_jobs.sql`, `requeue.sql` and `purge.sql` by `_filter_sql`.

Operations and the driver. Each operation (`_enqueue`, `_claim`, ...) is one
generator (`ops.Op`) that yields a `Command` (`WRITE`, `READ`, `AUTOCOMMIT`,
`ROLLBACK`) and is sent this thread's connection; the driver (`_drive`) opens
the transaction the command names and ends it when the operation yields again
(commit, or undo for `ROLLBACK`), returns (commit) or raises (rollback). The
asynchronous driver runs the same operation on this backend's one store thread
(`ThreadDriven`). Input checks, empty calls and the mapping of failures to
`EnqueueError` and `BackendError` are the front layer's (`Backend`, base.py).

Concurrency model. SQLite has a single writer. Every write runs inside
`BEGIN IMMEDIATE`, which takes the write lock before reading anything, so a
claim's "read the first due jobs, mark them running" cannot interleave with
another process's claim: that is what makes `claim` atomic across processes.
Readers never block writers (WAL). A writer that finds the lock taken retries
for up to `busy_timeout_ms` (see `_begin_immediate`), then fails with a clear
error: `EnqueueError` from `enqueue`, `BackendError` from everything else.

Concurrency caps. A claim with `ClaimLimits` does its reading under that same write lock:
it counts the running jobs with a live lease per capped task, queue and key
(`claim_running.sql`), then claims as an uncapped claim does and keeps that claim when the caps
admit every job it took (the rule would take exactly these). Otherwise it undoes it (a
savepoint), reads due jobs in claim order a page at a time with the groups already full left
out (`claim_capped_candidates.sql`), applies `caps.select_within_caps`, and claims the chosen
ids with the usual statement. No claimer can take a slot in between. A claim without limits
runs the one statement it always ran.

Connections are per thread (a `sqlite3.Connection` must not be used by two
threads at once), and per process: a connection inherited through `fork` is
never touched by the child. A thread that finished leaves its connection
behind: the next thread that needs one takes it over, and any others are
closed, so a thread-per-request server holds one connection per live thread,
not one per thread it ever ran.

Waiting. SQLite cannot notify, but `PRAGMA data_version` on a connection changes when
any other connection commits, and reading it costs microseconds, no lock and no table
read. So `wait` (new work) and `wait_finished` (a job that may be final) poll it every
`poll_ms`, and this object's own commits wake them at once (`_committed`), including those
made through the waiter's own connection, which the pragma does not count.

Time is the process clock (`self.clock`): SQLite has no server, so
`capabilities.server_clock` is False and machines sharing a file through a
network file system would be wrong anyway (SQLite's locking does not hold
there).
"""

from __future__ import annotations

import asyncio
import enum
import functools
import itertools
import math
import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs

import orjson

from ... import transitions
from ...clock import Clock
from ...errors import BackendError, ConfigurationError
from ...job import (
    WAITING_STATES,
    AttemptError,
    ClaimedJob,
    EnqueuedJob,
    ErrorKind,
    Job,
    JobRef,
    JobState,
    NewJob,
)
from ..base import (
    Ack,
    AckKind,
    Capabilities,
    HeartbeatReply,
    JobFilter,
    QueueStats,
    RescueReport,
    Retention,
    ThreadDriven,
)
from ..caps import Candidate, ClaimLimits, Running, select_within_caps
from ..fairness import STALE_AFTER, fair_order, heads_wanted, keys_wanted
from ..filter_terms import filter_terms
from ..job_counts import CountBucket, CountHistory, CountKey, bucket_start
from ..limit_states import LimitState, LimitStates, LimitSwap, swap_holds
from ..ops import Op, run
from ..records import WORKER_LOST, decode_errors, job_from_row, salvage_claim
from ..schedules import (
    ScheduleFire,
    ScheduleFired,
    ScheduleRecord,
    cas_holds,
    jobs_of,
    refused,
)
from ..sql_files import read_migrations, read_statement
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
from .finish_signal import FinishSignal

T = TypeVar("T")

URL_PREFIX = "sqlite:///"
DEFAULT_BUSY_TIMEOUT_MS = 5000
DEFAULT_POLL_MS = 5.0
MIN_SQLITE_VERSION = (3, 35, 0)  # UPDATE ... RETURNING
MAX_UNION_QUEUES = 64
"""Up to this many queues, a claim reads each queue's index in order and merges the heads;
past it, one scan over all of them (SQLite caps the terms of a compound SELECT)."""


@functools.cache
def _sql(name: str) -> str:
    return read_statement("stagecrew.backends.sqlite", name)


@functools.cache
def _migrations() -> tuple[tuple[int, str, str], ...]:
    return read_migrations("stagecrew.backends.sqlite", "SQLite")


def schema_version() -> int:
    """The `PRAGMA user_version` this version of stagecrew expects."""
    return len(_migrations())


def _statements(script: str) -> Iterator[str]:
    """Split a script into complete statements (`executescript` would commit our transaction)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending
            pending = ""
    if pending.strip() and not all(
        not ln.strip() or ln.lstrip().startswith("--") for ln in pending.splitlines()
    ):
        raise RuntimeError(f"incomplete SQL statement at the end of a migration: {pending!r}")


def _body(sql: str) -> str:
    """A query without its header comment, to splice into another statement."""
    return "".join(line for line in sql.splitlines(keepends=True) if not line.startswith("--"))


_LOST_JOBS = {"rescue": "lease_expires_at < :now", "release_worker": "lease_owner = :worker"}
"""Which running jobs each operation settles as lost (see settle_lost.sql)."""


_UNREADABLE_ERRORS = AttemptError(
    attempt=0,
    at=0.0,
    kind=ErrorKind.ERROR,
    type="CorruptErrorRecord",
    message="the stored errors of this job were not a JSON array",
)
"""The entry a write puts first in a job's errors when what is stored there is not a JSON
array; the statement sets its traceback to the stored text (see stored_errors.sql)."""


@functools.cache
def _record_params() -> dict[str, str]:
    """The fixed fields of the error records ack.sql and settle_lost.sql write, as named
    parameters: their text is decided here and in `records.WORKER_LOST`, never in SQL."""
    return {
        "unreadable_errors": orjson.dumps(_UNREADABLE_ERRORS.to_json()).decode(),
        **WORKER_LOST.params(),
    }


def _appending_errors(sql: str) -> str:
    """`sql` with its `{stored_errors}` in place: the job's errors as an array to append to."""
    return sql.replace("{stored_errors}", _body(_sql("stored_errors")).strip())


@functools.cache
def _ack_sql() -> str:
    return _appending_errors(_sql("ack"))


@functools.cache
def _settle_lost_sql(operation: str) -> str:
    return _appending_errors(_sql("settle_lost")).replace("{lost}", _LOST_JOBS[operation])


@functools.cache
def _claim_sql(queue_count: int) -> str:
    """The claim statement for `queue_count` queues, named :q0, :q1, ..."""
    if queue_count > MAX_UNION_QUEUES:
        candidates = _body(_sql("claim_candidates_many"))
    else:
        one = _body(_sql("claim_candidates"))
        candidates = "\nUNION ALL\n".join(
            one.replace(":queue", f":q{i}") for i in range(queue_count)
        )
    return _sql("claim").replace("{candidates}", candidates)


@functools.cache
def _claim_keyed_sql(queue_count: int) -> str:
    """`_claim_sql` that also returns each job's concurrency key, last: what a capped claim
    checks the caps against (`_claim_if_all_admitted`)."""
    sql = _claim_sql(queue_count).rstrip()
    if not sql.endswith("workflow_input"):  # the key must land at index 16
        raise AssertionError("claim.sql's RETURNING no longer ends with workflow_input")
    return f"{sql}, concurrency_key\n"


@functools.cache
def _claim_chosen_sql() -> str:
    """The claim statement for the jobs a capped claim chose (:ids), all of them (:limit)."""
    return _sql("claim").replace("{candidates}", _body(_sql("claim_chosen")))


@functools.cache
def _capped_candidates_sql(queue_count: int) -> str:
    """A capped claim's page of candidates for `queue_count` queues, named :q0, :q1, ..."""
    if queue_count > MAX_UNION_QUEUES:
        candidates = _body(_sql("claim_capped_candidates_many"))
    else:
        one = _body(_sql("claim_capped_candidates"))
        candidates = "\nUNION ALL\n".join(
            one.replace(":queue", f":q{i}") for i in range(queue_count)
        )
    return _sql("claim_capped").replace("{candidates}", candidates)


def _queue_params(queues: Sequence[str]) -> dict[str, str]:
    """The queues of a claim as `_claim_sql` and `_capped_candidates_sql` name them."""
    if len(queues) > MAX_UNION_QUEUES:
        return {"queues": _json_list(queues)}
    return {f"q{i}": q for i, q in enumerate(queues)}


CAPPED_PAGE = 32
"""A capped claim reads its candidates in pages of at least this many (or twice its limit):
the jobs the caps turn away in Python cost a longer read, never a wrong answer."""

_FIRST_PAGE = {"priority": -(2**63), "order_at": -math.inf, "id": 0}
"""The keyset before every job: the first page of a capped claim reads from the start."""


def _running(conn: sqlite3.Connection, limits: ClaimLimits, now: float) -> Running:
    """How many jobs hold a slot of each cap in `limits` now (see claim_running.sql)."""
    running = Running.empty()
    counters = {"task": running.tasks, "queue": running.queues, "key": running.keys}
    params = {
        "now": now,
        "tasks": _json_list(limits.tasks),
        "queues": _json_list(limits.queues),
        "keyed": 1 if limits.keys else 0,
    }
    for what, name, count in _read_rows(conn, _sql("claim_running"), params):
        counters[what][name] += count
    return running


def _within_caps(
    conn: sqlite3.Connection,
    queues: tuple[str, ...],
    limits: ClaimLimits,
    limit: int,
    now: float,
    running: Running | None = None,
) -> list[int]:
    """The ids of the first `limit` due jobs of `queues`, in claim order, that the caps admit.

    Runs under the claim's write lock, so what it counts and reads holds until the claim's
    UPDATE. Candidates come in pages (keyset on the claim order), each read leaving out the
    tasks, queues and keys full by then, the ones this claim took included.
    """
    running = _running(conn, limits, now) if running is None else running.copy()
    chosen: list[int] = []
    page = max(CAPPED_PAGE, 2 * limit)
    after: dict[str, Any] = _FIRST_PAGE
    while len(chosen) < limit:
        full = running.full(limits)
        wanted = [q for q in queues if q not in full.queues]
        if not wanted:
            break
        params = {
            "now": now,
            "page": page,
            "full_tasks": _json_list(full.tasks),
            "full_keys": orjson.dumps(full.keys).decode(),
            **after,
            **_queue_params(wanted),
        }
        rows = _read_rows(conn, _capped_candidates_sql(len(wanted)), params)
        candidates = [Candidate(r[0], r[1], r[2], r[3]) for r in rows]
        chosen += select_within_caps(candidates, running, limits, limit - len(chosen))
        if len(rows) < page:
            break
        last = rows[-1]
        after = {"priority": last[4], "order_at": last[5], "id": last[0]}
    return chosen


def _claim_if_all_admitted(
    conn: sqlite3.Connection,
    queues: tuple[str, ...],
    limits: ClaimLimits,
    running: Running,
    params: dict[str, Any],
) -> list[Any] | None:
    """A capped claim's usual case, one statement after the count: the claim rows, or None.

    Under the claim's write lock, with the slots held counted (`running`, left as it is):
    claim the first :limit due jobs as an uncapped claim does. When the caps admit every one
    of them in claim order, the rule (`caps.select_within_caps`) takes exactly these: keep the
    claim. Otherwise undo it (a savepoint) and return None: `_choose` reads and picks the
    candidates the caps admit. A damaged row is kept as claimed, for the caller's lenient read
    again.
    """
    conn.execute("SAVEPOINT capped_claim")
    kept = False
    try:
        rows = conn.execute(
            _claim_keyed_sql(len(queues)), {**params, **_queue_params(queues)}
        ).fetchall()
        kept = not all(r[12] for r in rows) or _all_admitted(rows, running.copy(), limits)
    finally:
        if not kept:
            conn.execute("ROLLBACK TO capped_claim")
        conn.execute("RELEASE capped_claim")
    return rows if kept else None


def _all_admitted(rows: list[Any], running: Running, limits: ClaimLimits) -> bool:
    """Whether the caps admit every job `_claim_keyed_sql` claimed, taken in claim order."""
    rows.sort(key=lambda r: (r[6], r[13], r[0]))
    taken = [Candidate(r[0], r[1], r[2], r[16]) for r in rows]
    return len(select_within_caps(taken, running, limits, len(taken))) == len(taken)


def _choose(
    conn: sqlite3.Connection,
    queues: tuple[str, ...],
    limits: ClaimLimits,
    limit: int,
    params: dict[str, Any],
    running: Running | None = None,
) -> int:
    """Bind the jobs a capped claim takes as `_claim_chosen_sql`'s :ids; how many.

    `running` is the count made under this same write lock, if one was (else it is made)."""
    ids = _within_caps(conn, queues, limits, limit, params["now"], running)
    params["ids"] = _json_list(ids)
    params["limit"] = len(ids)
    return len(ids)


_JOB_STATE = {state.value: state for state in JobState}


def _fair_order(conn: sqlite3.Connection, jobs: Sequence[NewJob], now: float) -> list[float | None]:
    """Each job's order_at (None: its run_at); records the keys' new last order_at.

    Runs inside the enqueue's write transaction, so no other enqueue reads the same head.
    """
    wanted = heads_wanted(jobs)
    if not wanted:
        return [None] * len(jobs)
    heads: dict[tuple[str, int], float | None] = {}
    for queue, priority in wanted:
        row = conn.execute(
            _sql("fair_head"), {"queue": queue, "priority": priority, "now": now}
        ).fetchone()
        heads[(queue, priority)] = None if row is None else float(row[0])
    lasts: dict[tuple[str, str], float | None] = {}
    for queue, key in keys_wanted(jobs):
        row = conn.execute(_sql("fair_last"), {"queue": queue, "key": key}).fetchone()
        lasts[(queue, key)] = None if row is None else float(row[0])
    fair = fair_order(jobs, now, heads, lasts)
    conn.executemany(
        _sql("fair_record"),
        [{"queue": q, "key": k, "last": last} for (q, k), last in fair.lasts.items()],
    )
    return fair.order_ats


def _real(value: Any) -> Any:
    """A REAL column's value as a float (NaN if the stored value is not a number).

    SQLite stores integral REALs as integers and `RETURNING` hands them back
    without converting (a plain SELECT does convert), so 1700000000.0 would
    otherwise come back as the int 1700000000.
    """
    if value is None or type(value) is float:
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _lenient_text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _read_rows(conn: sqlite3.Connection, sql: str, params: dict[str, Any]) -> list[Any]:
    """Rows of a read, even where a TEXT value is not valid UTF-8 (shown with U+FFFD).

    Inspection must work on a damaged job; only a failed decode pays for a second read.
    """
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError as exc:
        if not _is_decode_error(exc):
            raise
    conn.text_factory = _lenient_text
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.text_factory = str


def _is_decode_error(exc: sqlite3.OperationalError) -> bool:
    """Python could not decode a TEXT value (SQLite stores whatever bytes it is given)."""
    return str(exc).startswith("Could not decode to UTF-8")


def _salvage_claims(rows: Sequence[Any], now: float, expires: float) -> list[ClaimedJob]:
    """Claimed rows read with text as bytes, some damaged: `ClaimedJob.defect` says which."""
    return [
        salvage_claim(
            job_id=r[0],
            attempt=r[4],
            token=r[10],
            queue=r[2].decode() if isinstance(r[2], bytes) else r[2],
            task=r[1],
            payload=r[3],
            max_attempts=r[5],
            priority=r[6],
            enqueued_at=r[7],
            run_at=r[8],
            started_at=now,
            lease_expires_at=expires,
            lost=r[9],
            snoozes=r[11],
        )
        for r in rows
    ]


def _json_list(values: Iterable[str | int]) -> str:
    return orjson.dumps(list(values)).decode()


def _filter_sql(job_filter: JobFilter) -> tuple[list[str], dict[str, Any]]:
    """The WHERE terms and parameters of a JobFilter (its `limit` is the caller's business).

    Lists are bound as one JSON array each, so the statement text depends only on
    which fields are set and stays in the statement cache.
    """
    sql: list[str] = []
    params: dict[str, Any] = {}
    for term in filter_terms(job_filter):
        if term.values is not None:
            sql.append(f"{term.column} IN (SELECT value FROM json_each(:{term.param}))")
            params[term.param] = _json_list(term.values)
        else:
            sql.append(f"{term.column} < :{term.param}")
            params[term.param] = term.bound
    return sql, params


@dataclass(slots=True, eq=False)
class _Connection:
    """One thread's connection, and what that thread's `wait` has already seen."""

    conn: sqlite3.Connection
    pid: int
    generation: int
    seen_data_version: int
    seen_local_writes: int
    owner: threading.Thread
    """The thread using it; once that thread has finished, another may take it over."""


def _data_version(conn: sqlite3.Connection) -> int:
    """A number that changes when a connection other than `conn` commits to the file."""
    version: int = conn.execute("PRAGMA data_version").fetchone()[0]
    return version


def _is_busy(exc: sqlite3.Error) -> bool:
    return exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _begin_immediate(conn: sqlite3.Connection, busy_timeout_ms: int) -> None:
    """Take the write lock, retrying every millisecond or so until `busy_timeout_ms`.

    SQLite's own busy handler sleeps 1, 2, 5, 10 ... 100 ms between tries, so
    a process that commits in a tight loop (a draining worker) can keep the
    lock from a waiting producer for seconds. Short, jittered retries find the
    gaps between its transactions. The connection's handler is switched off
    only for this statement; reads keep it.
    """
    _execute_until_free(conn, "BEGIN IMMEDIATE", busy_timeout_ms)


def _switch_to_wal(conn: sqlite3.Connection, busy_timeout_ms: int) -> None:
    """`PRAGMA journal_mode = WAL`, waiting for other connections as a write would.

    On a file still in rollback-journal mode the switch needs the exclusive lock; when
    another connection writes, or switches too, SQLite reports the lock at once (it would
    deadlock) instead of calling the busy handler, so connections racing to open a new
    file retry here. A file already in WAL mode answers at once.
    """
    _execute_until_free(conn, "PRAGMA journal_mode = WAL", busy_timeout_ms)


def _execute_until_free(conn: sqlite3.Connection, statement: str, busy_timeout_ms: int) -> None:
    """Run `statement`, retrying it with short jittered pauses while the file is locked."""
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        deadline = None
        tries = 0
        while True:
            try:
                conn.execute(statement)
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
                now = time.monotonic()
                if deadline is None:
                    deadline = now + busy_timeout_ms / 1000.0
                if now >= deadline:
                    raise
                tries = min(tries + 1, 5)  # 2**tries past ~1000 tries is too big for a float
                pause = random.uniform(0.0, min(0.002, 0.0001 * 2**tries))
                time.sleep(min(pause, deadline - now))
    finally:
        conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")


class Command(enum.Enum):
    """What an operation yields to the driver, which sends back this thread's connection.

    Each command first ends the transaction the operation holds: it commits it, except
    `ROLLBACK`, which undoes it. What the operation returns commits; what it raises rolls back.
    """

    WRITE = "write"
    """`BEGIN IMMEDIATE`: the write lock before anything is read (see `_begin_immediate`)."""
    READ = "read"
    """A deferred transaction: several reads from one snapshot, without the write lock."""
    AUTOCOMMIT = "autocommit"
    """No transaction: each statement commits on its own."""
    ROLLBACK = "rollback"
    """Undo what the operation wrote so far, and hold no transaction."""


WRITE = Command.WRITE
READ = Command.READ
AUTOCOMMIT = Command.AUTOCOMMIT
ROLLBACK = Command.ROLLBACK


class _Transaction:
    """The driver's side of one operation on one connection: the transaction it holds.

    A write takes the write lock up front (IMMEDIATE): a deferred transaction that reads
    and then writes can fail with SQLITE_BUSY without waiting, and two claims could read
    the same jobs before either writes.
    """

    __slots__ = ("busy_timeout_ms", "conn", "open")

    def __init__(self, conn: sqlite3.Connection, busy_timeout_ms: int) -> None:
        self.conn = conn
        self.busy_timeout_ms = busy_timeout_ms
        self.open = False

    def __call__(self, command: Command) -> sqlite3.Connection:
        if type(command) is not Command:
            raise TypeError(f"a SQLite operation yields a Command, not {command!r}")
        if command is ROLLBACK:
            self.rollback()
        else:
            self.commit()
        if command is WRITE:
            _begin_immediate(self.conn, self.busy_timeout_ms)
            self.open = True
        elif command is READ:
            self.conn.execute("BEGIN")
            self.open = True
        return self.conn

    def commit(self) -> None:
        if self.open:
            self.conn.execute("COMMIT")
            self.open = False

    def rollback(self) -> None:
        if self.open and self.conn.in_transaction:
            with suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
        self.open = False


def _connected() -> Op[None]:
    """An operation without statements: driving it opens this thread's connection."""
    yield AUTOCOMMIT


def database_path(url: str) -> Path:
    """The absolute path of the database file a SQLite store URL names."""
    return Path(_parse_url(url)[0]).resolve()


def _parse_url(url: str) -> tuple[str, int, float]:
    if not url.startswith(URL_PREFIX):
        raise ConfigurationError(
            f"not a SQLite store URL: {url!r}; use sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db"
        )
    path, _, query = url[len(URL_PREFIX) :].partition("?")
    if not path or path == ":memory:" or path.startswith("file:"):
        raise ConfigurationError(
            f"{url!r} does not name a database file; an in-memory SQLite database is private "
            "to one connection and cannot be shared by workers: use memory:// for tests"
        )
    busy_timeout_ms = DEFAULT_BUSY_TIMEOUT_MS
    poll_ms = DEFAULT_POLL_MS
    for name, values in parse_qs(query, keep_blank_values=True, strict_parsing=False).items():
        value = values[-1]
        try:
            if name == "busy_timeout_ms":
                busy_timeout_ms = int(value)
            elif name == "poll_ms":
                poll_ms = float(value)
            else:
                raise ConfigurationError(
                    f"unknown option {name!r} in {url!r}; SQLite URLs accept "
                    "busy_timeout_ms and poll_ms"
                )
        except ValueError:
            raise ConfigurationError(
                f"option {name}={value!r} in {url!r} is not a number"
            ) from None
    if busy_timeout_ms < 0 or not 0 < poll_ms < math.inf:  # false for NaN
        raise ConfigurationError(
            f"busy_timeout_ms must be >= 0 and poll_ms a finite number > 0 in {url!r}"
        )
    return os.path.abspath(path), busy_timeout_ms, poll_ms


class SQLiteBackend(ThreadDriven):
    """Jobs in one SQLite file, shared by every process on this machine.

    The constructor does not touch the file. The first connection a process
    opens creates or upgrades the schema when needed (a cheap `user_version`
    read), so SQLite needs no set-up command; `migrate()` does the same on
    request. Relative paths are resolved against the working directory at
    construction, so a later `chdir` does not move the store.
    """

    capabilities = Capabilities(cross_process=True, server_clock=False, instant_wakeup=False)

    def __init__(self, url: str, clock: Clock | None = None) -> None:
        super().__init__(clock)
        if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
            raise ConfigurationError(
                f"the SQLite engine needs SQLite {'.'.join(map(str, MIN_SQLITE_VERSION))} or "
                f"newer; this Python is linked against {sqlite3.sqlite_version}"
            )
        self.url = url
        self.path, self.busy_timeout_ms, poll_ms = _parse_url(url)
        self.poll_interval = poll_ms / 1000.0
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[_Connection] = []
        """Every connection this object opened, inherited ones too (never closed by a child)."""
        self._generation = 0
        self._schema_ready_pid: int | None = None
        self._applied: list[str] = []
        """Migrations a first connection applied, until `migrate` reports them."""
        self._local_writes = 0
        """Commits by this object that may create work; `wait` cannot see those through
        `data_version` when they came through the waiting thread's own connection."""
        self._finishes = FinishSignal()
        """Commits by this object that may have made a job final or deleted one, for
        `wait_finished` (see finish_signal.py)."""

    # -- connections -------------------------------------------------------
    def _connection(self) -> _Connection:
        local: _Connection | None = getattr(self._local, "connection", None)
        if local is not None and local.generation == self._generation and local.pid == os.getpid():
            return local
        local = self._take_over() or self._register(self._open())
        local.seen_data_version = _data_version(local.conn)
        local.seen_local_writes = 0
        self._local.connection = local
        return local

    def _take_over(self) -> _Connection | None:
        """A connection left by a finished thread, now this thread's; the other such are closed.

        Runs once per thread (when it first needs a connection), never on the hot path, so
        a thread that enqueues again and again pays nothing for it. A finished thread never
        touches its connection again (`is_alive` turns false only once it has stopped), so
        handing it to this thread is safe.
        """
        pid, me = os.getpid(), threading.current_thread()
        with self._lock:
            left = [c for c in self._connections if c.pid == pid and not c.owner.is_alive()]
            taken = next((c for c in left if not c.conn.in_transaction), None)
            closing = [c for c in left if c is not taken]
            if closing:
                self._connections = [c for c in self._connections if c not in closing]
            if taken is not None:
                taken.owner = me
        for c in closing:
            with suppress(sqlite3.Error):
                c.conn.close()
        return taken

    def _register(self, conn: sqlite3.Connection) -> _Connection:
        local = _Connection(
            conn=conn,
            pid=os.getpid(),
            generation=self._generation,
            seen_data_version=0,
            seen_local_writes=0,
            owner=threading.current_thread(),
        )
        with self._lock:
            if local.generation == self._generation:
                self._connections.append(local)
                return local
        conn.close()  # close() ran meanwhile: open again under the new generation
        return self._register(self._open())

    def _conn(self) -> sqlite3.Connection:
        return self._connection().conn

    def _open(self) -> sqlite3.Connection:
        # check_same_thread=False only so close() can close every thread's connection;
        # each connection is otherwise used by the thread that opened it.
        conn = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout_ms / 1000.0,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=256,
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            _switch_to_wal(conn, self.busy_timeout_ms)
            conn.execute("PRAGMA synchronous = NORMAL")
            if self._schema_ready_pid != os.getpid():
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version != schema_version():
                    self._applied += self._run(conn, self._migration())
                self._schema_ready_pid = os.getpid()
        except BaseException:
            conn.close()
            raise
        return conn

    def _wrote_work(self) -> None:
        with self._lock:
            self._local_writes += 1

    def _committed(self, *, work: bool = False, finished: bool = False) -> Op[None]:
        """Commit what the operation wrote, then wake this object's waiters it concerns:
        `wait` if it may have made work due, `wait_finished` if it may have made a job final
        or deleted one. Never before the commit: a woken waiter looks at once."""
        if not (work or finished):
            return
        yield AUTOCOMMIT
        if work:
            self._wrote_work()
        if finished:
            self._finishes.notify()

    # -- the drivers ---------------------------------------------------------
    def _drive(self, op: Op[T]) -> T:
        """Run `op` on this thread's connection (opened, or taken over, on first use)."""
        return self._run(self._conn(), op)

    def _run(self, conn: sqlite3.Connection, op: Op[T]) -> T:
        transaction = _Transaction(conn, self.busy_timeout_ms)
        try:
            result = run(op, transaction)
            transaction.commit()
            return result
        except BaseException:
            transaction.rollback()
            raise
        finally:
            op.close()  # an operation stopped at a command still runs its `finally`

    _store_errors = (sqlite3.Error,)

    def _describe_failure(self, operation: str, exc: BaseException) -> str:
        if operation == "enqueue":
            return (
                f"could not enqueue jobs into the SQLite store at {self.path}: {exc}; "
                f"nothing was written. {self._hint(exc)}"
            )
        return f"{operation} failed on the SQLite store at {self.path}: {exc}"

    def _hint(self, exc: BaseException) -> str:
        text = str(exc).lower()
        if "locked" in text or "busy" in text:
            return (
                f"Another connection held the write lock for longer than busy_timeout_ms="
                f"{self.busy_timeout_ms}; retry, or raise ?busy_timeout_ms= in the URL."
            )
        if "unable to open" in text or "readonly" in text or "read-only" in text:
            return "Check that the path exists and this process may write the file and its folder."
        return "Check the disk and the file."

    # -- life cycle --------------------------------------------------------
    def migrate(self) -> list[str]:
        applied = self._call("migrate", self._migration())
        self._schema_ready_pid = os.getpid()
        applied, self._applied = [*self._applied, *applied], []
        return applied

    def _migration(self) -> Op[list[str]]:
        """Apply the missing migrations in one write transaction.

        Several processes may get here at once; the write lock serialises them
        and the version is read again under it, so each migration runs once.
        """
        target = schema_version()
        conn: sqlite3.Connection = yield WRITE
        current = conn.execute("PRAGMA user_version").fetchone()[0]
        if current > target:
            raise BackendError(
                f"the SQLite store at {self.path} has schema version {current}, newer than "
                f"this stagecrew knows ({target}); upgrade stagecrew on this machine"
            )
        applied = []
        for version, name, script in _migrations():
            if version <= current:
                continue
            for statement in _statements(script):
                conn.execute(statement)
            applied.append(name)
        conn.execute(f"PRAGMA user_version = {target}")
        return applied

    def prepare(self) -> None:
        """Nothing to do up front: each process's first connection creates or upgrades the schema.

        Opening the file here would make an unreachable store fail inside
        `App.backend` with a generic error; lazily, `enqueue` reports it as the
        `EnqueueError` a producer expects, and other operations as `BackendError`.
        """

    def preflight(self) -> list[str]:
        """Open the database (creating or upgrading its schema), so that a worker that cannot
        reports it when it starts, and tries again, instead of failing every claim."""
        self._call("preflight", _connected())
        return []

    def close(self) -> None:
        super().close()
        pid = os.getpid()
        with self._lock:
            self._generation += 1
            connections, self._connections = self._connections, []
        for local in connections:
            if local.pid == pid:  # never close a connection inherited through fork
                with suppress(sqlite3.Error):
                    local.conn.close()

    # -- producer ----------------------------------------------------------
    def _enqueue(self, jobs: Sequence[NewJob]) -> Op[list[EnqueuedJob]]:
        """Insert the batch in one transaction; ids of a batch are consecutive.

        Which keys are stored already is read first, under the write lock, so the
        inserts can run as one `executemany`: each row's id is then the previous one
        plus one (AUTOINCREMENT with no other writer), which saves a round trip per row.
        """
        conn: sqlite3.Connection = yield WRITE
        entries, wrote = self._insert_jobs(conn, jobs, self.clock.now())
        yield from self._committed(work=wrote)
        return entries

    def _insert_jobs(
        self, conn: sqlite3.Connection, jobs: Sequence[NewJob], now: float
    ) -> tuple[list[EnqueuedJob], bool]:
        """`_enqueue`'s statements, in the caller's write transaction; True if any row went in."""
        taken: list[int | None] | None = None  # per job, the job it duplicates (stored: > 0)
        unique = [job.unique_key for job in jobs if job.unique_key is not None]
        fresh = jobs
        if unique or any(job.idempotency_key is not None for job in jobs):
            stored = _stored_keys(conn, jobs, now)
            holders: dict[str, int] = {}
            if unique:
                holders = dict(conn.execute(_sql("enqueue_find_unique"), (_json_list(unique),)))
            taken = _taken(jobs, stored, holders)
            fresh = [job for job, held in zip(jobs, taken, strict=True) if held is None]
        order_ats = _fair_order(conn, fresh, now)
        rows: list[tuple[Any, ...]] = []
        for job, order_at in zip(fresh, order_ats, strict=True):
            run_at = now + job.delay if job.run_at is None else job.run_at
            row: tuple[Any, ...] = (
                job.task,
                job.queue,
                transitions.initial_state(run_at, now).value,
                job.payload,
                job.priority,
                run_at,
                job.max_attempts,
                now,
                job.idempotency_key,
                run_at if order_at is None else order_at,
                job.fairness_key,
                job.concurrency_key,
            )
            if unique:
                row += (job.unique_key, states_text(job.unique_states) or None)
            rows.append(row)
        statement = "enqueue_insert_unique" if unique else "enqueue_insert"
        new_ids = itertools.count(self._insert(conn, rows, statement) if rows else 0)
        if taken is None:
            return [EnqueuedJob(next(new_ids), created=True) for _ in jobs], bool(rows)
        entries: list[EnqueuedJob] = []
        for held in taken:
            if held is None:
                entries.append(EnqueuedJob(next(new_ids), created=True))
            elif held > 0:
                entries.append(EnqueuedJob(held, created=False))
            else:  # -n: the n-th new job of this batch (below)
                entries.append(EnqueuedJob(entries[-held - 1].id, created=False))
        return entries, bool(rows)

    def _insert(self, conn: sqlite3.Connection, rows: list[tuple[Any, ...]], statement: str) -> int:
        """Insert `rows` with `statement` and return the first id (the others follow it)."""
        try:
            if len(rows) == 1:
                last = conn.execute(_sql(statement), rows[0]).lastrowid
            else:
                before = conn.total_changes
                conn.executemany(_sql(statement), rows)
                last = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
                if conn.total_changes - before != len(rows):
                    raise sqlite3.DatabaseError("the batch insert did not insert every row")
        except OverflowError as exc:  # an integer SQLite cannot store: the store refuses it
            raise sqlite3.DataError(str(exc)) from exc
        assert last is not None
        return int(last) - len(rows) + 1

    # -- worker ------------------------------------------------------------
    def _claim(
        self,
        queues: tuple[str, ...],
        worker: str,
        limit: int,
        lease_seconds: float,
        limits: ClaimLimits | None = None,
    ) -> Op[list[ClaimedJob]]:
        """Claim in one write transaction; with `limits`, within the caps.

        Without limits it is one statement. With them, the caps are counted under the same
        write lock as the claim, so no other claimer takes a slot in between; the claim is
        the uncapped one when the caps admit all it took (`_claim_if_all_admitted`), else the
        jobs `_within_caps` chose.
        """
        now = self.clock.now()
        expires = now + lease_seconds
        params: dict[str, Any] = {
            "worker": worker,
            "now": now,
            "lease_expires_at": expires,
            "limit": limit,
        }
        if limits is None:
            params.update(_queue_params(queues))
            sql = _claim_sql(len(queues))
        else:
            sql = _claim_chosen_sql()
        conn: sqlite3.Connection = yield WRITE
        try:
            if limits is None:
                rows = conn.execute(sql, params).fetchall()
            else:
                running = _running(conn, limits, now)
                kept = _claim_if_all_admitted(conn, queues, limits, running, params)
                if kept is not None:
                    rows = kept
                elif _choose(conn, queues, limits, limit, params, running):
                    rows = conn.execute(sql, params).fetchall()
                else:
                    return []
        except sqlite3.OperationalError as exc:
            if not _is_decode_error(exc):
                raise
        else:
            if all(r[12] for r in rows):
                return [
                    ClaimedJob(
                        id=r[0],
                        task=r[1],
                        queue=r[2],
                        payload=r[3],
                        attempt=r[4],
                        token=r[10],
                        max_attempts=r[5],
                        priority=r[6],
                        enqueued_at=_real(r[7]),
                        run_at=_real(r[8]),
                        started_at=now,
                        lease_expires_at=expires,
                        order_at=_real(r[13]),
                        lost=r[9],
                        snoozes=r[11],
                        workflow_id=r[14],
                        workflow_input=r[15],
                    )
                    for r in rows
                ]
        # A damaged row: undo this claim and claim again, reading text as bytes, so that
        # every row can be read.
        yield ROLLBACK
        conn = yield WRITE
        if limits is not None and not _choose(conn, queues, limits, limit, params):
            return []  # under this new lock, the caps may have filled meanwhile
        conn.text_factory = bytes
        try:
            rows = conn.execute(sql, params).fetchall()
        finally:
            conn.text_factory = str
        return _salvage_claims(rows, now, expires)

    def _heartbeat(
        self, worker: str, refs: tuple[JobRef, ...], lease_seconds: float
    ) -> Op[HeartbeatReply]:
        params: dict[str, Any] = {
            "worker": worker,
            "lease_expires_at": self.clock.now() + lease_seconds,
        }
        lost: set[int] = set()
        cancel: set[int] = set()
        sql = _sql("heartbeat")
        conn: sqlite3.Connection = yield WRITE
        for ref in refs:
            params["id"] = ref.id
            params["token"] = ref.token
            row = conn.execute(sql, params).fetchone()
            if row is None:
                lost.add(ref.id)
            elif row[0]:
                cancel.add(ref.id)
        return HeartbeatReply(frozenset(lost), frozenset(cancel))

    def _ack(self, acks: Sequence[Ack]) -> Op[list[bool]]:
        """Apply the acks in order, in one transaction.

        Plain completions, the bulk of every batch, go through one statement
        (`ack_complete_many`) when no job appears twice in the batch: the acks
        then touch distinct rows, so applying them out of order changes nothing.
        """
        now = self.clock.now()
        bulk = [
            i
            for i, ack in enumerate(acks)
            if ack.kind is AckKind.COMPLETE
            and ack.error is None
            and (ack.result is None or "\x00" not in ack.result)  # JSON text would cut at NUL
        ]
        if len(bulk) < 2 or len({ack.ref.id for ack in acks}) != len(acks):
            bulk = []
        applied = [False] * len(acks)
        workflows: set[str] = set()
        conn: sqlite3.Connection = yield WRITE
        if bulk:
            done = {
                row[0]: row[1]
                for row in conn.execute(
                    _sql("ack_complete_many"),
                    {
                        "now": now,
                        "acks": orjson.dumps(
                            [(acks[i].ref.id, acks[i].ref.token, acks[i].result) for i in bulk]
                        ).decode(),
                    },
                )
            }
            for i in bulk:
                applied[i] = acks[i].ref.id in done
            workflows.update(w for w in done.values() if w is not None)
        for i in sorted(set(range(len(acks))) - set(bulk)):
            applied[i], workflow_id = self._ack_one(conn, acks[i], now)
            if workflow_id is not None:
                workflows.add(workflow_id)
        released = False
        for workflow_id in sorted(workflows):  # the fan-in, in the ack's write transaction
            released = self._fan_in(conn, workflow_id, now) or released
        # Any applied outcome may end the job: a retry or hand-back with a pending cancel
        # request makes it cancelled (see ack.sql).
        yield from self._committed(
            work=released or any(ack.target in WAITING_STATES for ack in acks),
            finished=any(applied),
        )
        return applied

    def _ack_one(self, conn: sqlite3.Connection, ack: Ack, now: float) -> tuple[bool, str | None]:
        """Apply one ack; whether it applied, and the job's workflow id (None: no member)."""
        target = ack.target
        run_in = ack.run_in
        error = None if ack.error is None else orjson.dumps(ack.error.to_json()).decode()
        cursor = conn.execute(
            _ack_sql(),
            {
                "id": ack.ref.id,
                "token": ack.ref.token,
                "state": target.value,
                "uncounted": 1 if ack.gives_attempt_back else 0,
                "snoozed": 1 if ack.kind is AckKind.SNOOZE else 0,
                "run_at": None if run_in is None else now + run_in,
                "finished_at": now if target.is_final else None,
                "now": now,
                "result": ack.result,
                "error": error,
                **_record_params(),
            },
        )
        row = cursor.fetchone()
        return (False, None) if row is None else (True, row[0])

    def _rescue(self, max_lost: int) -> Op[RescueReport]:
        return self._settle_lost("rescue", {"max_lost": max_lost})

    def _release_worker(self, worker: str, max_lost: int) -> Op[RescueReport]:
        return self._settle_lost("release_worker", {"worker": worker, "max_lost": max_lost})

    def _settle_lost(self, operation: str, params: dict[str, Any]) -> Op[RescueReport]:
        """Record a lost worker on each job `operation` (rescue, release_worker) settles."""
        now = self.clock.now()
        conn: sqlite3.Connection = yield WRITE
        rows = conn.execute(
            _settle_lost_sql(operation),
            {"now": now, "now_json": orjson.dumps(now).decode(), **_record_params(), **params},
        ).fetchall()
        states = [row[0] for row in rows]
        released = False
        for workflow_id in sorted({w for state, w in rows if w and state != "available"}):
            released = self._fan_in(conn, workflow_id, now) or released
        report = RescueReport(
            requeued=states.count(JobState.AVAILABLE.value),
            dead=states.count(JobState.DEAD.value),
            cancelled=states.count(JobState.CANCELLED.value),
        )
        yield from self._committed(
            work=released or report.requeued > 0, finished=report.dead + report.cancelled > 0
        )
        return report

    def _prune(self, retention: Retention, limit: int) -> Op[int]:
        now = self.clock.now()

        def before(state: JobState) -> float | None:
            horizon = retention.horizon(state)
            return None if horizon is None else now - horizon

        conn: sqlite3.Connection = yield WRITE
        conn.execute(_sql("fair_prune"), {"stale_before": now - STALE_AFTER})
        count: int = conn.execute(
            _sql("prune"),
            {
                "succeeded_before": before(JobState.SUCCEEDED),
                "cancelled_before": before(JobState.CANCELLED),
                "dead_before": before(JobState.DEAD),
                "limit": limit,
            },
        ).rowcount
        if count:
            conn.execute(_sql("workflow_prune"))
        yield from self._committed(finished=count > 0)  # a deleted job is gone
        return count

    def _age_priorities(self, every: float, floor: int, limit: int) -> Op[int]:
        params = {"now": self.clock.now(), "every": every, "floor": floor, "limit": limit}
        conn: sqlite3.Connection = yield WRITE
        count: int = conn.execute(_sql("age_priorities"), params).rowcount
        yield from self._committed()
        return count

    async def _wait(self, queues: tuple[str, ...], timeout: float) -> None:
        """Poll `PRAGMA data_version` until another connection commits, or the timeout.

        The poll runs on the calling thread's own connection (a pragma read, no
        lock, a few microseconds), so it never queues behind this backend's
        store thread. What counts as "seen" is kept between calls, so a commit
        that lands between one `wait` and the next still wakes the second one.
        Any commit wakes it, whatever queue it touched: a spurious wake-up only
        costs an empty claim.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        local = self._connection()
        # this call's own baseline, so two waiters on one thread both see a change
        seen_version, seen_writes = local.seen_data_version, local.seen_local_writes
        version = _data_version(local.conn)
        writes = self._local_writes
        while version == seen_version and writes == seen_writes:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.sleep(min(self.poll_interval, remaining))
            version = _data_version(local.conn)
            writes = self._local_writes
        local.seen_data_version, local.seen_local_writes = version, writes

    def _wait_finished(self, job_id: int, timeout: float) -> None:
        """Return once a commit may have finished job `job_id`, or after `timeout` seconds.

        Armed before the one read of the job: this object's `FinishSignal` count and this
        thread's `data_version`. Then the thread sleeps on the signal (a commit by this
        object wakes it at once), and every `poll_interval` reads the pragma, which
        changes when any other connection (another process) commits. Any such commit
        returns, whichever job it touched: the caller reads the job again.
        """
        deadline = time.monotonic() + timeout
        local = self._connection()
        seen = self._finishes.count
        version = _data_version(local.conn)
        if self._run(local.conn, self._finished_or_gone(job_id)):
            return
        while (remaining := deadline - time.monotonic()) > 0:
            if self._finishes.wait(seen, min(self.poll_interval, remaining)):
                return
            if _data_version(local.conn) != version:
                return

    async def _wait_finished_async(self, job_id: int, timeout: float) -> None:
        """`_wait_finished` on the event loop, armed and polled the same way.

        The pragma polls run on the loop thread's own connection (no lock, no table read,
        a few microseconds), never on the store thread, which every other asynchronous
        call of this object queues behind; only the one read of the job goes there. A
        commit by this object sets the event at once, from whichever thread made it.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        local = self._connection()
        with self._finishes.watched() as committed:
            version = _data_version(local.conn)
            if await self._drive_async(self._finished_or_gone(job_id)):
                return
            while (remaining := deadline - loop.time()) > 0:
                with suppress(TimeoutError):
                    async with asyncio.timeout(min(self.poll_interval, remaining)):
                        await committed.wait()
                if committed.is_set() or _data_version(local.conn) != version:
                    return

    def _finished_or_gone(self, job_id: int) -> Op[bool]:
        """Whether job `job_id` is final or no longer stored: its state alone is read."""
        conn: sqlite3.Connection = yield AUTOCOMMIT
        row = conn.execute(_sql("job_state"), {"id": job_id}).fetchone()
        if row is None:
            return True
        state = _JOB_STATE.get(row[0])
        return state is None or state.is_final  # a state no engine writes: let the caller read

    # -- inspection and admin ----------------------------------------------
    def _get(self, job_id: int) -> Op[Job | None]:
        conn: sqlite3.Connection = yield AUTOCOMMIT
        rows = _read_rows(conn, _sql("get_job"), {"id": job_id})
        return job_from_row(rows[0], _real) if rows else None

    def _list_jobs(self, job_filter: JobFilter) -> Op[list[Job]]:
        terms, params = _filter_sql(job_filter)
        sql = _sql("list_jobs")
        if terms:
            sql += "WHERE " + " AND ".join(terms)
        sql += "\nORDER BY id DESC"
        if job_filter.limit is not None:
            sql += "\nLIMIT :f_limit"
            params["f_limit"] = job_filter.limit
        conn: sqlite3.Connection = yield AUTOCOMMIT
        return [job_from_row(row, _real) for row in _read_rows(conn, sql, params)]

    def _stats(self) -> Op[list[QueueStats]]:
        now = self.clock.now()
        conn: sqlite3.Connection = yield READ  # one snapshot for both reads
        counts = conn.execute(_sql("stats_counts")).fetchall()
        oldest = dict(conn.execute(_sql("stats_oldest"), {"now": now}).fetchall())
        per_queue: dict[str, dict[JobState, int]] = {}
        for queue, state, count in counts:
            per_queue.setdefault(queue, {})[_JOB_STATE[state]] = count
        return [
            QueueStats(
                queue=queue,
                counts=per_queue[queue],
                oldest_available_age=now - float(oldest[queue]) if queue in oldest else None,
            )
            for queue in sorted(per_queue)
        ]

    def _cancel(self, job_id: int) -> Op[Job | None]:
        conn: sqlite3.Connection = yield WRITE
        row = conn.execute(_sql("cancel"), {"id": job_id, "now": self.clock.now()}).fetchone()
        if row is None:  # finished, or no such job: report it as it is
            row = conn.execute(_sql("get_job"), {"id": job_id}).fetchone()
            return None if row is None else job_from_row(row, _real)
        job = job_from_row(row, _real)
        released = False
        if job.workflow_id is not None and job.state.is_final:
            released = self._fan_in(conn, job.workflow_id, self.clock.now())
        yield from self._committed(work=released, finished=job.state.is_final)
        return job

    def _requeue(self, job_filter: JobFilter) -> Op[int]:
        """Requeue every match; `job_filter.limit` is ignored, as by the memory engine."""
        terms, params = _filter_sql(job_filter)
        params["now"] = self.clock.now()
        sql = _sql("requeue") + "".join(f"\n  AND {t}" for t in terms)
        conn: sqlite3.Connection = yield WRITE
        count: int = conn.execute(sql, params).rowcount
        yield from self._committed(work=count > 0)
        return count

    def _purge(self, job_filter: JobFilter) -> Op[int]:
        """Delete every match; `job_filter.limit` is ignored, as by the memory engine."""
        terms, params = _filter_sql(job_filter)
        sql = _sql("purge") + "".join(f"\n  AND {t}" for t in terms)
        conn: sqlite3.Connection = yield WRITE
        count: int = conn.execute(sql, params).rowcount
        if count:
            conn.execute(_sql("workflow_prune"))
        yield from self._committed(finished=count > 0)  # a deleted job is gone
        return count

    # -- steps, checkpoints and progress -------------------------------------------------
    def _store_step(self, ref: JobRef, name: str, text: str) -> Op[bool]:
        conn: sqlite3.Connection = yield WRITE
        params: dict[str, Any] = {"id": ref.id, "token": ref.token}
        if conn.execute(_sql("job_held"), params).fetchone() is None:
            return False
        params.update(name=name, value=text, now=self.clock.now())
        conn.execute(_sql("store_step"), params)
        return True

    def _store_state(self, ref: JobRef, text: str) -> Op[bool]:
        conn: sqlite3.Connection = yield WRITE
        params: dict[str, Any] = {"id": ref.id, "token": ref.token}
        if conn.execute(_sql("job_held"), params).fetchone() is None:
            return False
        params.update(value=text, now=self.clock.now())
        conn.execute(_sql("store_state"), params)
        return True

    def _store_progress(self, ref: JobRef, text: str) -> Op[bool]:
        params = {"id": ref.id, "token": ref.token, "progress": text, "now": self.clock.now()}
        conn: sqlite3.Connection = yield WRITE
        count: int = conn.execute(_sql("store_progress"), params).rowcount
        return count == 1

    def _read_steps(self, job_id: int) -> Op[JobSteps]:
        conn: sqlite3.Connection = yield AUTOCOMMIT
        return steps_from_rows(_read_rows(conn, _sql("read_steps"), {"id": job_id}))

    # -- queue control -----------------------------------------------------------------
    def _pause_queue(self, queue: str) -> Op[bool]:
        conn: sqlite3.Connection = yield WRITE
        count: int = conn.execute(
            _sql("pause_queue"), {"queue": queue, "now": self.clock.now()}
        ).rowcount
        return count == 1

    def _resume_queue(self, queue: str) -> Op[bool]:
        conn: sqlite3.Connection = yield WRITE
        count: int = conn.execute(_sql("resume_queue"), {"queue": queue}).rowcount
        yield from self._committed(work=count > 0)  # its waiting jobs are claimable again
        return count == 1

    def _paused_queues(self, queues: tuple[str, ...] | None) -> Op[list[str]]:
        """Read whole: the table holds one row per paused queue, and a pause is rare."""
        conn: sqlite3.Connection = yield AUTOCOMMIT
        rows = _read_rows(conn, _sql("paused_queues"), {})
        return [row[0] for row in rows if queues is None or row[0] in queues]

    def _next_run_at(self, queues: tuple[str, ...] | None) -> Op[float | None]:
        conn: sqlite3.Connection = yield AUTOCOMMIT
        if queues is None:
            row = conn.execute(_sql("next_run_at")).fetchone()
        else:
            row = conn.execute(
                _sql("next_run_at_queues"), {"queues": _json_list(queues)}
            ).fetchone()
        return None if row is None else _real(row[0])

    # -- schedules ---------------------------------------------------------
    def _fire_schedule(self, fire: ScheduleFire) -> Op[ScheduleFired]:
        """The CAS read, the job inserts and the record's update, under one write lock."""
        now = self.clock.now()
        conn: sqlite3.Connection = yield WRITE
        row = conn.execute(_sql("schedule_get"), {"name": fire.name}).fetchone()
        stored = None if row is None else _schedule_from_row(row)
        if not cas_holds(stored, fire):
            return refused(
                None if stored is None else stored.last_tick,
                stored is not None and stored.paused,
            )
        entries, wrote = self._insert_jobs(conn, jobs_of(fire.jobs), now)
        conn.execute(
            _sql("schedule_fired"),
            {
                "name": fire.name,
                "queue": fire.queue,
                "last_tick": fire.advance_to,
                "last_job_id": entries[-1].id if entries else None,
                "last_job_tick": fire.jobs[-1].tick if fire.jobs else None,
                "now": now,
            },
        )
        yield from self._committed(work=wrote)
        return ScheduleFired(True, tuple(entries), fire.advance_to, False)

    def _set_schedule_paused(
        self, name: str, queue: str, paused: bool, now: float
    ) -> Op[ScheduleRecord]:
        conn: sqlite3.Connection = yield WRITE
        params = {"name": name, "queue": queue, "paused": int(paused), "now": now}
        return _schedule_from_row(conn.execute(_sql("schedule_paused"), params).fetchone())

    def _list_schedules(self) -> Op[list[ScheduleRecord]]:
        conn: sqlite3.Connection = yield AUTOCOMMIT
        return [_schedule_from_row(row) for row in _read_rows(conn, _sql("schedule_list"), {})]

    # -- limit states ------------------------------------------------------------------
    def _read_limits(self, names: tuple[str, ...]) -> Op[LimitStates]:
        now = self.clock.now()
        conn: sqlite3.Connection = yield AUTOCOMMIT
        return LimitStates(True, now, _live_limits(conn, names, now))

    def _swap_limits(self, swaps: tuple[LimitSwap, ...]) -> Op[LimitStates]:
        """The compare-and-set's read and the writes, under one write lock (`BEGIN IMMEDIATE`):
        no other process's swap reads the same versions in between. The store's now is read
        once the lock is held, so the swaps of one record get their times in the order they
        apply."""
        if not swaps:
            return LimitStates(True, self.clock.now(), {})
        conn: sqlite3.Connection = yield WRITE
        now = self.clock.now()
        stored = _live_limits(conn, tuple(s.name for s in swaps), now)
        if not swap_holds(stored, swaps):
            return LimitStates(False, now, stored)
        written = {s.name: LimitState(s.name, s.version, s.value, now + s.ttl) for s in swaps}
        conn.executemany(
            _sql("limit_write"),
            [
                {"name": r.name, "version": r.version, "value": r.value, "expires_at": r.expires_at}
                for r in written.values()
            ],
        )
        return LimitStates(True, now, written)

    def _list_limits(self, prefix: str) -> Op[list[LimitState]]:
        params = {"prefix": prefix, "now": self.clock.now()}
        conn: sqlite3.Connection = yield AUTOCOMMIT
        return [_limit_from_row(row) for row in _read_rows(conn, _sql("limit_list"), params)]

    def _prune_limits(self, limit: int) -> Op[int]:
        params = {"now": self.clock.now(), "limit": limit}
        conn: sqlite3.Connection = yield WRITE
        count: int = conn.execute(_sql("limit_prune"), params).rowcount
        return count

    # -- the worker registry -----------------------------------------------------------
    def _record_worker(self, beat: WorkerBeat) -> Op[None]:
        now = self.clock.now()
        params = {
            "id": beat.id,
            "info": info_text(beat.info),
            "now": now,
            "alive_until": now if beat.stopped else now + beat.ttl,
            "stopped_at": now if beat.stopped else None,
        }
        conn: sqlite3.Connection = yield WRITE
        conn.execute(_sql("worker_record"), params)

    def _list_workers(self) -> Op[WorkerRegistry]:
        now = self.clock.now()
        conn: sqlite3.Connection = yield AUTOCOMMIT
        rows = _read_rows(conn, _sql("worker_list"), {})
        return WorkerRegistry(now, tuple(map(_worker_from_row, rows)))

    def _prune_workers(self, keep: float, limit: int) -> Op[int]:
        params = {"horizon": self.clock.now() - keep, "limit": limit}
        conn: sqlite3.Connection = yield WRITE
        count: int = conn.execute(_sql("worker_prune"), params).rowcount
        return count

    # -- the history of finished attempts ------------------------------------------------
    def _add_counts(self, counts: tuple[tuple[CountKey, int], ...]) -> Op[None]:
        start = bucket_start(self.clock.now())
        rows = [
            {"bucket": start, "queue": k.queue, "task": k.task, "outcome": k.outcome, "n": n}
            for k, n in counts
        ]
        conn: sqlite3.Connection = yield WRITE
        conn.executemany(_sql("counts_add"), rows)

    def _read_counts(self, since: float) -> Op[CountHistory]:
        now = self.clock.now()
        conn: sqlite3.Connection = yield AUTOCOMMIT
        rows = _read_rows(conn, _sql("counts_read"), {"since": now - since})
        buckets = tuple(CountBucket(_real(r[0]), CountKey(*r[1:4]), r[4]) for r in rows)
        return CountHistory(now, buckets)

    def _prune_counts(self, keep: float, limit: int) -> Op[int]:
        params = {"horizon": self.clock.now() - keep, "limit": limit}
        conn: sqlite3.Connection = yield WRITE
        count: int = conn.execute(_sql("counts_prune"), params).rowcount
        return count

    # -- workflows ---------------------------------------------------------------------
    def _enqueue_workflow(self, workflow: NewWorkflow) -> Op[list[list[int]]]:
        """The members go in as an enqueue's rows (`_insert_jobs`), later steps held, then
        get their place in the workflow, in the same write transaction as the record."""
        now = self.clock.now()
        conn: sqlite3.Connection = yield WRITE
        ids: list[list[int]] = []
        for step, jobs in enumerate(workflow.steps):
            held = [job if step == 0 else job._replace(run_at=HELD_AT) for job in jobs]
            entries, _ = self._insert_jobs(conn, held, now)
            ids.append([entry.id for entry in entries])
            conn.executemany(
                _sql("workflow_member"),
                [(workflow.id, step, index, job_id) for index, job_id in enumerate(ids[-1])],
            )
        conn.execute(
            _sql("workflow_insert"),
            (workflow.id, shape_to_json(workflow.shape), workflow.on_failure.value, now),
        )
        yield from self._committed(work=True)
        return ids

    def _fan_in(self, conn: sqlite3.Connection, workflow_id: str, now: float) -> bool:
        """Advance the workflow as far as its members allow, in the caller's write transaction
        (which holds SQLite's write lock: no other writer reads the same members). True if it
        released members of a step (work to wake workers for, after the commit)."""
        released = False
        while True:
            row = conn.execute(_sql("workflow_get"), (workflow_id,)).fetchone()
            if row is None or WorkflowStatus(row[1]) not in ADVANCING:
                return released
            step, shape, on_failure = row[2], shape_from_json(row[3]), OnFailure(row[4])
            unfinished, failed = conn.execute(
                _sql("workflow_step_probe"), (workflow_id, step)
            ).fetchone()
            early = settled_early(on_failure, bool(unfinished), bool(failed))
            members = (
                []
                if early is not None
                else [
                    Member(index, _JOB_STATE[state], result, (decode_errors(errors) or (None,))[-1])
                    for index, state, result, errors in conn.execute(
                        _sql("workflow_step_members"), (workflow_id, step)
                    )
                ]
            )
            decision = early or decide(shape, step, on_failure, members)
            if decision.verdict is Verdict.WAIT:
                return released
            if decision.verdict is Verdict.FAIL:
                conn.execute(_sql("workflow_failed"), (workflow_id,))
                return released
            if decision.verdict is Verdict.FINISH:
                assert decision.status is not None
                conn.execute(
                    _sql("workflow_finished"),
                    (decision.status.value, decision.output, now, workflow_id),
                )
                return released
            conn.execute(_sql("workflow_advanced"), (workflow_id,))
            conn.execute(_sql("workflow_release"), (now, decision.output, workflow_id, step + 1))
            released = True

    def _get_workflow(self, workflow_id: str) -> Op[Workflow | None]:
        conn: sqlite3.Connection = yield READ
        return _read_workflow(conn, workflow_id)

    def _cancel_workflow(self, workflow_id: str) -> Op[Workflow | None]:
        now = self.clock.now()
        conn: sqlite3.Connection = yield WRITE
        changed = conn.execute(_sql("workflow_cancel"), (now, workflow_id)).rowcount
        if changed:
            conn.execute(_sql("workflow_cancel_members"), {"id": workflow_id, "now": now})
        found = _read_workflow(conn, workflow_id)
        yield from self._committed(finished=bool(changed))
        return found


def _read_workflow(conn: sqlite3.Connection, workflow_id: str) -> Workflow | None:
    row = conn.execute(_sql("workflow_get"), (workflow_id,)).fetchone()
    if row is None:
        return None
    members = _read_rows(conn, _sql("workflow_members"), {"id": workflow_id})
    return Workflow(
        id=row[0],
        status=WorkflowStatus(row[1]),
        step=row[2],
        shape=shape_from_json(row[3]),
        on_failure=OnFailure(row[4]),
        created_at=_real(row[5]),
        finished_at=_real(row[6]),
        result=row[7],
        members=tuple(job_from_row(member, _real) for member in members),
    )


def _live_limits(
    conn: sqlite3.Connection, names: tuple[str, ...], now: float
) -> dict[str, LimitState]:
    """The records of `names` not expired at `now`, by name."""
    rows = _read_rows(conn, _sql("limit_read"), {"names": _json_list(names), "now": now})
    return {record.name: record for record in map(_limit_from_row, rows)}


def _limit_from_row(row: Sequence[Any]) -> LimitState:
    return LimitState(name=row[0], version=row[1], value=row[2], expires_at=_real(row[3]))


def _worker_from_row(row: Sequence[Any]) -> WorkerRecord:
    return WorkerRecord(
        id=row[0],
        info=info_from(row[1]),
        started_at=_real(row[2]),
        seen_at=_real(row[3]),
        alive_until=_real(row[4]),
        stopped_at=None if row[5] is None else _real(row[5]),
    )


def _schedule_from_row(row: Sequence[Any]) -> ScheduleRecord:
    return ScheduleRecord(
        name=row[0],
        queue=row[1],
        last_tick=_real(row[2]),
        last_job_id=row[3],
        last_job_tick=_real(row[4]),
        last_fired_at=_real(row[5]),
        paused=bool(row[6]),
    )


def _stored_keys(conn: sqlite3.Connection, jobs: Sequence[NewJob], now: float) -> dict[str, int]:
    """The stored job each idempotency key of `jobs` names; a finished job whose window (the
    enqueuing job's `idempotency_window`) has passed gives its key up here instead."""
    windows = {job.idempotency_key: job.idempotency_window for job in jobs}
    keys = [key for key in windows if key is not None]
    stored: dict[str, int] = {}
    for key, job_id, state, finished_at in conn.execute(
        _sql("enqueue_find_keys"), (_json_list(keys),)
    ):
        window = windows[key]
        final = JobState(state).is_final and finished_at is not None
        if final and window is not None and now >= finished_at + window:
            conn.execute(_sql("idempotency_release"), (job_id,))
        else:
            stored[key] = job_id
    return stored


def _taken(
    jobs: Sequence[NewJob], stored: dict[str, int], holders: dict[str, int]
) -> list[int | None]:
    """Per job, what makes it a duplicate (by idempotency key, then by unique key), deciding
    the jobs in order: the id of a stored job, `-(i + 1)` for the new job at index i of the
    batch, or None for a new job. A new job's keys are its own for the jobs after it."""
    keys, uniques = dict(stored), dict(holders)
    taken: list[int | None] = []
    for index, job in enumerate(jobs):
        key, unique = job.idempotency_key, job.unique_key
        held = keys.get(key) if key is not None else None
        if held is None and unique is not None:
            held = uniques.get(unique)
        taken.append(held)
        if held is None:
            if key is not None:
                keys[key] = -(index + 1)
            if unique is not None:
                uniques[unique] = -(index + 1)
    return taken
