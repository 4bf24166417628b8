"""The Redis engine's drivers: what an operation's steps are, and how they are sent.

An operation (`ops.Op`) yields `Step`s, each a pipeline of script calls (`Eval`) and plain
commands (`Command`), and receives each step's replies. `Driver.execute` sends a step over the
synchronous wire, `Driver.execute_async` over the running event loop's own (see `wire.py`):
both send the same steps, hence the same scripts (`RedisBackend._drive` and `_drive_async` run an
operation with them). Scripts go by SHA (EVALSHA) and are loaded again when Redis answers
NOSCRIPT (after a restart or SCRIPT FLUSH); inside MULTI they are sent whole (EVAL).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, OutOfMemoryError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from . import scripts
from .finished import FinishedListener
from .keys import Keys, QueueKeys, Settings
from .records import Arg
from .scripts import Script
from .wire import AsyncClusterWire, AsyncWire, ClusterWire, Interrupted, SyncWire


@dataclass(frozen=True, slots=True)
class Eval:
    """One call of a Lua script on one queue's keys."""

    script: Script
    keys: tuple[str, ...]
    args: tuple[Arg, ...]

    @classmethod
    def of(cls, name: str, queue: QueueKeys, *args: Arg) -> Eval:
        """The script `lua/<name>.lua` on `queue`: its keys, its tag (ARGV[1]), then `args`."""
        return cls(scripts.script(name), queue.keys, (queue.tag, *args))

    @classmethod
    def on_limits(cls, name: str, keys: Keys, *args: Arg) -> Eval:
        """The limit-state script `lua/<name>.lua`: the limit records' keys (one slot, the
        store's tag), that tag as ARGV[1], then `args`."""
        return cls(scripts.script(name), (keys.limits, keys.limits_expiry), (keys.tag, *args))

    @classmethod
    def on_registry(cls, name: str, keys: Keys, *args: Arg) -> Eval:
        """The worker registry's script `lua/<name>.lua`: its keys (in the store's slot), the
        store's tag as ARGV[1], then `args`."""
        return cls(scripts.script(name), (keys.workers, keys.workers_seen), (keys.tag, *args))

    @classmethod
    def on_counts(cls, name: str, keys: Keys, *args: Arg) -> Eval:
        """The job counts' script `lua/<name>.lua`: their keys (in the store's slot), the
        store's tag as ARGV[1], then `args`."""
        return cls(scripts.script(name), (keys.counts, keys.counts_buckets), (keys.tag, *args))


@dataclass(frozen=True, slots=True)
class Command:
    args: tuple[Arg, ...]


Call = Eval | Command


@dataclass(frozen=True, slots=True)
class Step:
    """Calls sent together (one pipeline); `atomic` wraps them in MULTI/EXEC."""

    calls: tuple[Call, ...]
    atomic: bool = False


def client_options(settings: Settings) -> dict[str, Any]:
    """redis-py options for every connection the engine opens.

    RESP2: scripts' replies keep their plain shapes. No retries inside redis-py: a write is
    never sent twice behind the caller's back, and the producer fails at once when Redis is
    down (the worker retries with its own backoff). A connection Redis closed (a restart) is
    noticed and replaced before use (see wire.py). Timeouts bound every call
    (keys.TIMEOUT_DEFAULTS); the blocking reads (the wake-up, the finished jobs' subscription)
    wait for their own timeout instead (see wake.py, finished.py), so that a long wait is never
    cut short.
    """
    return {**settings.connection_options, "protocol": 2, "retry": Retry(NoBackoff(), 0)}


def describe_failure(where: str, operation: str, exc: BaseException) -> str:
    """What an operation that Redis refused or could not reach says, with what to do next."""
    if _is_oom(exc):
        hint = (
            "Redis is out of memory (maxmemory reached) and refused the write: nothing "
            "was written. Free memory, raise maxmemory, or keep finished jobs for less "
            "time (App(retention=...))."
        )
    elif isinstance(exc, RedisConnectionError | RedisTimeoutError):
        hint = "Check that Redis is running and reachable at this URL."
        if operation == "enqueue":
            hint += (
                " If the connection broke after the request was sent, the jobs may have "
                "been stored; an idempotency key makes a retry safe."
            )
    else:
        hint = ""
    reason = str(exc).rstrip(". ")
    if operation == "enqueue":
        return f"could not enqueue jobs into Redis at {where}: {reason}. {hint}"
    return f"{operation} failed on Redis at {where}: {reason}. {hint}".rstrip()


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, OutOfMemoryError) or (
        isinstance(exc, ResponseError) and "OOM" in str(exc)[:40]
    )


