"""Runs one attempt of one job and turns whatever happened into an `Ack`.

The pipeline: resolve the task, decode and bind the arguments, build the
Context, perform (async on the loop, sync on a thread) under the task's
timeout, then normalize the outcome: a result, a retry after backoff, the
dead-letter queue, a cancellation, or a hand-back at shutdown.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import math
import random
import time
import traceback
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .. import transitions
from ..app import App
from ..backends.base import Ack, AckKind
from ..context import Context
from ..errors import (
    CorruptJobError,
    InvalidArgumentsError,
    JobCancelledError,
    LeaseLostError,
    SerializationError,
    SignatureError,
    StagecrewError,
    UnknownTaskError,
)
from ..job import AttemptError, ClaimedJob, ErrorKind, JobState, RateLimited, Retry, Snooze
from ..observability import tracing
from ..serialization import decode, decode_payload, encode
from ..task import Task
from .job_threads import JobThreads
from .job_transaction import JobTransaction
from .logs import RunningJob, current_job, job_log, job_log_level
from .steps import AttemptSteps

log = logging.getLogger("stagecrew.worker")


class StopReason(StrEnum):
    CANCEL = "cancel"  # cancellation requested: ack as cancelled
    LOST = "lost"  # the lease is gone: no ack, the store has moved on
    SHUTDOWN = "shutdown"  # grace period over: hand the job back


@dataclass(slots=True)
class InFlight:
    """A claimed job from claim until its ack is durable (its lease is renewed till then)."""

    job: ClaimedJob
    ctx: Context | None = None
    task: asyncio.Task[Ack | None] | None = None
    stop_reason: StopReason | None = None
    finished: bool = False
    stuck: bool = field(default=False)
    """A sync attempt that overran its timeout and did not yield to `ctx.cancelled`."""
    committed: bool = False
    """The task's `ctx.transaction()` committed: the job's success is already stored."""
    rate_limited: RateLimited | None = None
    """The attempt raised `RateLimited`: its task's rate limit is to be slowed down."""

    def stop(self, reason: StopReason) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        if self.ctx is not None:
            self.ctx._cancel()
        if self.task is not None and not self.finished and self.job_is_async:
            self.task.cancel()

    job_is_async: bool = False

    def mark_committed(self) -> None:
        self.committed = True


class _Overran(Exception):
    pass


def _from_the_task(exc: BaseException, task: Task[Any, Any] | None) -> BaseException:
    """`exc` with its traceback starting at the task's own frame: the frames of the worker
    that called it (the executor, the job thread, asyncio) say nothing to whoever reads a
    stored error. Left whole when the task's frame is not in it (the failure was not the
    task's: an argument that does not fit, a timeout)."""
    if task is None:
        return exc
    code = getattr(inspect.unwrap(task.fn), "__code__", None)
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code is not code:
        tb = tb.tb_next
    return exc if tb is None else exc.with_traceback(tb)


SNOOZED_TOO_OFTEN = "SnoozedTooOften"
"""The error type of a job dead-lettered for snoozing past its task's `max_snoozes`."""

UNKNOWN_TASK_DELAYS = (1.0, 60.0)
"""A job of an unknown task is handed back for half the time it has waited so far, within these
bounds (seconds): soon at first, as a worker that has the task may be starting, and rarely later."""


def _handed_back(job: ClaimedJob, at: float) -> AttemptError:
    """The error the first hand-back of a job of an unknown task records (compared, so exact)."""
    return AttemptError(
        job.attempt,
        at,
        ErrorKind.UNRUNNABLE,
        UnknownTaskError.__qualname__,
        f"no task named {job.task!r} is registered on the worker that claimed the job; "
        "handed back for a worker that has it",
    )


