"""The supervisor: starts N worker processes, restarts any that dies, frees a dead one's jobs.

Children run in their own process group, so a terminal's Ctrl-C reaches only
the supervisor. Its first SIGTERM or SIGINT is relayed to each child as
`RELAYED_STOP`, a signal of its own: a child that also gets SIGTERM directly
(systemd signals every process of a service at once) takes both as one
graceful stop. A second signal to the supervisor SIGKILLs the children.

The supervisor names each child (its worker id, the owner of its leases).
When a child dies without a clean exit (SIGKILL from the OOM killer, a
segfault), the supervisor releases that worker's claims in the store at once
(`Backend.release_worker`: a lost worker counted, as a rescue would), so its
jobs run again within about a second instead of after their lease. Leases
still cover a whole machine lost. A child that sees its supervisor vanish
stops by itself.

Children are forked by multiprocessing's fork server, a process started once
(ahead of the first child: `start_fork_server`) that has already imported the
worker and the store's engine with its client library. A child thus starts in
milliseconds, importing nothing of stagecrew again, and, unlike a plain fork of
the supervisor, inherits none of its threads or connections. The fork server
ignores SIGTERM (a service manager signals every process of the service at
once, and the children's exit codes reach the supervisor through it); it exits
with the supervisor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import multiprocessing.forkserver
import os
import queue
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

import setproctitle

from ..backends import engine_module
from ..errors import ConfigurationError
from . import defaults
from .cpu_affinity import core_for, keep_to, usable_cpus
from .exit_guard import EXIT_WAIT, exit_after
from .logs import configure

if TYPE_CHECKING:
    from ..app import App
    from ..observability.host_metrics import HostMetrics

log = logging.getLogger("stagecrew.supervisor")

CRASH_WINDOW = 5.0
EXIT_CONFIG = 78
"""A child that cannot start (its app does not load): restarting it would not help."""
EXIT_FAILED = 1
"""A child that failed for another reason (logged): it is restarted."""
MAX_RESTART_DELAY = 10.0
RELAYED_STOP = signal.SIGUSR1
"""The signal the supervisor relays a stop request with, so a child can tell it from a
SIGTERM sent to the child itself (see `Worker._on_signal`)."""
WORKER_MODULES = (
    "stagecrew.worker.fork_server_signals",
    "stagecrew.worker.supervisor",
    "stagecrew.worker.runner",
    "stagecrew.cli.loading",
    "stagecrew.cli.main",
)
"""What every child imports to start, imported once by the fork server. `stagecrew.cli.main`
is what the `stagecrew` script imports, and multiprocessing runs the supervisor's main script
again in each child."""
RELEASE_WAIT = 10.0
"""Seconds the supervisor waits, when it exits, for the store to release dead children's
claims; past that, their leases bring the jobs back."""


@dataclass
class WorkerOptions:
    queues: list[str] | None = None
    concurrency: int = defaults.CONCURRENCY
    lease_seconds: float = 30.0
    grace: float = 30.0
    poll_interval: float = 1.0
    log_level: str = "INFO"
    worker_id: str | None = None
    """The worker's id (its lease owner); a supervisor sets a fresh one for each child it
    starts. None: the worker makes one up."""
    process_name: str | None = None
    """The name in the process's title (`worker-0`); None leaves the title alone."""
    metrics: bool = False
    """Count jobs in the supervisor's metrics directory (`HostMetrics`), which it serves."""
    cpu_affinity: bool | None = None
    """Keep each worker process to one core: True always, False never, None when the fleet
    covers the cores evenly (`cpu_affinity.core_for`)."""
    cpu: int | None = None
    """The core this worker process keeps to (set by the supervisor for each child), or None."""
    extra: dict[str, Any] = field(default_factory=dict)


