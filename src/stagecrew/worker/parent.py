"""Whether the process that started this worker is still there."""

from __future__ import annotations

import multiprocessing
import os


class ParentWatch:
    """Tells when this process's starter has gone, so that a worker does not outlive it.

    A supervisor's child is forked by the fork server (see `supervisor`), which is
    its parent in the operating system's eyes and outlives a killed supervisor: the
    child watches the supervisor itself, through the pipe multiprocessing keeps
    between them (`multiprocessing.parent_process()`), which closes when the
    supervisor dies. Any other process watches its operating-system parent: it has
    gone once this process is handed to another one.
    """

    def __init__(self) -> None:
        self._starter = multiprocessing.parent_process()
        self._ppid = os.getppid()

    def gone(self) -> bool:
        if self._starter is not None:
            return not self._starter.is_alive()
        return os.getppid() != self._ppid
