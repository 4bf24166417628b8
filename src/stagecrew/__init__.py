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
    WorkflowCancelledError,
    WorkflowFailedError,
    WorkflowNotFoundError,
)
from .handle import JobHandle
from .job import AttemptError, Cancel, ErrorKind, Job, JobState, Progress, Retry, Snooze
from .limits import Concurrency
from .maintenance.aging import PriorityAging
from .retry import Backoff
from .schedule import CatchUp, Schedule
from .task import Task, Unique, call
from .workflows import (
    Signature,
    Workflow,
    WorkflowHandle,
    WorkflowStatus,
    chain,
    chord,
    group,
)

__all__ = [
    "App",
    "AttemptError",
    "Backoff",
    "Cancel",
    "CatchUp",
    "Clock",
    "Concurrency",
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
    "Signature",
    "Snooze",
    "StagecrewError",
    "StepError",
    "SystemClock",
    "Task",
    "TransitionError",
    "Unique",
    "UnknownTaskError",
    "Workflow",
    "WorkflowCancelledError",
    "WorkflowFailedError",
    "WorkflowHandle",
    "WorkflowNotFoundError",
    "WorkflowStatus",
    "call",
    "chain",
    "chord",
    "group",
]
