"""One worker process: claim in batches, run, renew leases, ack in batches, stop cleanly.

Async tasks run on this process's event loop; sync tasks on a thread pool of
`concurrency` threads. The claimer never claims more jobs than it has free
slots, so a claimed job never waits in a local buffer while its lease ticks.

Stopping: the first stop request, whatever its route (SIGTERM or SIGINT sent
to this process, or the supervisor's relay), is graceful; repeats of it are
the same request. Only a second signal sent to this process itself exits at
once (see `_on_signal`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import signal
import socket
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..app import App
from ..backends import redact_url
from ..backends.base import Ack, AckKind
from ..clock import checked_seconds
from ..errors import BackendError, ConfigurationError, SchemaOutOfDateError
from ..job import ClaimedJob, JobRef
from ..maintenance.aging import age_waiting
from ..maintenance.alert_evaluation import DEFAULT_INTERVAL as DEFAULT_ALERT_INTERVAL
from ..maintenance.alert_evaluation import AlertEvaluator
from ..maintenance.periodic import every
from ..maintenance.pruner import prune_finished
from ..maintenance.rescuer import rescue_expired
from ..maintenance.scheduler import Scheduler
from ..observability.history import FLUSH_INTERVAL, OutcomeHistory
from ..observability.outcomes import LOST, outcome_of
from ..observability.presence import Presence
from . import defaults
from .admission import Admission, Admitted
from .completer import Completer
from .executor import Executor, InFlight, StopReason
from .faults import FaultPoint, Faults
from .isolated import run_alone
from .job_threads import JobThreads
from .parent import ParentWatch
from .supervisor import RELAYED_STOP

if TYPE_CHECKING:  # imported by whoever turns metrics on: prometheus-client is not needed else
    from ..observability.metrics import WorkerMetrics

log = logging.getLogger("stagecrew.worker")

EXIT_OK = 0
EXIT_RECYCLE = 75
"""Exit code of a worker that recycled itself (a sync job would not stop); restart it."""

MIN_IDLE_WAIT = 0.02
FETCH_ERROR_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
START_RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0)
"""Waits between tries to reach the store at start; the last one repeats."""
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
DRAIN_GIVE_UP = 10.0
"""Seconds of failing store calls after which `drain` raises instead of retrying for ever
(`run` keeps retrying: a long-running worker outlives an outage)."""
HAND_BACK_WAIT = 5.0
"""Seconds a stopping worker waits for the async jobs it cancelled to return."""
FINAL_FLUSH_WAIT = 5.0
"""Least seconds a stopping worker waits for its last outcomes to be written (a lease, if longer);
past that, those jobs run again once their leases expire."""
LAST_COUNTS_WAIT = 5.0
"""Seconds a stopping worker waits for its last job counts to reach the store."""
BACKGROUND_STOP_WAIT = 15.0
"""Seconds a stopping worker waits for its background tasks to end once told to: each ends
after the store call it is in, which the store's own timeouts bound (Redis: 10 s)."""


