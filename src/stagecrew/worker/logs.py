"""Every log line written while a job runs carries that job's id."""

from __future__ import annotations

import contextvars
import logging
import sys

current_job: contextvars.ContextVar[str] = contextvars.ContextVar("stagecrew_job", default="-")

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(processName)s job=%(job_id)s %(name)s: %(message)s"


class JobIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "job_id"):
            record.job_id = current_job.get()
        return True


def configure(level: int | str = logging.INFO) -> None:
    """Install a stderr handler whose lines include the running job's id."""
    root = logging.getLogger()
    if any(getattr(h, "_stagecrew", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(JobIdFilter())
    handler._stagecrew = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