def run_child(app_ref: str, options: WorkerOptions, environ: dict[str, str] | None = None) -> None:
    """Entry point of one worker process.

    `environ`: the supervisor's environment when it started this child, which the
    child takes over (the fork server's is the one it had when it started).
    """
    import asyncio

    from ..cli.loading import load_app
    from ..errors import ConfigurationError, SchemaOutOfDateError
    from .runner import Worker

    os.setpgrp()
    # Stop requests that arrive while the app loads are kept and handled by the worker.
    early: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT, RELAYED_STOP):
        signal.signal(sig, lambda signum, _frame: early.append(signum))
    if environ is not None and environ != os.environ:
        os.environ.clear()
        os.environ.update(environ)
    configure(options.log_level)
    # before the app loads and any other thread starts: they all inherit it
    spread = None if options.cpu is None else keep_to(options.cpu)
    try:
        metrics = None
        if options.metrics:
            from ..observability.host_metrics import process_metrics

            metrics = process_metrics()
        app = load_app(app_ref)
        worker = Worker(
            app,
            queues=options.queues,
            concurrency=options.concurrency,
            lease_seconds=options.lease_seconds,
            grace=options.grace,
            poll_interval=options.poll_interval,
            watch_parent=True,
            app_ref=app_ref,
            worker_id=options.worker_id,
            process_name=options.process_name,
            metrics=metrics,
            spread_cpus=spread,
            **options.extra,
        )
    except Exception as exc:
        log.error("worker cannot start: %s", exc)
        logging.shutdown()
        os._exit(EXIT_CONFIG)

    async def run_then_leave() -> int:
        code = EXIT_FAILED
        try:
            code = await worker.run(signals_before_start=early)
        except (ConfigurationError, SchemaOutOfDateError):
            code = EXIT_CONFIG
            raise
        finally:
            exit_after(EXIT_WAIT, code)  # asyncio.run's teardown may not end by itself
        return code

    code = EXIT_FAILED
    try:
        code = asyncio.run(run_then_leave())
    except (ConfigurationError, SchemaOutOfDateError) as exc:
        log.error("worker cannot start: %s", exc)
        code = EXIT_CONFIG
    except Exception:
        log.exception("worker %s failed", worker.id)
    finally:
        logging.shutdown()
        # a sync job that would not stop keeps a thread alive; do not wait for it
        os._exit(code)


def child_worker_id(slot: int) -> str:
    """`host:supervisor-pid.slot:random`, fresh for every start of a child.

    A restarted child never shares an id with the one it replaces, so
    releasing the dead one's claims cannot touch the new one's.
    """
    return f"{socket.gethostname()}:{os.getpid()}.{slot}:{uuid.uuid4().hex[:8]}"


@dataclass
class _Child:
    slot: int
    process: BaseProcess
    started: float
    worker_id: str
    crashes: int = 0
    ended: bool = False
    """Its exit was seen (and its claims released if it did not exit cleanly)."""

    @property
    def name(self) -> str:
        return f"worker-{self.slot}"