def _first_error(results: list[Any]) -> list[Any]:
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def _command(call: Call) -> tuple[Arg, ...]:
    if isinstance(call, Command):
        return call.args
    return ("EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args)


def _whole(call: Call) -> tuple[Arg, ...]:
    if isinstance(call, Command):
        return call.args
    return ("EVAL", call.script.text, len(call.keys), *call.keys, *call.args)


def _script_of(call: Call) -> Script:
    assert isinstance(call, Eval)
    return call.script


@dataclass(eq=False)
class AsyncSide:
    """What one event loop uses: its wire and its finish listener."""

    wire: AsyncWire | AsyncClusterWire
    finished: FinishedListener
    failures: int = 0
    """Waits that failed in a row (the wake-up's backoff, see wake.py)."""
    closed: bool = False
    keeper: AsyncGenerator[None, None] | None = None

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        await self.finished.aclose()
        with contextlib.suppress(Exception):
            await self.wire.aclose()


async def _close_when_the_loop_ends(side: AsyncSide) -> AsyncGenerator[None, None]:
    """Suspended for the loop's lifetime; `asyncio.run` closes it (and the side) at the end."""
    try:
        yield
    finally:
        await side.aclose()


class Driver:
    """Sends steps: on this thread's connection, or on the running event loop's own side."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        url, options = settings.redis_url, client_options(settings)
        self.wire: SyncWire | ClusterWire
        self.client: Any
        """redis-py's own client, for what is not an operation (version, layout, preflight)."""
        if settings.cluster:
            self.wire = ClusterWire(url, options)
            self.client = self.wire.client
        else:
            self.wire = SyncWire(url, options)
            self.client = redis.Redis.from_url(url, **options)
        self._lock = threading.Lock()
        self._sides: dict[asyncio.AbstractEventLoop, AsyncSide] = {}

    # -- what the two drivers send each step with ----------------------------------
    def execute(self, step: Step) -> list[Any]:
        wire = self.wire
        if step.atomic:
            return _first_error(wire.transaction([_whole(c) for c in step.calls]))
        commands = [_command(c) for c in step.calls]
        if len(commands) == 1:
            try:
                return [wire.call(commands[0])]
            except NoScriptError:
                wire.load_script(_script_of(step.calls[0]).text)
                return [wire.call(commands[0])]
        results = wire.pipeline(commands)
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:
            for source in {_script_of(step.calls[i]).text for i in missing}:
                wire.load_script(source)
            again = wire.pipeline([commands[i] for i in missing])
            for i, result in zip(missing, again, strict=True):
                results[i] = result
        return _first_error(results)

    async def execute_async(self, wire: AsyncWire | AsyncClusterWire, step: Step) -> list[Any]:
        """`execute` on the running loop; a cancellation that came meanwhile is never lost.

        redis-py sends each command through `asyncio.wait_for`, which on Python 3.11 returns
        the result of the send when the send completes as a cancellation comes, and drops
        the cancellation: the step would then return as if none had come, and a task told to
        stop that way would carry on. A cancellation requested while the step ran that did
        not end it is raised here, in place of the step's replies or error.
        """
        task = asyncio.current_task()
        cancels = task.cancelling() if task is not None else 0

        def lost() -> bool:
            return task is not None and task.cancelling() > cancels

        try:
            replies = await self._execute_async(wire, step)
        except Exception:
            if lost():
                raise asyncio.CancelledError from None
            raise
        if lost():
            raise asyncio.CancelledError
        return replies

    async def _execute_async(self, wire: AsyncWire | AsyncClusterWire, step: Step) -> list[Any]:
        if step.atomic:
            return _first_error(await wire.transaction([_whole(c) for c in step.calls]))
        commands = [_command(c) for c in step.calls]
        if len(commands) == 1:
            try:
                return [await wire.call(commands[0])]
            except NoScriptError:
                await wire.load_script(_script_of(step.calls[0]).text)
                return [await wire.call(commands[0])]
        results = await wire.pipeline(commands)
        return _first_error(await self._with_scripts_loaded(wire, step, commands, results))

    async def execute_blocking(
        self, wire: AsyncWire | AsyncClusterWire, block: Command, step: Step, timeout: float
    ) -> list[Any]:
        """`block` (a blocking command of `timeout` seconds), then `step`, in one pipeline
        where the wire can: `step`'s replies. Cancelled: `Interrupted`, with `step`'s replies
        when it ran (see `AsyncWire.call_blocking`)."""
        assert not step.atomic
        commands = [_command(c) for c in step.calls]
        try:
            replies = await wire.call_blocking([block.args, *commands], timeout)
        except Interrupted as stop:
            if stop.replies is not None:
                stop.replies = stop.replies[1:]
            raise
        # Redis may have lost its scripts (a restart, SCRIPT FLUSH): the block is over by then
        results = await self._with_scripts_loaded(wire, step, commands, replies[1:])
        return _first_error(results)

    async def _with_scripts_loaded(
        self,
        wire: AsyncWire | AsyncClusterWire,
        step: Step,
        commands: list[tuple[Arg, ...]],
        results: list[Any],
    ) -> list[Any]:
        """`results` of `commands`, those Redis answered NOSCRIPT to sent again once loaded."""
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:
            for source in {_script_of(step.calls[i]).text for i in missing}:
                await wire.load_script(source)
            again = await wire.pipeline([commands[i] for i in missing])
            for i, result in zip(missing, again, strict=True):
                results[i] = result
        return results

    # -- one side per event loop -------------------------------------------------
    async def side(self) -> AsyncSide:
        """The running loop's side, made on first use and closed when the loop ends."""
        loop = asyncio.get_running_loop()
        side = self._sides.get(loop)
        if side is not None and not side.closed:
            return side
        with self._lock:
            for old in [lp for lp in self._sides if lp.is_closed()]:
                del self._sides[old]
            url, options = self._settings.redis_url, client_options(self._settings)
            cluster = self._settings.cluster
            wire = AsyncClusterWire(url, options) if cluster else AsyncWire(url, options)
            side = AsyncSide(wire, FinishedListener.from_url(url, options))
            self._sides[loop] = side
        side.keeper = _close_when_the_loop_ends(side)
        await side.keeper.asend(None)
        return side

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        with contextlib.suppress(Exception):
            self.wire.close()
        with self._lock:
            sides, self._sides = self._sides, {}
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for loop, side in sides.items():
            if side.closed or loop.is_closed():
                continue
            if loop is running:
                loop.create_task(side.aclose())
            elif loop.is_running():
                asyncio.run_coroutine_threadsafe(side.aclose(), loop)
            else:
                with contextlib.suppress(Exception):
                    loop.run_until_complete(side.aclose())
