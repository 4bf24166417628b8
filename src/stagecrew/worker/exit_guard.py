"""The last bound on a worker process's life: it exits soon after its worker stopped.

Once `Worker.run` returns, the worker has written or handed back all it will, and what is
left is `asyncio.run`'s teardown: it cancels the tasks still pending and waits for each,
closes the async generators (the stores' connections), and joins the default thread pool.
A task that goes on when cancelled (an async job that catches `CancelledError`, or a store
call that loses the cancellation: see `Worker._end_background`) would keep the process alive
for ever, its jobs already handed back. `exit_after` ends the process anyway, saying so.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

from .logs import LOG_FORMAT

log = logging.getLogger("stagecrew.worker")

EXIT_WAIT = 10.0
"""Seconds a worker process may take to exit once its worker stopped: the teardown closes the
stores' connections, each within its own timeout (5 s)."""


def exit_after(seconds: float, code: int) -> None:
    """End the process with `code` in `seconds`, unless it has ended by then."""

    def leave() -> None:
        time.sleep(seconds)
        _write_error(
            "the worker stopped, but the process did not end within %gs (a task that goes on "
            "when cancelled?); exiting now",
            seconds,
        )
        os._exit(code)

    threading.Thread(target=leave, name="stagecrew-exit", daemon=True).start()


def _write_error(message: str, *args: object) -> None:
    """Log at ERROR straight to stderr: the logging lock may be held by the stuck thread."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, args, None)
    record.job_id = "-"
    line = logging.Formatter(LOG_FORMAT).format(record) + "\n"
    os.write(sys.stderr.fileno(), line.encode(errors="replace"))
