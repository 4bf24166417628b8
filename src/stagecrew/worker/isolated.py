"""Runs one job in a process of its own, so that a crash there condemns that job alone.

A job one lost worker away from `App.max_worker_losses` (a poison suspect)
runs in a child process spawned for it, while its worker holds its lease and
goes on serving other jobs. The child loads the app from the worker's app
reference, runs the job with the ordinary `Executor` and writes the `Ack`
back through a pipe. A child that dies without one took a process down by
itself: the worker records the loss as a rescue would (`crash_verdict`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import pickle
import random
import select
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

from .. import transitions
from ..app import App
from ..backends.base import Ack, AckKind
from ..job import AttemptError, ClaimedJob, ErrorKind, JobState
from ..retry import Backoff
from .executor import Executor, InFlight, StopReason
from .job_threads import JobThreads
from .logs import RunningJob, configure, current_job

log = logging.getLogger("stagecrew.worker")

PARENT_CHECK_INTERVAL = 0.1
"""How often a child looks whether its worker is still there (it exits when not)."""
READ_SIZE = 1 << 16
EXIT_POLL_INTERVAL = 0.01


@dataclass(frozen=True, slots=True)
class ChildOutcome:
    """What the child sends back: the attempt's Ack, and whether its transaction committed it."""

    ack: Ack | None
    committed: bool


@dataclass(frozen=True, slots=True)
class ChildCouldNotStart:
    """The child could not load the app: nothing ran, and the job is not to blame."""

    reason: str


# -- the child -------------------------------------------------------------------------
def run_in_child(
    app_ref: str,
    job: ClaimedJob,
    writer: Connection,
    log_level: int,
    stuck_grace: float,
    worker_pid: int,
) -> None:
    """Entry point of the child: run `job` once and write its outcome to `writer`.

    SIGTERM and SIGINT are ignored: only the worker decides when the job stops
    (a platform that signals every process of the service at once must not
    make a killed child look like a crash). The child exits at once when its
    worker is gone, since nothing renews the job's lease any more.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure(log_level)
    _exit_with_parent(worker_pid)
    from ..cli.loading import load_app

    message: ChildOutcome | ChildCouldNotStart
    try:
        app = load_app(app_ref)
    except Exception as exc:
        log.error("job %s: cannot load the app %r to run it alone: %s", job.id, app_ref, exc)
        message = ChildCouldNotStart(f"{type(exc).__name__}: {exc}")
    else:
        flight = InFlight(job)
        threads = JobThreads(1)
        ack: Ack | None = None
        try:
            ack = asyncio.run(Executor(app, threads, stuck_grace=stuck_grace).run(flight))
        except Exception:  # a bug in the executor itself: the worker drops the attempt
            log.exception("job %s: unexpected executor error", job.id)
        message = ChildOutcome(ack, flight.committed)
    _write_all(writer.fileno(), pickle.dumps(message))
    writer.close()
    logging.shutdown()
    # a sync job that overran its timeout keeps a thread alive: do not wait for it
    os._exit(0)


def _exit_with_parent(parent: int) -> None:
    """Exit as soon as the process `parent` is no longer ours (it died: we were adopted)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_INTERVAL)
        os._exit(1)

    threading.Thread(target=watch, name="stagecrew-parent-watch", daemon=True).start()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# -- the worker's side ----------------------------------------------------------------
async def _readable(*fds: int) -> None:
    """Wait until one of `fds` is readable (data, end of file, or a process exited)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    for fd in fds:
        loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        for fd in fds:
            loop.remove_reader(fd)


class JobProcess:
    """The worker's handle on the child running one job."""

    def __init__(self, app_ref: str, job: ClaimedJob, *, stuck_grace: float) -> None:
        context = multiprocessing.get_context("spawn")
        reader, writer = context.Pipe(duplex=False)
        self._reader = reader
        self.process = context.Process(
            target=run_in_child,
            args=(
                app_ref,
                job,
                writer,
                logging.getLogger("stagecrew").getEffectiveLevel(),
                stuck_grace,
                os.getpid(),
            ),
            name=f"{multiprocessing.current_process().name}:job-{job.id}",
            daemon=False,
        )
        try:
            self.process.start()
        except BaseException:
            reader.close()
            raise
        finally:
            writer.close()  # the child holds the only write end: its exit is our end of file
        os.set_blocking(reader.fileno(), False)

    @property
    def pid(self) -> int | None:
        return self.process.pid

    async def outcome(self) -> ChildOutcome | ChildCouldNotStart | None:
        """What the child sent, once it exited; None if it died without sending it."""
        fd = self._reader.fileno()
        sentinel = self.process.sentinel
        chunks: list[bytes] = []
        while True:
            await _readable(fd, sentinel)
            exited = self.process.exitcode is not None
            if _read_available(fd, chunks) or exited:
                # at its end of file, or gone (a process it started may hold the pipe open)
                break
            if _readable_now(sentinel):  # exiting: let it finish
                await asyncio.sleep(EXIT_POLL_INTERVAL)
        await self.reap()
        try:
            message = pickle.loads(b"".join(chunks)) if chunks else None
        except Exception:  # cut short: the child died while writing it
            return None
        if isinstance(message, ChildOutcome | ChildCouldNotStart):
            return message
        return None

    def describe_exit(self) -> str:
        code = self.process.exitcode
        if code is None:
            return "is still running"
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"was killed by {signal.Signals(-code).name}"
            return f"was killed by signal {-code}"
        return f"exited with code {code} without an outcome"

    async def reap(self) -> None:
        """Wait for the child to exit and release what it holds (after `kill` or its own end)."""
        if self.process.exitcode is None:
            await _readable(self.process.sentinel)
        while self.process.exitcode is None:  # its descriptors closed before it exited
            await asyncio.sleep(EXIT_POLL_INTERVAL)
        self.process.join()

    async def kill(self) -> None:
        if self.process.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        await self.reap()

    def close(self) -> None:
        self._reader.close()
        with contextlib.suppress(ValueError):  # still running: a cancelled kill left it
            self.process.close()


