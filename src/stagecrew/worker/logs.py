"""Every log line written while a job runs carries that job: its id, task, queue and attempt.

The worker sets `current_job` around each attempt; sync tasks run in a copy of that context,
so a task's own `logging` calls carry it as well as stagecrew's. `JobFilter` puts the fields
on every record (`job_id`, `job_task`, `job_queue`, `job_attempt`, "-" outside a job), where
any formatter can use them. Text lines show the job id; `--log-format json`
(`STAGECREW_LOG_FORMAT=json`) writes one JSON object per line with every field.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
from datetime import UTC, datetime
from typing import NamedTuple

import orjson


class RunningJob(NamedTuple):
    """The job an attempt runs, as its log records name it (a named tuple: one is built per
    attempt, on the worker's hot path)."""

    id: int
    task: str
    queue: str
    attempt: int


current_job: contextvars.ContextVar[RunningJob | None] = contextvars.ContextVar(
    "stagecrew_job", default=None
)

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(processName)s job=%(job_id)s %(name)s: %(message)s"
LOG_FORMATS = ("text", "json")
FORMAT_VARIABLE = "STAGECREW_LOG_FORMAT"
"""The environment variable that carries `--log-format` to every process of a worker."""


job_log = logging.getLogger("stagecrew.jobs")
"""Each attempt's start and end (with its duration and outcome), at `job_log_level()`."""
JOB_LEVEL_VARIABLE = "STAGECREW_JOB_LOG_LEVEL"
"""Carries `--job-log-level` to every process of a worker (DEBUG when unset)."""


def job_log_level() -> int:
    level = logging.getLevelName(os.environ.get(JOB_LEVEL_VARIABLE, "DEBUG").upper())
    return level if isinstance(level, int) else logging.DEBUG


class JobFilter(logging.Filter):
    """Puts the running job's fields on each record (a record that has them keeps them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "job_id"):
            job = current_job.get()
            record.job_id = "-" if job is None else str(job.id)
            record.job_task = "-" if job is None else job.task
            record.job_queue = "-" if job is None else job.queue
            record.job_attempt = "-" if job is None else job.attempt
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, process, message, the
    job's fields while one runs, and the traceback of an exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "pid": record.process,
            "message": record.getMessage(),
        }
        job_id = getattr(record, "job_id", "-")
        if job_id != "-":
            line["job_id"] = int(job_id)
            line["task"] = getattr(record, "job_task", None)
            line["queue"] = getattr(record, "job_queue", None)
            line["attempt"] = getattr(record, "job_attempt", None)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure(level: int | str = logging.INFO, log_format: str | None = None) -> None:
    """Install a stderr handler whose lines carry the running job (text or JSON)."""
    root = logging.getLogger()
    if any(getattr(h, "_stagecrew", False) for h in root.handlers):
        return
    chosen = log_format or os.environ.get(FORMAT_VARIABLE) or "text"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if chosen == "json" else logging.Formatter(LOG_FORMAT))
    handler.addFilter(JobFilter())
    handler._stagecrew = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
