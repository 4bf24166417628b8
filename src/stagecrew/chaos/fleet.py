"""A fleet of chaos worker processes that the scenario runner supervises itself.

The runner plays the supervisor: it starts each worker process, restarts one
that died (at once, with none of the real supervisor's crash back-off, which
would only slow a storm down), and remembers every pid it killed, paused or
stopped, and every pid that died by itself, so the audit can tell why a job ran
twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from ..errors import StagecrewError
from ..worker.faults import ENV_VAR as FAULT_ENV
from ..worker.supervisor import EXIT_CONFIG, WorkerOptions
from .tasks import LEDGER_ENV, MAX_LOSSES_ENV


class ChaosError(StagecrewError):
    """A chaos scenario could not run; the message says why."""


PROCESS_MODULE = "stagecrew.chaos.process"
STOP_MARGIN = 10.0
"""Seconds a stopping worker gets beyond its grace before it is SIGKILLed."""


def _package_root() -> str:
    """The folder holding this `stagecrew`, so workers import the same code as the runner."""
    return str(Path(__file__).resolve().parents[2])


class Fleet:
    def __init__(
        self,
        url: str,
        ledger_path: Path,
        options: WorkerOptions,
        log: IO[bytes],
        *,
        faults: str | None = None,
        max_worker_losses: int,
    ) -> None:
        self.options = options
        self.log = log
        env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
        env.update(
            {
                "STAGECREW_URL": url,
                LEDGER_ENV: str(ledger_path),
                MAX_LOSSES_ENV: str(max_worker_losses),
            }
        )
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [_package_root(), os.environ.get("PYTHONPATH", "")])
        )
        if faults:
            env[FAULT_ENV] = faults
        self._env = env
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self._options: dict[int, WorkerOptions] = {}
        self.killed: set[int] = set()
        """Pids SIGKILLed by the scenario."""
        self.crashed: set[int] = set()
        """Pids that died by themselves (an injected fault, a poison job), with their exit code."""
        self.exit_codes: dict[int, int] = {}
        self.paused: set[int] = set()
        self.stopped: set[int] = set()
        self.restarts = 0

    # -- starting ------------------------------------------------------------------
    def start(self, count: int = 1, **changes: Any) -> list[int]:
        """Start `count` more worker processes (options changed by `changes`); their slots."""
        options = dataclasses.replace(self.options, **changes) if changes else self.options
        slots = []
        for _ in range(count):
            slot = len(self.processes)
            self._spawn(slot, options)
            slots.append(slot)
        return slots

    def _spawn(self, slot: int, options: WorkerOptions | None = None) -> None:
        """Start (or restart, with the same options) the worker in `slot`."""
        options = options or self._options[slot]
        self._options[slot] = options
        self.processes[slot] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stagecrew.chaos.process",
                json.dumps(dataclasses.asdict(options)),
            ],
            env=self._env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def pid(self, slot: int) -> int:
        return self.processes[slot].pid

    def alive(self) -> list[int]:
        return [
            s for s, p in self.processes.items() if p.poll() is None and p.pid not in self.paused
        ]

    # -- interrupting --------------------------------------------------------------
    def kill(self, slot: int, *, restart: bool = True) -> int:
        """SIGKILL the worker in `slot` (and start a fresh one there); the dead pid."""
        process = self.processes[slot]
        self.killed.add(process.pid)
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGKILL)
        process.wait()
        self.exit_codes[process.pid] = process.returncode
        if restart:
            self.restarts += 1
            self._spawn(slot)
        return process.pid

    def pause(self, slot: int) -> int:
        process = self.processes[slot]
        self.paused.add(process.pid)
        process.send_signal(signal.SIGSTOP)
        return process.pid

    def resume(self, slot: int) -> None:
        self.processes[slot].send_signal(signal.SIGCONT)

    def terminate(self, slot: int) -> int:
        """SIGTERM: the worker stops claiming and hands back what does not finish in its grace."""
        process = self.processes[slot]
        self.stopped.add(process.pid)
        process.send_signal(signal.SIGTERM)
        return process.pid

    def restart_dead(self) -> list[int]:
        """Restart every worker that died by itself since the last look; their pids."""
        dead = []
        for slot, process in list(self.processes.items()):
            code = process.poll()
            if code is None or process.pid in self.killed or process.pid in self.stopped:
                continue
            if code == EXIT_CONFIG:
                raise ChaosError(
                    "a chaos worker could not start (see its log); is the store URL right?"
                )
            self.crashed.add(process.pid)
            self.exit_codes[process.pid] = code
            dead.append(process.pid)
            self.restarts += 1
            self._spawn(slot)
        return dead

    # -- stopping ------------------------------------------------------------------
    def stop(self) -> None:
        """SIGTERM every live worker, wait for it, SIGKILL any that outstays its grace."""
        for process in self.processes.values():
            if process.pid in self.paused:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGCONT)
            if process.poll() is None:
                self.stopped.add(process.pid)
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.options.grace + STOP_MARGIN
        for process in self.processes.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.killed.add(process.pid)
                process.kill()
                process.wait()

    @property
    def worker_pids(self) -> frozenset[int]:
        """Every worker process the fleet ever started (not the processes those started)."""
        current = {p.pid for p in self.processes.values()}
        return frozenset(current | self.killed | self.crashed | self.stopped | self.paused)

    @property
    def interrupted(self) -> frozenset[int]:
        """Pids whose death was not a clean exit: killed by the scenario or crashed."""
        return frozenset(self.killed | self.crashed)