def _readable_now(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def _read_available(fd: int, chunks: list[bytes]) -> bool:
    """Append what can be read from `fd` without waiting; True at its end of file."""
    while True:
        try:
            chunk = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return False
        if not chunk:
            return True
        chunks.append(chunk)


# -- verdicts ---------------------------------------------------------------------------
def crash_verdict(
    job: ClaimedJob, max_lost: int, now: float, *, how: str, cancel_requested: bool = False
) -> Ack:
    """The Ack for a job whose own process died under it: the loss counted as a rescue would.

    A rescue would count one more lost worker and let `transitions.after_lease_expired`
    decide; the same decision is written here as an ordinary Ack, so no engine needs a
    new operation. For a suspect, one more loss reaches the limit: it goes dead.
    """
    target = transitions.after_lease_expired(
        job.attempt, job.max_attempts, job.lost + 1, max_lost, cancel_requested=cancel_requested
    )
    error = AttemptError(
        attempt=job.attempt,
        at=now,
        kind=ErrorKind.CANCELLED if target is JobState.CANCELLED else ErrorKind.LOST,
        type="WorkerLost",
        message=f"the process running it alone {how} (worker lost)",
    )
    if target is JobState.DEAD:
        return Ack.dead_letter(job.ref, error)
    if target is JobState.CANCELLED:
        return Ack.cancel(job.ref, error)
    return Ack.retry(job.ref, error)  # available again at once, the attempt counted


def stopped_ack(job: ClaimedJob, reason: StopReason, now: float) -> Ack | None:
    """The Ack for a job whose child the worker stopped (the same as `Executor` gives)."""
    if reason is StopReason.CANCEL:
        return Ack.cancel(
            job.ref,
            AttemptError(
                job.attempt,
                now,
                ErrorKind.CANCELLED,
                ErrorKind.CANCELLED.value,
                "cancelled on request while running",
            ),
        )
    if reason is StopReason.SHUTDOWN:
        return Ack.release(job.ref)
    return None


def start_failed_ack(
    job: ClaimedJob, backoff: Backoff, now: float, reason: str, rng: random.Random
) -> Ack:
    """No process could be started for the job: the attempt fails, retried after backoff."""
    error = AttemptError(
        job.attempt,
        now,
        ErrorKind.ERROR,
        "IsolationFailed",
        f"could not start a process of its own to run it: {reason}",
    )
    target = transitions.after_failure(job.attempt, job.max_attempts, retryable=True)
    if target is JobState.SCHEDULED:
        return Ack.retry(job.ref, error, backoff.delay(job.attempt, rng))
    return Ack.dead_letter(job.ref, error)


# -- the whole run ----------------------------------------------------------------------
async def run_alone(
    app: App, app_ref: str, flight: InFlight, *, stuck_grace: float, rng: random.Random
) -> Ack | None:
    """Run `flight`'s job in a child and turn what happened into its Ack (None: no outcome).

    Cancelling the calling task (the worker does it on a cancellation request,
    a lost lease or at the end of the grace period) kills the child.
    """
    job = flight.job
    token = current_job.set(RunningJob(job.id, job.task, job.queue, job.attempt))
    try:
        return await _run_alone(app, app_ref, flight, stuck_grace=stuck_grace, rng=rng)
    finally:
        current_job.reset(token)


async def _run_alone(
    app: App, app_ref: str, flight: InFlight, *, stuck_grace: float, rng: random.Random
) -> Ack | None:
    job = flight.job
    flight.job_is_async = True  # a child can be stopped at any moment, like an async task
    if flight.stop_reason is not None:
        return stopped_ack(job, flight.stop_reason, app.clock.now())
    task = app.tasks.get(job.task)
    backoff = task.backoff if task is not None else Backoff()
    try:
        child = JobProcess(app_ref, job, stuck_grace=stuck_grace)
    except OSError as exc:
        log.error("job %s: cannot start a process to run it alone: %s", job.id, exc)
        return start_failed_ack(job, backoff, app.clock.now(), str(exc), rng)
    pid = child.pid
    log.warning(
        "job %s: %d workers were lost while it ran; running it alone in process %s",
        job.id,
        job.lost,
        pid,
    )
    try:
        try:
            message = await child.outcome()
            how = child.describe_exit()
        except asyncio.CancelledError:
            await child.kill()
            if flight.stop_reason is None:
                raise
            log.info("job %s: stopped its process (%s)", job.id, flight.stop_reason)
            return stopped_ack(job, flight.stop_reason, app.clock.now())
    finally:
        if child.process.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                child.process.kill()
        child.close()
    if isinstance(message, ChildCouldNotStart):
        return start_failed_ack(job, backoff, app.clock.now(), message.reason, rng)
    if message is None:
        ack = crash_verdict(
            job,
            app.max_worker_losses,
            app.clock.now(),
            how=f"(pid {pid}) {how}",
            cancel_requested=flight.stop_reason is StopReason.CANCEL,
        )
        log.error(
            "job %s: the process running it alone %s: %s",
            job.id,
            how,
            "dead-lettered as a poison job" if ack.kind is AckKind.DEAD_LETTER else str(ack.kind),
        )
        return ack
    if message.committed:
        flight.mark_committed()
    return message.ack