class _Releaser:
    """Releases the claims of dead children, on a thread of its own.

    A store in trouble can make a call slow (until its timeout); on this
    thread it delays neither restarts nor the handling of signals. The app is
    loaded on first use, so a supervisor whose children never die never
    opens the store.
    """

    def __init__(self, app_ref: str) -> None:
        self._app_ref = app_ref
        self._queue: queue.SimpleQueue[_Child | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._app: App | None = None

    def release(self, child: _Child) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="stagecrew-release", daemon=True)
            self._thread.start()
        self._queue.put(child)

    def close(self, timeout: float) -> None:
        """Finish the releases asked for, for up to `timeout` seconds."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning(
                "the store did not release the jobs of dead workers within %.0fs; they run "
                "again when their leases expire",
                timeout,
            )

    def _run(self) -> None:
        try:
            while (child := self._queue.get()) is not None:
                self._release(child)
        finally:
            if self._app is not None:
                with contextlib.suppress(Exception):
                    self._app.close()

    def _release(self, child: _Child) -> None:
        from ..cli.loading import load_app

        try:
            if self._app is None:
                self._app = load_app(self._app_ref)
            app = self._app
            report = app.backend.release_worker(child.worker_id, app.max_worker_losses)
        except Exception as exc:
            log.warning(
                "could not release the jobs of dead %s (%s) at once: %s; they run again when "
                "their leases expire",
                child.name,
                child.worker_id,
                exc,
            )
            return
        if not report.total:
            log.debug("dead %s (%s) held no jobs", child.name, child.worker_id)
            return
        log.warning(
            "released %d job%s of dead %s (%s) at once: %d back in the queue, %d dead, "
            "%d cancelled",
            report.total,
            "" if report.total == 1 else "s",
            child.name,
            child.worker_id,
            report.requeued,
            report.dead,
            report.cancelled,
        )


class Supervisor:
    def __init__(
        self,
        app_ref: str,
        processes: int,
        options: WorkerOptions,
        *,
        store_url: str | None = None,
        metrics: HostMetrics | None = None,
    ) -> None:
        """`store_url`: the app's store, whose engine the fork server imports ahead of the
        children (without it, each child imports its engine when it starts). `metrics`: the
        endpoint serving the children's metrics (open before the first child starts)."""
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self.app_ref = app_ref
        self.processes = processes
        self.options = options
        self.store_url = store_url
        self.metrics = metrics
        if metrics is not None:
            self.options = dataclasses.replace(options, metrics=True)
        self._ctx = multiprocessing.get_context("forkserver")
        self._cpus = usable_cpus()
        self._children: dict[int, _Child] = {}
        self._releaser = _Releaser(app_ref)
        self._signals = 0
        self._killed_by: int | None = None
        """The signal that made this supervisor kill its workers (a second stop request)."""
        self._failed = False
        self.restarts = 0

    def start_fork_server(self) -> None:
        """Start the fork server (see the module docstring), if it is not running yet.

        It imports in the background: called before other start-up work (the CLI
        calls it before it checks the store), that work and its imports overlap.
        """
        modules = list(WORKER_MODULES)
        if self.metrics is not None:
            # the directory is named in the environment by now: the fork server imports
            # prometheus-client in multiprocess mode, and its children start with it
            modules.append("stagecrew.observability.host_metrics")
        if self.store_url is not None:
            with contextlib.suppress(ConfigurationError):  # a bad URL is the child's to report
                modules.append(engine_module(self.store_url))
        self._ctx.set_forkserver_preload(modules)
        multiprocessing.forkserver.ensure_running()

    def _start(self, slot: int, crashes: int = 0) -> None:
        self.start_fork_server()  # again if it died
        worker_id = child_worker_id(slot)
        process = self._ctx.Process(
            target=run_child,
            args=(
                self.app_ref,
                dataclasses.replace(
                    self.options,
                    worker_id=worker_id,
                    process_name=f"worker-{slot}",
                    cpu=core_for(slot, self.processes, self._cpus, self.options.cpu_affinity),
                ),
                dict(os.environ),
            ),
            name=f"worker-{slot}",
            daemon=False,
        )
        process.start()
        self._children[slot] = _Child(slot, process, time.monotonic(), worker_id, crashes)
        if self._signals and process.pid:  # a stop came while it started: it missed the relay
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, RELAYED_STOP)
        log.info("started worker-%d (pid %s, worker id %s)", slot, process.pid, worker_id)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._signals += 1
        sig = signal.Signals(signum)
        if self._signals == 1:
            log.warning("%s: stopping workers gracefully (send again to kill them)", sig.name)
            self._send(RELAYED_STOP)
        else:
            log.warning("%s again: killing workers", sig.name)
            self._killed_by = signum
            self._send(signal.SIGKILL)

    def _send(self, sig: signal.Signals) -> None:
        for child in self._children.values():
            if child.process.is_alive() and child.process.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.process.pid, sig)

    def _ended(self, child: _Child) -> int | None:
        """Note that `child` exited; release its claims unless it exited cleanly."""
        child.ended = True
        code = child.process.exitcode
        if self.metrics is not None and child.process.pid:
            self.metrics.process_exited(child.process.pid)
        if code not in (0, EXIT_CONFIG):
            # It may have died holding jobs: nothing can renew those leases any more. A process
            # it started for a poison suspect is in its process group: end it first, so that
            # no job released here still runs somewhere.
            if child.process.pid:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.process.pid, signal.SIGKILL)
            self._releaser.release(child)
        return code

    def run(self) -> int:
        configure(self.options.log_level)
        queues = ",".join(self.options.queues) if self.options.queues else "the app's queues"
        setproctitle.setproctitle(f"stagecrew supervisor [{queues}] {self.processes} processes")
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        if self.metrics is not None:
            log.info("serving the workers' metrics on %s", self.metrics.url)
        for slot in range(self.processes):
            self._start(slot)
        pending_restarts: dict[int, float] = {}
        while True:
            time.sleep(0.1)
            for slot, child in list(self._children.items()):
                if child.ended or child.process.is_alive():
                    continue
                code = self._ended(child)
                if self._signals:
                    continue
                if code == EXIT_CONFIG:
                    log.error("worker-%d cannot start; stopping all workers", slot)
                    self._signals += 1
                    self._failed = True
                    self._send(RELAYED_STOP)
                    continue
                quick = time.monotonic() - child.started < CRASH_WINDOW
                crashes = child.crashes + 1 if quick else 0
                delay = min(MAX_RESTART_DELAY, 0.1 * 2**crashes) if quick else 0.0
                log.warning(
                    "worker-%d (pid %s) exited with code %s; restarting in %.1fs",
                    slot,
                    child.process.pid,
                    code,
                    delay,
                )
                child.crashes = crashes
                pending_restarts[slot] = time.monotonic() + delay
            for slot, when in list(pending_restarts.items()):
                if self._signals:
                    pending_restarts.clear()
                    break
                if time.monotonic() >= when:
                    del pending_restarts[slot]
                    self.restarts += 1
                    self._start(slot, self._children[slot].crashes)
            if self._signals and not any(c.process.is_alive() for c in self._children.values()):
                break
        for child in self._children.values():
            child.process.join()
            if not child.ended:
                self._ended(child)
        self._releaser.close(RELEASE_WAIT)
        log.info("all workers stopped")
        if self._failed:
            return 2
        if self._killed_by is not None:
            # as a shell reports a command a signal ended: the workers did not finish their jobs
            return 128 + self._killed_by
        return 0