def make_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Worker:
    def __init__(
        self,
        app: App,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int = defaults.CONCURRENCY,
        lease_seconds: float = 30.0,
        grace: float = 30.0,
        poll_interval: float = 1.0,
        heartbeat_interval: float | None = None,
        rescue_interval: float | None = None,
        prune_interval: float = 60.0,
        stuck_grace: float = 5.0,
        claim_batch: int = 100,
        watch_parent: bool = False,
        worker_id: str | None = None,
        faults: Faults | None = None,
        app_ref: str | None = None,
        run_schedules: bool = True,
        process_name: str | None = None,
        alert_interval: float = DEFAULT_ALERT_INTERVAL,
        metrics: WorkerMetrics | None = None,
        spread_cpus: frozenset[int] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        lease_seconds = checked_seconds(lease_seconds, "lease_seconds", positive=True)
        grace = checked_seconds(grace, "grace")
        poll_interval = checked_seconds(poll_interval, "poll_interval", positive=True)
        prune_interval = checked_seconds(prune_interval, "prune_interval", positive=True)
        stuck_grace = checked_seconds(stuck_grace, "stuck_grace")
        if heartbeat_interval is not None:
            heartbeat_interval = checked_seconds(
                heartbeat_interval, "heartbeat_interval", positive=True
            )
        if rescue_interval is not None:
            rescue_interval = checked_seconds(rescue_interval, "rescue_interval", positive=True)
        self.app = app
        self.queues = (
            list(queues)
            if queues
            else sorted({t.queue for t in app.tasks.values()} | {app.default_queue})
        )
        self.concurrency = concurrency
        self.limits = app.claim_limits(self.queues)
        """The concurrency caps every claim of this worker sends (those its code declares)."""
        self.lease_seconds = lease_seconds
        self.grace = grace
        self.poll_interval = poll_interval
        self.heartbeat_interval = heartbeat_interval or max(lease_seconds / 3, 0.01)
        self.rescue_interval = rescue_interval or max(lease_seconds / 2, 0.05)
        self.prune_interval = prune_interval
        self.claim_batch = claim_batch
        self.watch_parent = watch_parent
        """A supervisor's child: stop when it vanishes, and take its relayed stop requests."""
        self._parent = ParentWatch()
        self.faults = faults if faults is not None else Faults.from_env()
        """Crash points for tests (see `stagecrew.worker.faults`); None in production."""
        self.app_ref = app_ref
        """Where a process of its own finds the app (`module:attr`), to run a suspect alone.

        None (a worker embedded in a program): a poison suspect runs like any other job.
        """
        self.run_schedules = run_schedules
        """Fire the app's schedules (`app.periodic`, `app.schedule`) from this worker; every
        worker may, as the store makes each tick one job (see docs/schedules.md)."""
        self.metrics = metrics
        """Where this worker counts its jobs, wait and run times (docs/metrics.md); None: off."""
        self.id = worker_id or make_worker_id()
        """The lease owner of this worker's claims; a supervisor names its children itself, so
        it can release their claims when they die (`Backend.release_worker`)."""
        self.presence = Presence(
            lambda: app.backend,
            self.id,
            name=process_name,
            queues=self.queues,
            concurrency=concurrency,
            busy=lambda: self._running,
            interval=self.heartbeat_interval,
        )
        """Its record in the worker registry, and (with `process_name`) its process title."""
        alert_interval = checked_seconds(alert_interval, "alert_interval", positive=True)
        rules = app.alert_rules()
        self.alerts = (
            AlertEvaluator(lambda: app.backend, rules, interval=alert_interval) if rules else None
        )
        """Evaluates the app's alert rules (one evaluation per interval fleet-wide)."""
        self.history = OutcomeHistory(lambda: app.backend)
        """Its counts of finished attempts, added to the store's history every few seconds."""
        self._threads = JobThreads(concurrency, spread=spread_cpus)
        """`spread_cpus`: this process is kept to one core (`cpu_affinity`); its job threads
        but the first may run on any of these."""
        self.executor = Executor(app, self._threads, stuck_grace=stuck_grace)
        self._inflight: dict[int, InFlight] = {}
        self._rng = random.Random()
        self._running = 0
        self._slot_free = asyncio.Event()
        self._outcome_written = asyncio.Event()
        """Set when an outcome of this worker reached the store: with concurrency caps, a
        slot may have come free. Cleared before each claim, so one written during a claim
        still wakes the idle wait after it."""
        self._stopping = asyncio.Event()
        self._stop_background = asyncio.Event()
        """Set when the heartbeat and maintenance tasks must end (see `_end_background`)."""
        self._recycle = False
        self._direct_signals = 0
        self._completer: Completer | None = None
        self._rates = (
            Admission(app) if any(t.rate_limit or t.circuit for t in app.tasks.values()) else None
        )
        """Rate limits and circuit breakers, if this worker's code declares any."""
        self._held: set[JobRef] = set()
        """Claims handed back by a limit (no rate-limit token, an open circuit), until that
        is written."""
        self.processed = 0
        self.held = 0
        """Jobs this worker handed back to wait on a limit (not in `processed`)."""
        self.acked: dict[AckKind, int] = dict.fromkeys(AckKind, 0)

    # -- public ------------------------------------------------------------------
    def request_stop(self) -> None:
        """Stop claiming; running jobs get `grace` seconds to finish."""
        self._stopping.set()
        self._slot_free.set()

    async def run(
        self,
        *,
        install_signal_handlers: bool = True,
        signals_before_start: Sequence[int] = (),
    ) -> int:
        """Run until stopped; returns the process exit code to use.

        `signals_before_start` are signals the process received before this
        worker could handle them (its supervisor's child collects them while
        the app loads); they are handled once this worker's handlers are in
        place, so no stop request is lost.
        """
        loop = asyncio.get_running_loop()
        handled = self._handled_signals() if install_signal_handlers else ()
        for sig in handled:
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            for signum in list(signals_before_start):
                self._on_signal(signal.Signals(signum))
            log.info(
                "worker %s started: queues=%s concurrency=%d lease=%.1fs on %s",
                self.id,
                ",".join(self.queues),
                self.concurrency,
                self.lease_seconds,
                redact_url(self.app.url),
            )
            if not await self._open_store():
                log.info("worker %s stopped before it could reach its store", self.id)
                return EXIT_OK
            return await self._serve()
        finally:
            self._threads.shutdown(wait=False)
            for sig in handled:
                loop.remove_signal_handler(sig)

    def _handled_signals(self) -> tuple[signal.Signals, ...]:
        return (*STOP_SIGNALS, RELAYED_STOP) if self.watch_parent else STOP_SIGNALS

    async def _open_store(self) -> bool:
        """Reach the store and run its start-up checks; False if told to stop first.

        A store that is down when the worker starts is not a mistake in the
        set-up: the worker logs why at ERROR level on every failed try and
        tries again with backoff (`START_RETRY_DELAYS`), so it starts by itself
        once the store is up. A set-up that cannot work (`ConfigurationError`,
        or a schema that needs `stagecrew migrate`) is raised instead.
        """
        failures = 0
        failing_since = time.monotonic()
        while not self._stopping.is_set():
            if self.watch_parent and self._parent.gone():
                log.warning("supervisor is gone; shutting down")
                return False
            try:
                warnings = await asyncio.to_thread(self._check_store)
            except (ConfigurationError, SchemaOutOfDateError):
                raise
            except Exception as exc:
                delay = START_RETRY_DELAYS[min(failures, len(START_RETRY_DELAYS) - 1)]
                failures += 1
                log.error(
                    "cannot start: the store at %s cannot be used yet (%s); trying again in %.1fs",
                    redact_url(self.app.url),
                    exc,
                    delay,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                continue
            if failures:
                log.info(
                    "store reachable: started after %d failed tries over %.1fs",
                    failures,
                    time.monotonic() - failing_since,
                )
            for warning in warnings:
                log.warning("%s", warning)
            return True
        return False

    def _check_store(self) -> list[str]:
        return self.app.backend.preflight()

    def _aging_task(self) -> list[asyncio.Task[None]]:
        """The starvation guard's pass (`App.priority_aging`), unless it is turned off."""
        aging = self.app.priority_aging
        if aging is None:
            return []
        step = every(
            aging.pass_interval,
            lambda: age_waiting(self.app.backend, aging),
            self._stop_background,
            name="priority aging",
        )
        return [asyncio.create_task(step, name="priority aging")]

    async def _serve(self) -> int:
        self._completer = Completer(self.app.backend, self._on_written, faults=self.faults)
        background = [
            asyncio.create_task(self._completer.run(), name="completer"),
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            asyncio.create_task(
                every(
                    self.rescue_interval,
                    self._rescue,
                    self._stop_background,
                    name="rescue",
                ),
                name="rescue",
            ),
            *self._aging_task(),
            asyncio.create_task(self.presence.run(self._stop_background), name="presence"),
            asyncio.create_task(
                every(FLUSH_INTERVAL, self.history.flush, self._stop_background, name="job counts"),
                name="job counts",
            ),
            asyncio.create_task(
                every(
                    self.prune_interval,
                    lambda: prune_finished(self.app.backend, self.app.retention),
                    self._stop_background,
                    name="prune",
                ),
                name="prune",
            ),
        ]
        if self.alerts is not None:
            background.append(
                asyncio.create_task(self.alerts.run(self._stop_background), name="alerts")
            )
        if self.metrics is not None:
            self.metrics.slots.set(self.concurrency)
            background.append(
                asyncio.create_task(
                    every(
                        self.metrics.flush_interval,
                        self._flush_metrics,
                        self._stop_background,
                        name="metrics",
                    ),
                    name="metrics",
                )
            )
        if self.run_schedules and self.app.schedules:
            scheduler = Scheduler(self.app)
            background.append(
                asyncio.create_task(scheduler.run(self._stop_background), name="schedules")
            )
        try:
            await self._claim_loop(drain=False)
            await self._shutdown()
        finally:
            await self._end_background(background)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.history.flush(), LAST_COUNTS_WAIT)
            await self._flush_metrics()
            await self.presence.stopped()
        log.info("worker %s stopped after %d jobs", self.id, self.processed)
        return EXIT_RECYCLE if self._recycle else EXIT_OK

    async def drain(self) -> int:
        """Run every due job until none is left, then return how many ran.

        Jobs scheduled for later (including retries after backoff) stay
        scheduled; move the clock and drain again to run them. A store that
        keeps failing (every claim for `DRAIN_GIVE_UP` seconds, or outcomes
        that cannot be written) raises `BackendError` rather than a hang.
        """
        self._completer = Completer(self.app.backend, self._on_written)
        completer = asyncio.create_task(self._completer.run())
        before = self.processed
        try:
            await self._claim_loop(drain=True)
            self._completer.close()
            try:
                await asyncio.wait_for(completer, DRAIN_GIVE_UP)
            except TimeoutError:
                raise BackendError(
                    f"drain gave up: {self._completer.pending} outcome(s) could not be written "
                    f"to the store within {DRAIN_GIVE_UP:g}s (see the warnings above); those "
                    "jobs run again once their leases expire"
                ) from None
            await self.history.flush()
        finally:
            self._completer.abandon()
            completer.cancel()
            self._threads.shutdown(wait=True)
            await self._flush_metrics()
        return self.processed - before

    # -- claiming ----------------------------------------------------------------
    async def _claim_loop(self, *, drain: bool) -> None:
        backend = self.app.backend
        failures = 0
        failing_since = 0.0
        idle_wait: float | None = None  # after a claim that found nothing: wait, then claim
        while not self._stopping.is_set():
            # Finished jobs whose outcome is not yet written still hold a lease: while the
            # store is slow to take acks, stop claiming rather than pile up leased jobs.
            free = min(
                self.concurrency - self._running,
                2 * self.concurrency - len(self._inflight),
            )
            if free <= 0:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            limit = min(free, self.claim_batch)
            self._outcome_written.clear()
            try:
                if idle_wait is None:
                    jobs = await backend.claim_async(
                        self.queues, self.id, limit, self.lease_seconds, self.limits
                    )
                else:
                    woken = await self._claim_when_woken(limit, idle_wait)
                    if woken is None:  # an outcome of ours was written: claim at once
                        idle_wait = None
                        continue
                    jobs = woken
            except Exception as exc:
                idle_wait = None
                delay = FETCH_ERROR_DELAYS[min(failures, len(FETCH_ERROR_DELAYS) - 1)]
                if not failures:
                    failing_since = time.monotonic()
                elif drain and time.monotonic() - failing_since >= DRAIN_GIVE_UP:
                    raise BackendError(
                        f"drain gave up: every claim failed for {DRAIN_GIVE_UP:g}s "
                        f"({failures} tries); the last error: {exc}"
                    ) from exc
                failures += 1
                log.warning("claim failed (%s); retrying in %.2fs", exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                continue
            if failures:
                log.info(
                    "store reachable again: claim works after %d failed tries over %.1fs",
                    failures,
                    time.monotonic() - failing_since,
                )
            failures = 0
            idle_wait = None
            if jobs and self.faults is not None:
                self.faults.at(FaultPoint.AFTER_CLAIM)
            if jobs and self.metrics is not None:
                self.metrics.claimed(jobs)
            if jobs and self._rates is not None:
                # the tokens are drawn while this loop claims on: each job waits for its
                # batch's draw (`_execute`), which serves the batches one at a time
                admission = asyncio.ensure_future(self._rates.admit(jobs))
                for job in jobs:
                    flight = InFlight(job)
                    self._inflight[job.id] = flight
                    self._start(flight, admission)
                continue
            for job in jobs:
                flight = InFlight(job)
                self._inflight[job.id] = flight
                self._start(flight)
            if jobs:
                continue
            if drain:
                if self._running == 0 and not self._inflight:
                    return
                self._slot_free.clear()
                try:
                    await asyncio.wait_for(self._slot_free.wait(), DRAIN_GIVE_UP)
                except TimeoutError:
                    if self._running == 0:  # nothing runs, and no outcome got written
                        raise BackendError(
                            f"drain gave up: {len(self._inflight)} outcome(s) could not be "
                            f"written to the store within {DRAIN_GIVE_UP:g}s (see the warnings "
                            "above); those jobs run again once their leases expire"
                        ) from None
                continue
            idle_wait = self.poll_interval
            with contextlib.suppress(Exception):
                due = await backend.next_run_at_async(self.queues)
                if due is not None:
                    ahead = due - self.app.clock.now()
                    # With caps, work due now that the claim left is (most likely) capped:
                    # waiting for it would spin; a slot comes free with an outcome (ours wakes
                    # this wait) or within poll_interval.
                    if self.limits is None or ahead > 0:
                        # never 0: a store whose clock is behind ours would make this spin
                        idle_wait = min(idle_wait, max(MIN_IDLE_WAIT, ahead))

    async def _claim_when_woken(self, limit: int, timeout: float) -> list[ClaimedJob] | None:
        """Wait for work and claim it (`Backend.wait_and_claim`), or nothing once stopping.

        A stop cancels the wait; the store hands back what a claim took meanwhile. With
        concurrency caps an outcome of ours written meanwhile ends the wait too, and None
        says so: a capped job may have got a slot.
        """
        waiter = asyncio.create_task(
            self.app.backend.wait_and_claim(
                self.queues, self.id, limit, self.lease_seconds, timeout, self.limits
            )
        )
        wakers = {asyncio.create_task(self._stopping.wait())}
        if self.limits is not None:
            wakers.add(asyncio.create_task(self._outcome_written.wait()))
        try:
            await asyncio.wait({waiter, *wakers}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waker in wakers:
                waker.cancel()
            waiter.cancel()
        try:
            return await waiter
        except asyncio.CancelledError:
            if not self._stopping.is_set():
                if self._outcome_written.is_set():
                    return None
                raise  # this task itself was cancelled
            return []

    async def _admitted(
        self, flight: InFlight, admission: asyncio.Future[Admitted]
    ) -> float | None:
        """Seconds until `flight` may start, once its batch's admission is done (its circuit
        let it through, its rate-limit token is there); None if it was handed back (`_hold`)."""
        try:
            # shielded: the draw is its batch's, not this job's alone to cancel
            decided = await asyncio.shield(admission)
        except Exception:  # a bug in the admission itself: the job runs, unlimited
            log.exception("job %s: rate-limit admission failed", flight.job.id)
            return 0.0
        held = decided.held.get(flight.job.id)
        if held is not None:
            self._hold(flight, held)
            return None
        return decided.start.get(flight.job.id, 0.0)

    def _hold(self, flight: InFlight, delay: float) -> None:
        """Hand `flight`'s job back, booked `delay` seconds ahead, for want of a rate-limit
        token or behind an open circuit (`admission`): its attempt is not counted, and it
        never started."""
        flight.finished = True
        self._running -= 1
        self._slot_free.set()
        if self._inflight.get(flight.job.id) is not flight:
            return  # handed back already (shutdown), or its lease is lost
        if flight.stop_reason is StopReason.CANCEL:  # asked for while its token was drawn
            self._submit(flight.job, Ack.cancel(flight.job.ref))
            return
        self._held.add(flight.job.ref)
        self._submit(flight.job, Ack.release(flight.job.ref, delay=delay))

    def _start(self, flight: InFlight, admission: asyncio.Future[Admitted] | None = None) -> None:
        self._running += 1
        flight.task = asyncio.create_task(self._execute(flight, admission))

    def _is_poison_suspect(self, job: ClaimedJob) -> bool:
        """One more lost worker would send this job to the dead-letter queue as a poison job.

        It then runs at once in a process of its own (`stagecrew.worker.isolated`),
        so that if it takes that process down, the verdict falls on it alone and
        the jobs of this worker are neither charged with a lost worker nor held up.
        """
        return job.lost > 0 and job.lost >= self.app.max_worker_losses - 1

    def _can_isolate(self) -> bool:
        """A child can load the app, and reach the same store (not a `memory://` one)."""
        return self.app_ref is not None and self.app.backend.capabilities.cross_process

    async def _run(self, flight: InFlight, wait: float = 0.0) -> Ack | None:
        if wait:  # its rate-limit token comes free that soon (`admission.LOCAL_WAIT`)
            await asyncio.sleep(wait)
        if flight.stop_reason is not None and flight.stop_reason is not StopReason.CANCEL:
            return None  # handed back, or no longer this worker's, before it started
        if self.metrics is None:
            return await self._attempt(flight)
        began = time.monotonic()
        try:
            return await self._attempt(flight)
        finally:
            self.metrics.ran(flight.job, time.monotonic() - began)

    async def _attempt(self, flight: InFlight) -> Ack | None:
        if self._is_poison_suspect(flight.job) and self._can_isolate():
            assert self.app_ref is not None
            return await run_alone(
                self.app,
                self.app_ref,
                flight,
                stuck_grace=self.executor.stuck_grace,
                rng=self._rng,
            )
        return await self.executor.run(flight)

    async def _execute(
        self, flight: InFlight, admission: asyncio.Future[Admitted] | None = None
    ) -> None:
        try:
            wait = 0.0
            if admission is not None:
                admitted = await self._admitted(flight, admission)
                if admitted is None:
                    return  # handed back for want of a token
                wait = admitted
            ack = await self._run(flight, wait)
            if self._rates is not None:
                if flight.rate_limited is not None:
                    await self._rates.slow_down(flight.job, flight.rate_limited)
                if ack is not None and self._rates.circuits is not None:
                    await self._rates.circuits.record(flight.job, ack)
        except asyncio.CancelledError:
            ack = None
        except Exception:  # a bug in the executor itself: keep the worker alive
            log.exception("job %s: unexpected executor error", flight.job.id)
            ack = None
        flight.finished = True
        self._running -= 1
        self._slot_free.set()
        if flight.stuck:
            self._begin_recycle(flight)
        if flight.committed and ack is not None:
            self._on_written(ack, True)  # durable already: the task's transaction wrote it
            return
        if self._inflight.get(flight.job.id) is not flight:
            # handed back at shutdown, or its lease was lost (the job may be this worker's
            # again meanwhile, under a newer claim that this outcome must not touch)
            if ack is not None and flight.stop_reason is not StopReason.SHUTDOWN:
                log.warning(
                    "job %s claim %s: outcome %s not sent, the lease was lost",
                    flight.job.id,
                    flight.job.token,
                    ack.kind,
                )
            return
        if ack is None or flight.stop_reason is StopReason.LOST:
            # no outcome to write (its lease was lost mid-attempt, or the executor failed):
            # the job runs again once the store takes it back
            del self._inflight[flight.job.id]
            self.history.count(flight.job, LOST)
            if self.metrics is not None:
                self.metrics.lost(flight.job)
            return
        if self.faults is not None:
            self.faults.at(FaultPoint.BEFORE_ACK)
        self._submit(flight.job, ack)

    def _submit(self, job: ClaimedJob, ack: Ack) -> None:
        """Hand `ack`, an outcome of `job`'s claim, to the completer. A workflow member's is
        marked as one, so that its fan-in joins the ack's write (`base.Ack.in_workflow`)."""
        assert self._completer is not None
        if job.workflow_id is not None:
            ack = dataclasses.replace(ack, in_workflow=True)
        self._completer.submit(ack)

    def _on_written(self, ack: Ack, applied: bool) -> None:
        """`ack` reached the store, which `applied` it or refused it (the claim was gone)."""
        flight = self._inflight.get(ack.ref.id)
        if flight is not None and flight.job.ref == ack.ref:
            del self._inflight[ack.ref.id]
            self.history.count(flight.job, outcome_of(ack.kind, applied))
            if self.metrics is not None:
                # counted here, once the store decided: a refused outcome is a lost claim
                self.metrics.written(flight.job, ack.kind, applied)
        if self._held and ack.ref in self._held:
            self._held.discard(ack.ref)
            self.held += 1
        else:
            self.processed += 1
        if applied:
            self.acked[ack.kind] += 1
        self._slot_free.set()
        self._outcome_written.set()

    # -- housekeeping ----------------------------------------------------------------
    async def _rescue(self) -> None:
        report = await rescue_expired(self.app.backend, self.app.max_worker_losses)
        if self.metrics is not None and report.total:
            self.metrics.rescued(report.total)

    async def _flush_metrics(self) -> None:
        if self.metrics is not None:
            self.metrics.flush(busy=self._running)

    # -- leases ------------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        while not self._stop_background.is_set():
            await asyncio.sleep(self.heartbeat_interval)
            if self.watch_parent and self._parent.gone():
                log.warning("supervisor is gone; shutting down")
                self.request_stop()
            refs = {f.job.id: f.job.ref for f in self._inflight.values()}
            if not refs:
                continue
            try:
                reply = await self.app.backend.heartbeat_async(
                    self.id, list(refs.values()), self.lease_seconds
                )
            except Exception as exc:
                log.warning("heartbeat failed (%s); leases may expire", exc)
                continue
            if self._stop_background.is_set():  # the worker stopped while this call ran
                return
            assert self._completer is not None
            for job_id in reply.lost:
                ref = refs.get(job_id)
                if ref is None:
                    continue
                # an outcome of that claim still waiting to be written could only be refused
                self._completer.drop(ref)
                flight = self._inflight.get(job_id)
                if flight is not None and flight.job.ref == ref:
                    log.warning("job %s: lease lost; abandoning this attempt", job_id)
                    flight.stop(StopReason.LOST)
                    self.history.count(flight.job, LOST)
                    if self.metrics is not None:
                        self.metrics.lost(flight.job)
                    # No longer this worker's: never heartbeated, handed back or acked again,
                    # even while a sync thread still runs it.
                    del self._inflight[job_id]
                    self._slot_free.set()
            for job_id in reply.cancel_requested:
                flight = self._inflight.get(job_id)
                if flight is not None and not flight.finished:
                    log.info("job %s: cancellation requested; stopping it", job_id)
                    flight.stop(StopReason.CANCEL)

    # -- stopping ----------------------------------------------------------------
    def _on_signal(self, sig: signal.Signals) -> None:
        """One stop request, whatever its route; a second direct signal exits at once.

        Under systemd (`KillMode=control-group`) every process of the service
        gets SIGTERM at the same moment, so a child sees systemd's signal and
        its supervisor's relay: both are the one request to stop. The relay
        (`RELAYED_STOP`) never escalates; only a second SIGTERM or SIGINT sent
        to this process itself does.
        """
        relayed = sig == RELAYED_STOP
        if not relayed:
            self._direct_signals += 1
            if self._direct_signals > 1:
                log.warning(
                    "%s again: exiting now; unfinished jobs go back to the queue when the "
                    "supervisor sees this process exit, or else when their leases expire",
                    sig.name,
                )
                os._exit(1)
        route = "stop requested by the supervisor" if relayed else sig.name
        if self._stopping.is_set():
            log.info("%s: already stopping (send SIGTERM to this process again to exit now)", route)
            return
        log.warning(
            "%s: finishing %d running jobs within %gs (send SIGTERM to this process again to "
            "exit now)",
            route,
            self._running,
            self.grace,
        )
        self.request_stop()

    def _begin_recycle(self, flight: InFlight) -> None:
        if not self._recycle:
            log.error(
                "job %s %s attempt %s overran its timeout and its sync code would not stop: "
                "recycling this process",
                flight.job.id,
                flight.job.task,
                flight.job.attempt,
            )
            self._recycle = True
            self.request_stop()

    async def _shutdown(self) -> None:
        assert self._completer is not None
        deadline = time.monotonic() + self.grace
        while self._running and time.monotonic() < deadline:
            self._slot_free.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._slot_free.wait(), deadline - time.monotonic())
        unfinished = [f for f in self._inflight.values() if not f.finished]
        if unfinished:
            log.warning("grace period over: handing %d jobs back to the queue", len(unfinished))
        for flight in unfinished:
            flight.stop(StopReason.SHUTDOWN)
            if not flight.job_is_async or flight.task is None:
                # a sync thread cannot be interrupted: hand the job back now and drop its result
                self._hand_back(flight)
        pending = {f.task: f for f in unfinished if f.job_is_async and f.task is not None}
        if pending:
            _, stubborn = await asyncio.wait(pending, timeout=HAND_BACK_WAIT)
            for task in stubborn:
                flight = pending[task]
                log.warning(
                    "job %s went on for %gs after it was cancelled; handed back all the same, "
                    "its task is left to end with the process",
                    flight.job.id,
                    HAND_BACK_WAIT,
                )
                self._hand_back(flight)
        self._completer.close()
        flush_wait = max(self.lease_seconds, FINAL_FLUSH_WAIT)
        try:
            await asyncio.wait_for(self._completer.flushed(), timeout=flush_wait)
        except TimeoutError:
            log.error(
                "could not write final outcomes; those jobs will run again after lease expiry"
            )

    def _hand_back(self, flight: InFlight) -> None:
        """Hand `flight`'s job back now, dropping whatever outcome its attempt may still reach
        (`_execute` sends none for a flight no longer in `_inflight`)."""
        self._inflight[flight.job.id] = InFlight(flight.job, finished=True)
        self._submit(flight.job, Ack.release(flight.job.ref))

    async def _end_background(self, background: Sequence[asyncio.Task[None]]) -> None:
        """Tell the background tasks to end, and wait for them (for `BACKGROUND_STOP_WAIT`).

        Each ends because it is told to (`_stop_background`, `Completer.abandon`), checked
        after every await: the cancellation sent here only cuts a wait short, and it can be
        lost. Python 3.11's `asyncio.wait_for` returns the result of the call it wraps when
        that call completes as the cancellation comes, and drops the cancellation; redis-py
        sends every command through it. A task that loses it carries on to its next check.
        """
        assert self._completer is not None
        self._stop_background.set()
        self._completer.abandon()  # a no-op once it wrote everything (`_shutdown`)
        for task in background:
            task.cancel()
        done, running = await asyncio.wait(background, timeout=BACKGROUND_STOP_WAIT)
        for task in done:
            if not task.cancelled() and (error := task.exception()) is not None:
                log.error("%s failed: %r", task.get_name(), error, exc_info=error)
        for task in running:
            log.error(
                "%s did not stop within %gs of being told to; the worker stops without it",
                task.get_name(),
                BACKGROUND_STOP_WAIT,
            )
