"""Worker and producer processes of one measurement, and their cleanup.

Workers run in a session (process group) of their own, so that a stop reaches every process
a library's CLI forks, and so that a Ctrl-C in the terminal reaches only the driver, which
then stops them itself. Every group started is remembered until it is gone: `stop_all` (run
on exit, on SIGTERM and on Ctrl-C) leaves no orphan.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

STOP_WAIT = 15.0
"""Seconds a worker group gets to exit after SIGTERM before SIGKILL."""
CLIENT_TIMEOUT = 900.0

_running: set[int] = set()
"""Process-group ids of the worker groups started and not yet known to be gone."""


class RunFailed(RuntimeError):
    """A library's process failed or stalled; the message says where, with its log's end."""


def log_tail(path: Path, lines: int = 6) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


@dataclass
class WorkerGroup:
    """The worker processes of one measurement (one or more copies of the CLI)."""

    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    log: Path | None = None

    def exited(self) -> str | None:
        """Why the workers are gone, if one of them exited; None while all run."""
        for proc in self.procs:
            code = proc.poll()
            if code is not None:
                tail = log_tail(self.log) if self.log else ""
                return f"a worker process exited with status {code}: {tail}"
        return None


def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send `sig` to the group; False if no process of it is left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the whole group, SIGKILL to what is left of it after `STOP_WAIT`."""
    pgid = proc.pid
    _signal_group(pgid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(STOP_WAIT)
    # children that outlive their parent (a forked work horse, a pool child) go too
    _signal_group(pgid, signal.SIGKILL)
    proc.wait()
    _running.discard(pgid)


def stop_all() -> None:
    """Kill every worker group still running (on the way out after a failure or Ctrl-C)."""
    for pgid in list(_running):
        _signal_group(pgid, signal.SIGKILL)
        _running.discard(pgid)


def _start(command: Sequence[str], env: Mapping[str, str], cwd: Path, log: BinaryIO) -> Any:
    proc = subprocess.Popen(
        list(command),
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    _running.add(proc.pid)
    return proc


@contextmanager
def workers(
    commands: Sequence[Sequence[str]], env: Mapping[str, str], cwd: Path, log: Path
) -> Iterator[WorkerGroup]:
    """Start each command as its own process group; stop them all on leaving."""
    group = WorkerGroup(log=log)
    with log.open("ab") as out:
        try:
            for command in commands:
                group.procs.append(_start(command, env, cwd, out))
            yield group
        finally:
            for proc in group.procs:
                stop_group(proc)


def run_client(
    python: str, args: Sequence[str], env: Mapping[str, str], cwd: Path, log: Path
) -> dict[str, Any]:
    """Run `bench_client.py` in a library's venv and return the JSON it printed last."""
    with log.open("ab") as err:
        done = subprocess.run(
            [python, "bench_client.py", *args],
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            timeout=CLIENT_TIMEOUT,
            check=False,
        )
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RunFailed(f"{args[1]} failed (status {done.returncode}): {log_tail(log)}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def install_signal_handlers() -> None:
    """Turn SIGTERM into KeyboardInterrupt, so that the same cleanup runs for both."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
