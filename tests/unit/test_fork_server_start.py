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
    """The server is started with SIGTERM ignored (so that it ignores it too); a stop
    request sent meanwhile must still reach the supervisor's handler, not be ignored."""
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
