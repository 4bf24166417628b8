"""One attempt's durable steps, checkpoint and progress: what `Context` calls into.

Nothing here touches the store until the task uses a step, the checkpoint or progress, so a
job that uses none of them pays nothing. The first `ctx.step`, `ctx.step_async`, `ctx.state`
or `ctx.state_async` of an attempt reads the job's stored steps and checkpoint in one round
trip (`Backend.read_steps`); each step then costs one fenced write when it completes.

Checkpoint and progress writes are rate-limited: each is written at once when its previous
write is at least `WRITE_INTERVAL` seconds old (by the app's clock), else kept pending and
written by a later call or, at the latest, by `finish_async` when the attempt ends, before its
outcome is written. A sync task writes on its own job thread through the backend's sync
driver; an async task's writes run on the event loop, one at a time, never blocking it.

Once the worker starts finishing the attempt (`finish_async`), or once a `ctx.transaction()`
committed the job's success (`committed`), later checkpoint and progress calls are dropped
without a store write: a sync task that overran its timeout keeps its thread, and what that
thread gives then must not replace the value flushed for the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
from collections.abc import Callable
from typing import Any

from ..backends.base import Backend
from ..backends.steps import (
    MAX_STEP_BYTES,
    JobSteps,
    StoredValue,
    check_progress,
    check_step_name,
)
from ..clock import Clock
from ..errors import LeaseLostError, PayloadTooLargeError, StagecrewError, StepError
from ..job import JobRef
from ..serialization import decode, encode

log = logging.getLogger("stagecrew.worker")

WRITE_INTERVAL = 1.0
"""At most one checkpoint write and one progress write per second per job."""


def _encoded(value: Any, what: str) -> str:
    data = encode(value, what=what)
    if len(data) > MAX_STEP_BYTES:
        raise PayloadTooLargeError(
            f"{what} is {len(data)} bytes of JSON, over the limit of {MAX_STEP_BYTES}; "
            "store large data elsewhere (a file, a blob store) and keep a reference"
        )
    return data.decode()


class _Throttled:
    """One rate-limited value (the checkpoint or the progress) and its writes."""

    def __init__(self, write: Callable[[Any], bool], write_async: Callable[[Any], Any]) -> None:
        self._write = write
        self._write_async = write_async
        self.pending: Any = None
        self.has_pending = False
        self.last_write: float | None = None
        self.in_flight: asyncio.Task[bool] | None = None
        """An async task's write on the event loop."""
        self.writes = 0


