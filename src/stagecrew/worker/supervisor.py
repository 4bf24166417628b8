"""The supervisor: starts N worker processes and restarts any that dies.

Children run in their own process group, so a terminal's Ctrl-C reaches only
the supervisor, which turns it into one SIGTERM per child (graceful stop). A
second signal SIGKILLs them: their leases expire and the jobs run again
elsewhere. A child that sees its supervisor vanish stops by itself.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

from .logs import configure

log = logging.getLogger("stagecrew.supervisor")

CRASH_WINDOW = 5.0
EXIT_CONFIG = 78
"""A child that cannot start (its app does not load): restarting it would not help."""
MAX_RESTART_DELAY = 10.0


@dataclass
class WorkerOptions:
    queues: list[str] | None = None
    concurrency: int = 10
    lease_seconds: float = 30.0
    grace: float = 30.0
    poll_interval: float = 1.0
    log_level: str = "INFO"
    extra: dict[str, Any] = field(default_factory=dict)


def run_child(app_ref: str, options: WorkerOptions) -> None:
    """Entry point of one worker process."""
    import asyncio

    from ..cli.loading import load_app
    from .runner import Worker

    os.setpgrp()
    configure(options.log_level)
    try:
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
            **options.extra,
        )
    except Exception as exc:
        log.error("worker cannot start: %s", exc)
        logging.shutdown()
        os._exit(EXIT_CONFIG)
    code = 1
    try:
        code = asyncio.run(worker.run())
    finally:
        logging.shutdown()
        # a sync job that would not stop keeps a thread alive; do not wait for it
        os._exit(code)


@dataclass
class _Child:
    slot: int
    process: BaseProcess
    started: float
    crashes: int = 0


class Supervisor:
    def __init__(self, app_ref: str, processes: int, options: WorkerOptions) -> None:
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self.app_ref = app_ref
        self.processes = processes
        self.options = options
        self._ctx = multiprocessing.get_context("spawn")
        self._children: dict[int, _Child] = {}
        self._signals = 0
        self._failed = False
        self.restarts = 0

    def _start(self, slot: int, crashes: int = 0) -> None:
        process = self._ctx.Process(
            target=run_child,
            args=(self.app_ref, self.options),
            name=f"worker-{slot}",
            daemon=False,
        )
        process.start()
        self._children[slot] = _Child(slot, process, time.monotonic(), crashes)
        log.info("started worker-%d (pid %s)", slot, process.pid)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._signals += 1
        sig = signal.Signals(signum)
        if self._signals == 1:
            log.warning("%s: stopping workers gracefully (send again to kill them)", sig.name)
            self._send(signal.SIGTERM)
        else:
            log.warning("%s again: killing workers", sig.name)
            self._send(signal.SIGKILL)

    def _send(self, sig: signal.Signals) -> None:
        for child in self._children.values():
            if child.process.is_alive() and child.process.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.process.pid, sig)

    def run(self) -> int:
        configure(self.options.log_level)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        for slot in range(self.processes):
            self._start(slot)
        pending_restarts: dict[int, float] = {}
        while True:
            time.sleep(0.1)
            for slot, child in list(self._children.items()):
                if child.process.is_alive() or slot in pending_restarts:
                    continue
                code = child.process.exitcode
                if self._signals:
                    continue
                if code == EXIT_CONFIG:
                    log.error("worker-%d cannot start; stopping all workers", slot)
                    self._signals += 1
                    self._failed = True
                    self._send(signal.SIGTERM)
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
        log.info("all workers stopped")
        return 2 if self._failed else 0
