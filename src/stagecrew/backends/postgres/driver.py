"""The PostgreSQL engine's commands, and the statement execution of its two drivers.

An operation of the engine (`ops.Op`) yields these commands: a `Statement`, a binary `Copy`,
or first of all `TRANSACTION`, which runs the rest of the operation in one transaction
(under one client deadline, its COMMIT included); without it every statement commits on its
own (autocommit). Each statement is answered with a `Result`. `drive` and `drive_async` run
an operation on one connection; the backend picks the connection (a pooled one, or the
caller's own) and turns a psycopg error into a `StoreFailure`, which records whether a
statement had reached the server, so the failure can say whether anything may be stored.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import psycopg
from psycopg import AsyncConnection, AsyncCursor, Connection, Cursor
from psycopg.rows import tuple_row

from .deadlines import DEADLINES

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Statement:
    sql: str
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Copy:
    """COPY ... FROM STDIN (FORMAT BINARY) of `rows`, whose columns have the given types."""

    sql: str
    types: tuple[str, ...]
    rows: list[tuple[Any, ...]]


class Transaction:
    """Yielded first: the rest of the operation runs in one transaction."""

    __slots__ = ()


TRANSACTION = Transaction()


@dataclass(frozen=True, slots=True)
class Result:
    rows: list[tuple[Any, ...]]
    rowcount: int


_OPENED = Result([], 0)
"""The reply to `TRANSACTION`."""
_LATE_TRANSACTION = "an operation opens its transaction with its first command, not later"

Command = Statement | Copy | Transaction
SqlOp = Generator[Command, Result, T]
"""An operation of this engine: yields its commands, in order, and returns its value."""


@dataclass(slots=True)
class Progress:
    sent: bool = False
    """A statement reached the server: a failure after this may have changed data."""


class StoreFailure(Exception):
    """A psycopg error raised while an operation ran, with what is known of its effect."""

    def __init__(self, error: psycopg.Error, *, sent: bool, aborted: bool = False) -> None:
        super().__init__(str(error))
        self.error = error
        self.sent = sent
        """A statement had reached the server: on a lost connection, it may have committed."""
        self.aborted = aborted
        """The caller's own transaction, which the operation ran in, is aborted now."""


def drive(
    conn: Connection[Any], op: SqlOp[T], progress: Progress, deadline: float | None = None
) -> T:
    """Run `op` on `conn`, each statement given `deadline` seconds to answer (deadlines.py)."""
    try:
        command = next(op)
        if not isinstance(command, Transaction):
            return _run(conn, op, command, progress, deadline)
        # one deadline for the whole transaction, its COMMIT included
        with DEADLINES.guard(conn.pgconn.socket, deadline), conn.transaction():
            return _run(conn, op, op.send(_OPENED), progress, None)
    except StopIteration as stop:
        return cast(T, stop.value)


def _run(
    conn: Connection[Any],
    op: SqlOp[T],
    command: Command,
    progress: Progress,
    deadline: float | None,
) -> T:
    try:
        while True:
            with conn.cursor(row_factory=tuple_row) as cur:
                progress.sent = True
                with DEADLINES.guard(conn.pgconn.socket, deadline):
                    result = _execute(cur, command)
            command = op.send(result)
    except StopIteration as stop:
        return cast(T, stop.value)


def _execute(cur: Cursor[Any], command: Command) -> Result:
    if isinstance(command, Statement):
        cur.execute(command.sql, command.params)
        rows = cur.fetchall() if cur.description is not None else []
        return Result(rows, cur.rowcount)
    if isinstance(command, Copy):
        with cur.copy(command.sql) as copy:
            copy.set_types(command.types)
            for row in command.rows:
                copy.write_row(row)
        return Result([], cur.rowcount)
    raise AssertionError(_LATE_TRANSACTION)


async def drive_async(
    conn: AsyncConnection[Any], op: SqlOp[T], progress: Progress, deadline: float | None = None
) -> T:
    """`drive` on an asyncio connection."""
    try:
        command = next(op)
        if not isinstance(command, Transaction):
            return await _run_async(conn, op, command, progress, deadline)
        with DEADLINES.guard(conn.pgconn.socket, deadline):
            async with conn.transaction():
                return await _run_async(conn, op, op.send(_OPENED), progress, None)
    except StopIteration as stop:
        return cast(T, stop.value)


async def _run_async(
    conn: AsyncConnection[Any],
    op: SqlOp[T],
    command: Command,
    progress: Progress,
    deadline: float | None,
) -> T:
    try:
        while True:
            async with conn.cursor(row_factory=tuple_row) as cur:
                progress.sent = True
                with DEADLINES.guard(conn.pgconn.socket, deadline):
                    result = await _execute_async(cur, command)
            command = op.send(result)
    except StopIteration as stop:
        return cast(T, stop.value)


async def _execute_async(cur: AsyncCursor[Any], command: Command) -> Result:
    if isinstance(command, Statement):
        await cur.execute(command.sql, command.params)
        rows = await cur.fetchall() if cur.description is not None else []
        return Result(rows, cur.rowcount)
    if isinstance(command, Copy):
        async with cur.copy(command.sql) as copy:
            copy.set_types(command.types)
            for row in command.rows:
                await copy.write_row(row)
        return Result([], cur.rowcount)
    raise AssertionError(_LATE_TRANSACTION)


def raw_connection(target: object) -> object:
    """The psycopg connection behind a connection, a cursor, or a framework's wrapper of one.

    Unwraps psycopg cursors (`.connection`), SQLAlchemy's `Connection`
    (`.connection`, then `.driver_connection`) and Django's connection
    (`.connection`, connecting it first with `ensure_connection()`).
    """
    for _ in range(4):
        if isinstance(target, Connection | AsyncConnection):
            return target
        if isinstance(target, Cursor | AsyncCursor):
            return target.connection
        inner = getattr(target, "driver_connection", None)
        if inner is None:
            ensure = getattr(target, "ensure_connection", None)
            if callable(ensure) and getattr(target, "connection", None) is None:
                ensure()  # Django connects lazily
            inner = getattr(target, "connection", None)
        if inner is None:
            break
        target = inner
    return target
