"""Start real worker processes against a temporary app module."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

LEDGER_APP = """
import asyncio, os, random, time
from stagecrew import App, Context
from stagecrew.testing.ledger import Ledger

app = App(max_worker_losses=int(os.environ.get("MAX_WORKER_LOSSES", "3")))
ledger = Ledger(os.environ["LEDGER_PATH"])
LOW = float(os.environ.get("JOB_MIN_SECONDS", "0"))
HIGH = float(os.environ.get("JOB_SECONDS", "0.01"))

@app.task(max_attempts=int(os.environ.get("MAX_ATTEMPTS", "20")))
def work(i: int, ctx: Context) -> int:
    ledger.record("start", ctx.job_id, ctx.attempt)
    time.sleep(random.uniform(LOW, HIGH))
    ledger.record("end", ctx.job_id, ctx.attempt)
    return i

@app.task(max_attempts=int(os.environ.get("MAX_ATTEMPTS", "20")))
async def awork(i: int, ctx: Context) -> int:
    ledger.record("start", ctx.job_id, ctx.attempt)
    await asyncio.sleep(random.uniform(LOW, HIGH))
    ledger.record("end", ctx.job_id, ctx.attempt)
    return i

@app.task(max_attempts=10)
def crash(ctx: Context) -> None:
    ledger.record("start", ctx.job_id, ctx.attempt)
    os._exit(9)
"""


def write_app(directory: Path, name: str = "ledger_app", source: str = LEDGER_APP) -> str:
    (directory / f"{name}.py").write_text(textwrap.dedent(source))
    return f"{name}:app"


def start_worker(
    directory: Path, app_ref: str, env: dict[str, str], *args: str, log_file: Path | None = None
) -> subprocess.Popen[bytes]:
    """`stagecrew worker app_ref *args`; its output goes to `log_file`, or to a pipe `stop` reads.

    A pipe holds 64 KiB: a run expected to log a lot (an outage) should use a file, or the
    workers would block on a full pipe.
    """
    root = Path(__file__).resolve().parents[2]
    full_env = {
        **os.environ,
        **env,
        "PYTHONPATH": os.pathsep.join([str(directory), str(root / "src")]),
    }
    command = [sys.executable, "-m", "stagecrew", "worker", app_ref, *args]
    if log_file is None:
        return subprocess.Popen(
            command,
            cwd=directory,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    with log_file.open("ab") as output:  # the child keeps its own descriptor
        return subprocess.Popen(
            command,
            cwd=directory,
            env=full_env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen[bytes], timeout: float = 30) -> tuple[int, str]:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill(process)
        out, _ = process.communicate()
    return process.returncode, (out or b"").decode(errors="replace")


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a `stagecrew worker` and every process under it (the workers have each a
    process group of their own)."""
    for pid in descendants_of(process.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def children_of(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def descendants_of(pid: int) -> list[int]:
    """The children of `pid`, theirs, and so on."""
    found = children_of(pid)
    for child in list(found):
        found += descendants_of(child)
    return found


def workers_of(supervisor: int) -> list[int]:
    """The worker processes of a `stagecrew worker` (children of its fork server)."""
    return [worker for server in children_of(supervisor) for worker in children_of(server)]
