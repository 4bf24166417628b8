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
from .job import (
    AttemptError,
    Cancel,
    ErrorKind,
    Job,
    JobState,
    Progress,
    RateLimited,
    Retry,
    Snooze,
)
from .limits import Circuit, Concurrency, RateLimit
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
    "Circuit",
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
    "RateLimit",
    "RateLimited",
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
    "__version__",
    "call",
    "chain",
    "chord",
    "group",
]


def __getattr__(name: str) -> str:
    """`stagecrew.__version__`, read from the installed distribution on first use only, so
    that importing stagecrew (every worker process does) does not pay for the lookup."""
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import metadata

    try:
        return metadata.version("stagecrew")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"
