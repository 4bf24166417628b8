"""stagecrew: background jobs that survive crashes."""

from .app import App, Jobs
from .backends.base import Retention
from .clock import Clock, FakeClock, SystemClock
from .context import Context, JobCancelled  # another name of JobCancelledError
from .errors import (
    ConfigurationError,
    EnqueueError,
    InvalidArgumentsError,
    InvalidTimeError,
    JobCancelledError,
    JobFailedError,
    JobNotFoundError,
    LeaseLostError,
    PayloadTooLargeError,
    ScheduleError,
    SchemaOutOfDateError,
    SerializationError,
    StagecrewError,
    StepError,
    TransitionError,
    UnknownTaskError,
)
from .handle import JobHandle
from .job import AttemptError, Cancel, ErrorKind, Job, JobState, Progress, Retry, Snooze
from .maintenance.aging import PriorityAging
from .retry import Backoff
from .schedule import CatchUp, Schedule
from .task import Task, Unique, call

__all__ = [
    "App",
    "AttemptError",
    "Backoff",
    "Cancel",
    "CatchUp",
    "Clock",
    "ConfigurationError",
    "Context",
    "EnqueueError",
    "ErrorKind",
    "FakeClock",
    "InvalidArgumentsError",
    "InvalidTimeError",
    "Job",
    "JobCancelled",
    "JobCancelledError",
    "JobFailedError",
    "JobHandle",
    "JobNotFoundError",
    "JobState",
    "Jobs",
    "LeaseLostError",
    "PayloadTooLargeError",
    "PriorityAging",
    "Progress",
    "Retention",
    "Retry",
    "Schedule",
    "ScheduleError",
    "SchemaOutOfDateError",
    "SerializationError",
    "Snooze",
    "StagecrewError",
    "StepError",
    "SystemClock",
    "Task",
    "TransitionError",
    "Unique",
    "UnknownTaskError",
    "call",
]
