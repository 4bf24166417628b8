"""Starting the fork server the supervisor's workers are forked from."""

from __future__ import annotations

import multiprocessing.forkserver
import os
import signal

import pytest

from stagecrew.worker.supervisor import Supervisor, WorkerOptions


def test_a_sigterm_while_the_fork_server_starts_reaches_the_supervisor_afterwards(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server ignores SIGTERM itself (`fork_server_signals`); a stop request sent to the
    supervisor while it starts must reach the supervisor's handler, on whatever thread."""
    received: list[int] = []

    def sigterm_during_start() -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(multiprocessing.forkserver, "ensure_running", sigterm_during_start)
    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: received.append(signum))
    try:
        Supervisor("app_module:app", 1, WorkerOptions()).start_fork_server()
        handler_after = signal.getsignal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert received == [signal.SIGTERM]
    assert handler_after not in (signal.SIG_IGN, signal.SIG_DFL)


def test_the_fork_server_imports_what_makes_it_ignore_sigterm_first() -> None:
    from stagecrew.worker.supervisor import WORKER_MODULES

    assert WORKER_MODULES[0] == "stagecrew.worker.fork_server_signals"
