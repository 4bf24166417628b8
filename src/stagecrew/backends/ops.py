"""The one sans-IO protocol every engine writes its operations in.

An operation is a generator: it yields the engine's commands (a SQL statement, a COPY, a
Lua script call or a pipeline of them, a transaction to open), receives each command's
reply, and returns the operation's value. It does no I/O itself, so one operation serves
both of an engine's drivers: the synchronous one (`Backend._drive`) and the asynchronous
one (`Backend._drive_async`) send the same commands over different connections, and cannot
drift apart. An engine whose statements need no I/O of their own (the memory engine) writes
its operations with `immediate`.

The front layer (`Backend`'s public methods, in `base.py`) builds an operation from
validated input, hands it to a driver, and maps what the driver raises.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Generator
from typing import Any, ParamSpec, TypeVar, cast

T = TypeVar("T")
P = ParamSpec("P")

Op = Generator[Any, Any, T]
"""An operation: yields commands, is sent each command's reply, returns its value."""


def run(op: Op[T], execute: Callable[[Any], Any]) -> T:
    """Drive `op` to its end, answering each command with `execute(command)`."""
    try:
        command = next(op)
        while True:
            command = op.send(execute(command))
    except StopIteration as done:
        return cast(T, done.value)


async def run_async(op: Op[T], execute: Callable[[Any], Awaitable[Any]]) -> T:
    """`run`, awaiting each command's reply."""
    try:
        command = next(op)
        while True:
            command = op.send(await execute(command))
    except StopIteration as done:
        return cast(T, done.value)


async def resume_async(op: Op[T], reply: Any, execute: Callable[[Any], Awaitable[Any]]) -> T:
    """`run_async` for an operation whose first command a caller sent itself: `reply` is
    that command's reply."""
    try:
        command = op.send(reply)
        while True:
            command = op.send(await execute(command))
    except StopIteration as done:
        return cast(T, done.value)


def immediate(fn: Callable[P, T]) -> Callable[P, Op[T]]:
    """An operation without commands: `fn`'s body runs when the operation is driven.

    So it runs inside whatever the driver holds around an operation (a lock, a
    transaction), never when the operation is built.
    """

    @functools.wraps(fn)
    def operation(*args: P.args, **kwargs: P.kwargs) -> Op[T]:
        return fn(*args, **kwargs)
        yield  # unreachable: makes this function a generator

    return operation