class AttemptSteps:
    """The steps, checkpoint and progress of one attempt (claim `ref`) of one job."""

    def __init__(self, backend: Backend, ref: JobRef, clock: Clock, *, on_loop: bool) -> None:
        self._backend = backend
        self._ref = ref
        self._clock = clock
        self._on_loop = on_loop
        self._stored: JobSteps | None = None
        self._state_written = False
        """A checkpoint was offered this attempt: it, not the stored one, is `state`."""
        self._ran: set[str] = set()
        self._state: Any = None
        self._lost = False
        self._lock = threading.Lock()
        """Guards the pending values, `_finished`, `_writing` and `_drained`: a sync task writes
        on its job thread (or threads of its own), the worker finishes on its event loop."""
        self._finished = False
        """No checkpoint or progress is taken any more (`finish_async`, `committed`)."""
        self._writing = 0
        """Writes on a task's thread under way."""
        self._drained: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None
        """What `finish_async` waits on for the writes under way to end."""
        self._refusal_logged = False
        self._checkpoint = _Throttled(
            lambda text: backend.store_state(ref, text),
            lambda text: backend.store_state_async(ref, text),
        )
        self._progress = _Throttled(
            lambda value: backend.store_progress(ref, value),
            lambda value: backend.store_progress_async(ref, value),
        )

    # -- steps ---------------------------------------------------------------------
    def step(self, name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        if self._on_loop:
            raise StepError(
                f"step {name!r}: ctx.step() blocks; in an async task use await ctx.step_async()"
            )
        self._begin(name)
        stored = self._load().steps.get(name)
        if stored is not None:
            return decode(stored.text, what=f"the stored result of step {name!r}")
        text = _encoded(fn(*args, **kwargs), f"the result of step {name!r}")
        self._fenced(self._backend.store_step(self._ref, name, text), f"step {name!r}")
        self._remember(name, text)
        return decode(text)

    async def step_async(
        self, name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> Any:
        self._begin(name)
        stored = (await self._load_async()).steps.get(name)
        if stored is not None:
            return decode(stored.text, what=f"the stored result of step {name!r}")
        value = fn(*args, **kwargs)
        if inspect.isawaitable(value):
            value = await value
        text = _encoded(value, f"the result of step {name!r}")
        applied = await self._backend.store_step_async(self._ref, name, text)
        self._fenced(applied, f"step {name!r}")
        self._remember(name, text)
        return decode(text)

    def _begin(self, name: str) -> None:
        self._check_held()
        check_step_name(name, "ctx.step")
        if name in self._ran:
            raise StepError(
                f"step {name!r} was already used in this attempt of job {self._ref.id}; "
                "give each step of a job its own name"
            )
        self._ran.add(name)

    def _remember(self, name: str, text: str) -> None:
        assert self._stored is not None
        self._stored.steps[name] = StoredValue(text, self._clock.now())

    def _load(self) -> JobSteps:
        if self._stored is None:
            self._stored = self._backend.read_steps(self._ref.id)
            if not self._state_written:
                self._state = self._decoded_state(self._stored)
        return self._stored

    async def _load_async(self) -> JobSteps:
        if self._stored is None:
            self._stored = await self._backend.read_steps_async(self._ref.id)
            if not self._state_written:
                self._state = self._decoded_state(self._stored)
        return self._stored

    @staticmethod
    def _decoded_state(stored: JobSteps) -> Any:
        if stored.state is None:
            return None
        return decode(stored.state.text, what="the stored checkpoint")

    def _fenced(self, applied: bool, what: str) -> None:
        if not applied:
            self._lost = True
            raise LeaseLostError(
                f"job {self._ref.id} claim {self._ref.token} lost its lease; {what} was not stored"
            )

    def _check_held(self) -> None:
        if self._lost:
            raise LeaseLostError(
                f"job {self._ref.id} claim {self._ref.token} lost its lease; stop this attempt"
            )

    # -- checkpoint ------------------------------------------------------------------
    @property
    def state(self) -> Any:
        if self._stored is None and not self._state_written:
            self._load()
        return self._state

    async def state_async(self) -> Any:
        if self._stored is None and not self._state_written:
            await self._load_async()
        return self._state

    def checkpoint_state(self, value: Any) -> None:
        self._check_held()
        text = _encoded(value, "the checkpoint")
        # The stored steps are still read by the first step: a checkpoint written before it
        # must not hide them (a completed step would run again).
        self._state_written = True
        self._state = decode(text)
        self._offer(self._checkpoint, text)

    # -- progress ------------------------------------------------------------------------
    def progress(self, done: float, total: float | None, message: str | None) -> None:
        self._check_held()
        self._offer(self._progress, check_progress(done, total, message))

    # -- rate-limited writes -------------------------------------------------------------
    def _offer(self, slot: _Throttled, value: Any) -> None:
        with self._lock:
            refused = self._finished
            if not refused:
                slot.pending, slot.has_pending = value, True
                now = self._clock.now()
                if slot.last_write is not None and now - slot.last_write < WRITE_INTERVAL:
                    return
                if self._on_loop:
                    if slot.in_flight is None:
                        loop = asyncio.get_running_loop()
                        slot.in_flight = loop.create_task(self._write_async(slot))
                    return
                value = self._take(slot)
        if refused:
            self._refused()
        else:
            self._write_now(slot, value)

    def _take(self, slot: _Throttled) -> Any:
        """The slot's pending value, now being written (call with `_lock` held)."""
        value, slot.has_pending = slot.pending, False
        slot.last_write = self._clock.now()
        slot.writes += 1
        self._writing += 1
        return value

    def _refused(self) -> None:
        """A checkpoint or progress given once the attempt was finishing: dropped, not raised,
        since the task may not know its attempt ended (it overran its timeout, or committed)."""
        if not self._refusal_logged:
            self._refusal_logged = True
            log.warning(
                "job %s: a checkpoint or progress given after the attempt ended (it timed out, "
                "or its transaction committed) was not stored",
                self._ref.id,
            )

    def _write_now(self, slot: _Throttled, value: Any) -> None:
        """Write on the task's own thread; a store error is logged and the value kept pending
        (the next call or the flush tries again): a checkpoint or progress that could not be
        written is no reason to fail the work itself."""
        failed = False
        try:
            applied = slot._write(value)
        except StagecrewError as exc:
            log.warning("job %s: a checkpoint or progress write failed: %s", self._ref.id, exc)
            applied, failed = True, True
        finally:
            self._written(slot, failed)
        self._fenced(applied, "a checkpoint or progress")

    def _written(self, slot: _Throttled, failed: bool) -> None:
        with self._lock:
            self._writing -= 1
            if failed:
                slot.has_pending = True
            drained = self._drained if self._writing == 0 else None
            if drained is not None:
                self._drained = None
        if drained is not None:
            loop, future = drained
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_resolve, future)

    async def _write_async(self, slot: _Throttled) -> bool:
        value, slot.has_pending = slot.pending, False
        slot.last_write = self._clock.now()
        slot.writes += 1
        try:
            applied = bool(await slot._write_async(value))
        except StagecrewError as exc:
            log.warning("job %s: a checkpoint or progress write failed: %s", self._ref.id, exc)
            applied = True  # a store error is not a lost lease; the flush tries again
            slot.has_pending = True
        finally:
            slot.in_flight = None
        if not applied:
            self._lost = True
        return applied

    def flush(self) -> None:
        """Write what is pending now, on the task's own thread (before `ctx.transaction()`
        commits); a store error is logged and the value kept pending."""
        for slot in (self._checkpoint, self._progress):
            with self._lock:
                if self._finished or not slot.has_pending:
                    continue
                value = self._take(slot)
            self._write_now(slot, value)

    async def flush_async(self) -> None:
        """Write what is pending now (the last checkpoint and progress), on the event loop.

        A store error is logged, not raised: the attempt's outcome still gets written."""
        for slot in (self._checkpoint, self._progress):
            if slot.in_flight is not None:
                await asyncio.shield(slot.in_flight)
            if slot.has_pending:
                value, slot.has_pending = slot.pending, False
                slot.writes += 1
                try:
                    await slot._write_async(value)
                except StagecrewError as exc:
                    log.warning(
                        "job %s: the last checkpoint or progress was not stored: %s",
                        self._ref.id,
                        exc,
                    )

    async def finish_async(self) -> None:
        """Take no more checkpoints or progress, wait for the task's writes under way, and
        write what is still pending: called once the attempt ended, before its outcome."""
        drained: asyncio.Future[None] | None = None
        with self._lock:
            self._finished = True
            if self._writing:
                loop = asyncio.get_running_loop()
                drained = loop.create_future()
                self._drained = (loop, drained)
        if drained is not None:
            await drained  # one store call, under the store's own deadline
        await self.flush_async()

    def committed(self) -> None:
        """The job's success is stored (its `ctx.transaction()` committed): what is pending
        or given from now on could only be refused by the store, so it is dropped."""
        with self._lock:
            self._finished = True
            for slot in (self._checkpoint, self._progress):
                slot.has_pending = False

    @property
    def store_writes(self) -> int:
        """Checkpoint and progress writes sent so far (for tests of the rate limit)."""
        return self._checkpoint.writes + self._progress.writes


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
