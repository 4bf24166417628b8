"""`stagecrew top` in a pseudo-terminal: it draws the queues, workers, running jobs with their
progress and recent failures of a store it is given by URL alone, redraws, and exits cleanly
(status 0, the terminal's modes restored) on `q` and on Ctrl-C."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import sys
import termios
import time
from pathlib import Path

import pytest

from stagecrew import App
from stagecrew.backends.base import Ack
from stagecrew.backends.job_counts import CountKey
from stagecrew.backends.worker_registry import WorkerBeat, WorkerInfo
from stagecrew.job import AttemptError, ErrorKind, Progress

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def fill(url: str) -> None:
    app = App(url)
    app.task(name="send", queue="email")(lambda: None)
    app.task(name="report", queue="reports")(lambda: None)
    for _ in range(3):
        app.enqueue("send")
    failing = app.enqueue("report")
    running = app.enqueue("report")
    claimed = {c.id: c for c in app.backend.claim(["reports"], "w1", 2, 300.0)}
    error = AttemptError(1, 0.0, ErrorKind.ERROR, "ValueError", "the ledger does not balance")
    app.backend.ack([Ack.dead_letter(claimed[failing.id].ref, error)])
    app.backend.store_progress(claimed[running.id].ref, Progress(3, 4, "page 3 of 4"))
    info = WorkerInfo("web-7", 4242, ("email", "reports"), 8, 1, "0.1.0")
    app.backend.record_worker(WorkerBeat("web-7:4242.0:abc", info, 300.0))
    app.backend.add_counts({CountKey("reports", "report", "succeeded"): 12})
    app.close()


def spawn_top(url: str) -> tuple[int, int]:
    pid, fd = pty.fork()
    if pid == 0:  # the child: its controlling terminal is the pseudo-terminal
        env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "200", "LINES": "60"}
        env["PYTHONPATH"] = str(ROOT / "src")
        env.pop("STAGECREW_APP", None)
        os.execve(sys.executable, [sys.executable, "-m", "stagecrew", "top", "--url", url], env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 60, 200, 0, 0))
    return pid, fd


def read_until(fd: int, wanted: list[bytes], timeout: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(w in seen for w in wanted):
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
    return seen


def exit_status(pid: int, fd: int, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        read_until(fd, [], 0.1)  # keep draining, or a full buffer blocks the child
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return None


@pytest.mark.parametrize("key", [b"q", b"\x03", "SIGTERM"], ids=["q", "ctrl-c", "sigterm"])
def test_top_draws_the_store_and_exits_cleanly(tmp_path: Path, key: bytes | str) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    fill(url)
    pid, fd = spawn_top(url)
    try:
        shown = read_until(
            fd,
            [b"email", b"reports", b"web-7", b"page 3 of 4", b"the ledger does not balance"],
            timeout=30,
        )
        for wanted in (b"queues", b"workers", b"running", b"recent failures", b"75%"):
            assert wanted in shown, shown[-2000:]
        assert b"\x1b[?1049h" in shown  # the alternate screen, which the exit leaves
        redrawn = read_until(fd, [b"email"], timeout=5)
        assert b"email" in redrawn  # it keeps refreshing
        if isinstance(key, bytes):
            os.write(fd, key)
        else:
            os.kill(pid, signal.SIGTERM)
        rest = read_until(fd, [b"\x1b[?1049l"], timeout=10)
        assert b"\x1b[?1049l" in rest
        assert exit_status(pid, fd, timeout=10) == 0
        local_modes = termios.tcgetattr(fd)[3]
        assert local_modes & termios.ICANON and local_modes & termios.ECHO  # as it found them
    finally:
        os.close(fd)