class Executor:
    def __init__(
        self,
        app: App,
        threads: JobThreads,
        *,
        stuck_grace: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        self.app = app
        self.threads = threads
        self.stuck_grace = stuck_grace
        self.rng = rng or random.Random()
        self.job_log_level = job_log_level()
        """The level of each attempt's start and end lines (`stagecrew.jobs`)."""

    def _error(
        self,
        job: ClaimedJob,
        kind: ErrorKind,
        exc: BaseException | str,
        task: Task[Any, Any] | None = None,
    ) -> AttemptError:
        if isinstance(exc, str):
            return AttemptError(job.attempt, self.app.clock.now(), kind, kind.value, exc)
        return AttemptError(
            attempt=job.attempt,
            at=self.app.clock.now(),
            kind=kind,
            type=type(exc).__qualname__,
            message=str(exc),
            traceback="".join(traceback.format_exception(_from_the_task(exc, task))),
        )

    def _dead_letter(self, job: ClaimedJob, error: AttemptError) -> Ack:
        return Ack.dead_letter(job.ref, error)

    def _failed(
        self,
        job: ClaimedJob,
        task: Task[Any, Any],
        error: AttemptError,
        *,
        retryable: bool,
        delay: float | None = None,
    ) -> Ack:
        target = transitions.after_failure(job.attempt, job.max_attempts, retryable=retryable)
        if target is JobState.SCHEDULED:
            if delay is None or not math.isfinite(delay):
                delay = task.backoff.delay(job.attempt, self.rng)
            # a delay, never a time: the store adds it to its own clock, not to ours
            return Ack.retry(job.ref, error, max(float(delay), 0.0))
        return self._dead_letter(job, error)

    async def run(self, flight: InFlight) -> Ack | None:
        job = flight.job
        token = current_job.set(RunningJob(job.id, job.task, job.queue, job.attempt))
        logged = job_log.isEnabledFor(self.job_log_level)
        if logged:
            job_log.log(
                self.job_log_level, "job %s %s attempt %s started", job.id, job.task, job.attempt
            )
            began = time.monotonic()
        try:
            if tracing.active():
                with tracing.processing(job) as span:
                    ack = await self._attempt(flight)
                    span.ended(ack)
            else:
                ack = await self._attempt(flight)
            if logged:
                job_log.log(
                    self.job_log_level,
                    "job %s %s attempt %s ended after %.1f ms: %s",
                    job.id,
                    job.task,
                    job.attempt,
                    (time.monotonic() - began) * 1000,
                    "no outcome (stopped)" if ack is None else ack.kind,
                )
        finally:
            current_job.reset(token)
        return ack

    async def _attempt(self, flight: InFlight) -> Ack | None:
        ack = await self._run(flight)
        if flight.ctx is not None and flight.ctx._steps is not None:
            await flight.ctx._steps.finish_async()  # the last checkpoint and progress first
        if flight.committed:
            ack = self._committed(flight, ack)
        return ack

    def _committed(self, flight: InFlight, ack: Ack | None) -> Ack:
        """The outcome of an attempt whose transaction already stored its success."""
        if ack is None or ack.kind is not AckKind.COMPLETE:
            log.warning(
                "job %s: the attempt ended %s after its transaction had committed the job as "
                "succeeded; it stays succeeded",
                flight.job.id,
                "without an outcome" if ack is None else f"with outcome {ack.kind}",
            )
        return Ack.complete(flight.job.ref)

    async def _run(self, flight: InFlight) -> Ack | None:
        job = flight.job
        if job.defect is not None:
            return self._unrunnable(
                job, CorruptJobError(f"the stored job is damaged ({job.defect}); it was not run")
            )
        # failures to verify or decode the payload are not worth a retry; an unknown task
        # may be known to a worker of a newer release
        try:
            payload = job.payload
            if self.app._signer is not None:
                payload = self.app._signer.verify(job.task, payload)
            args, kwargs = decode_payload(payload)
            if job.workflow_input is not None:  # a later step: the step before's outcome first
                args = [decode(job.workflow_input, what="the workflow input"), *args]
            task = self.app.get_task(job.task)
        except (SignatureError, SerializationError) as exc:
            return self._unrunnable(job, exc)
        except UnknownTaskError as exc:
            return await self._unknown_task(job, exc)

        flight.job_is_async = task.is_async
        call_kwargs = kwargs
        if task.context_parameter:
            steps = AttemptSteps(self.app.backend, job.ref, self.app.clock, on_loop=task.is_async)
            ctx = Context(
                job_id=job.id,
                task=task.name,
                queue=job.queue,
                attempt=job.attempt,
                max_attempts=job.max_attempts,
                enqueued_at=job.enqueued_at,
                transaction=lambda ctx: JobTransaction(
                    self.app.backend, job.ref, ctx, steps, flight.mark_committed
                ),
                steps=steps,
            )
            flight.ctx = ctx
            if flight.stop_reason is not None:
                ctx._cancel()
            call_kwargs = {**kwargs, task.context_parameter: ctx}

        try:
            if task.is_async:
                result = await self._perform_async(task, args, call_kwargs)
            else:
                result = await self._perform_sync(flight, task, args, call_kwargs)
        except asyncio.CancelledError:
            if flight.stop_reason is None:
                raise
            return self._stopped(flight)
        except _Overran:
            flight.stuck = True
            return self._failed(
                job,
                task,
                self._error(
                    job,
                    ErrorKind.TIMEOUT,
                    f"timed out after {task.timeout}s and did not return within "
                    f"{self.stuck_grace}s of being cancelled; the worker process was recycled",
                ),
                retryable=True,
            )
        except TimeoutError as exc:
            if getattr(exc, "_stagecrew_timeout", False):
                return self._failed(
                    job,
                    task,
                    self._error(job, ErrorKind.TIMEOUT, f"timed out after {task.timeout}s"),
                    retryable=True,
                )
            return self._failure(job, task, exc)
        except LeaseLostError as exc:
            log.warning("job %s: %s", job.id, exc)
            return None
        except JobCancelledError as exc:
            if exc.job_id not in (None, job.id):  # another job's end, let through by the task
                return self._failure(job, task, exc)
            return Ack.cancel(job.ref, self._error(job, ErrorKind.CANCELLED, exc))
        except Snooze as exc:
            if isinstance(exc, RateLimited):
                flight.rate_limited = exc
            return self._snoozed(job, task, exc)
        except Retry as exc:
            return self._failed(
                job,
                task,
                self._error(job, ErrorKind.ERROR, exc, task),
                retryable=True,
                delay=exc.in_,
            )
        except Exception as exc:
            if isinstance(exc, TypeError):
                # Arguments are checked only when a call fails this way: Python
                # rejects a call whose arguments do not bind before any task code runs.
                try:
                    task.bind(args, kwargs)
                except InvalidArgumentsError as invalid:
                    return self._unrunnable(job, invalid)
            return self._failure(job, task, exc)

        if flight.stop_reason is not None:
            return self._stopped(flight)
        if result is None:
            return Ack.complete(job.ref)
        try:
            encoded = encode(result, what=f"the result of task {task.name!r}").decode()
        except StagecrewError as exc:
            return self._dead_letter(job, self._error(job, ErrorKind.ERROR, exc))
        return Ack.complete(job.ref, encoded)

    async def _unknown_task(self, job: ClaimedJob, unknown: UnknownTaskError) -> Ack:
        """Hand the job back for a worker that has its task, until `App.unknown_task_window` ends.

        During a rolling deploy producers may know a task before every worker does. The
        hand-back counts neither an attempt nor a lost worker, and its delay grows with
        the time the job has waited. The first hand-back records an error saying which
        task is missing; its time starts the window, read back here from the job's errors
        (a rare path, worth one read).
        """
        window = self.app.unknown_task_window
        if window <= 0:
            return self._unrunnable(job, unknown)
        now = self.app.clock.now()
        try:
            stored = await self.app.backend.get_async(job.id)
        except Exception as exc:
            log.warning(
                "job %s: no task named %r on this worker; handed back (its errors could not be "
                "read: %s)",
                job.id,
                job.task,
                exc,
            )
            return Ack.release(job.ref, delay=min(UNKNOWN_TASK_DELAYS[0], window))
        # while the job waits, its last error is the one its first hand-back recorded
        recorded = stored.errors[-1] if stored is not None and stored.errors else None
        if recorded is None or recorded != _handed_back(job, recorded.at):
            log.warning(
                "job %s: no task named %r on this worker; handed back for a worker that has it "
                "(dead-lettered if none runs it within %gs)",
                job.id,
                job.task,
                window,
            )
            return Ack.release(
                job.ref, delay=min(UNKNOWN_TASK_DELAYS[0], window), error=_handed_back(job, now)
            )
        waited = now - recorded.at
        if waited >= window:
            error = AttemptError(
                job.attempt,
                now,
                ErrorKind.UNRUNNABLE,
                type(unknown).__qualname__,
                f"no task named {job.task!r} is registered on any worker that claimed the job "
                f"within {window:g}s of its first hand-back (see unknown_task_window)",
            )
            log.error("job %s cannot run, dead-lettered: %s", job.id, error.message)
            return self._dead_letter(job, error)
        low, high = UNKNOWN_TASK_DELAYS
        delay = min(max(low, waited / 2), high, window - waited)
        log.info("job %s: no task named %r on this worker; handed back again", job.id, job.task)
        return Ack.release(job.ref, delay=delay)

    def _snoozed(self, job: ClaimedJob, task: Task[Any, Any], snooze: Snooze) -> Ack:
        """Run again later, the attempt given back; past `max_snoozes`, the dead-letter queue."""
        if transitions.after_snooze(job.snoozes, task.max_snoozes) is JobState.SCHEDULED:
            log.info("job %s %s snoozed for %gs", job.id, task.name, snooze.seconds)
            return Ack.snooze(job.ref, snooze.seconds)
        error = AttemptError(
            job.attempt,
            self.app.clock.now(),
            ErrorKind.ERROR,
            SNOOZED_TOO_OFTEN,
            f"task {task.name!r} snoozed its job more than max_snoozes={task.max_snoozes} "
            f"times ({snooze}); raise max_snoozes on the task if it needs to wait longer",
        )
        log.error("job %s moved to the dead-letter queue: %s", job.id, error.message)
        return self._dead_letter(job, error)

    def _unrunnable(self, job: ClaimedJob, exc: Exception) -> Ack:
        error = self._error(job, ErrorKind.UNRUNNABLE, exc)
        log.error("job %s cannot run, dead-lettered: %s", job.id, error.message)
        return self._dead_letter(job, error)

    def _failure(self, job: ClaimedJob, task: Task[Any, Any], exc: Exception) -> Ack:
        retryable = task.retryable(exc)
        error = self._error(job, ErrorKind.ERROR, exc, task)
        ack = self._failed(job, task, error, retryable=retryable)
        level = logging.WARNING if ack.kind is AckKind.RETRY else logging.ERROR
        log.log(
            level,
            "job %s %s attempt %s/%s failed (%s: %s), %s",
            job.id,
            task.name,
            job.attempt,
            job.max_attempts,
            type(exc).__name__,
            error.message,  # made storable, so printable too
            f"will retry in {ack.delay or 0.0:.1f}s"
            if ack.kind is AckKind.RETRY
            else "moved to the dead-letter queue",
        )
        return ack

    def _stopped(self, flight: InFlight) -> Ack | None:
        job = flight.job
        if flight.stop_reason is StopReason.CANCEL:
            return Ack.cancel(
                job.ref, self._error(job, ErrorKind.CANCELLED, "cancelled on request while running")
            )
        if flight.stop_reason is StopReason.SHUTDOWN:
            return Ack.release(job.ref)
        return None

    async def _perform_async(
        self, task: Task[Any, Any], args: list[Any], kwargs: dict[str, Any]
    ) -> Any:
        if task.timeout is None:
            return await task.fn(*args, **kwargs)
        try:
            async with asyncio.timeout(task.timeout) as scope:
                return await task.fn(*args, **kwargs)
        except TimeoutError as exc:
            if scope.expired():
                exc._stagecrew_timeout = True  # type: ignore[attr-defined]
            raise

    async def _perform_sync(
        self, flight: InFlight, task: Task[Any, Any], args: list[Any], kwargs: dict[str, Any]
    ) -> Any:
        call = functools.partial(contextvars.copy_context().run, task.fn, *args, **kwargs)
        future = self.threads.submit(call)
        if task.timeout is None:
            return await future
        # asyncio.wait, not wait_for: the future must outlive the timeout, for the grace below
        await asyncio.wait((future,), timeout=task.timeout)
        if future.done():
            return future.result()
        # overran: ask it to stop, then give it a short grace to yield
        if flight.ctx is not None:
            flight.ctx._cancel()
        await asyncio.wait((future,), timeout=self.stuck_grace)
        if not future.done():
            future.cancel()  # its outcome, whenever it comes, is dropped
            raise _Overran
        if not future.cancelled():
            future.exception()  # retrieved: what it raised after the timeout is not reported
        err = TimeoutError(f"timed out after {task.timeout}s")
        err._stagecrew_timeout = True  # type: ignore[attr-defined]
        raise err
