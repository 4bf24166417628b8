"""WorkflowHandle: a workflow's state, result (sync and async) and cancel."""

from __future__ import annotations

import asyncio
import math
import time
from typing import TYPE_CHECKING, Any

from ..backends.workflows import Workflow, WorkflowStatus
from ..errors import WorkflowCancelledError, WorkflowFailedError, WorkflowNotFoundError
from ..serialization import decode

if TYPE_CHECKING:
    from ..app import App

POLL_SECONDS = (0.02, 0.05, 0.1, 0.2, 0.25)
"""The waits between reads of a workflow whose result is awaited: short first, then 0.25 s."""


class WorkflowHandle:
    """A workflow that was enqueued: read its state, wait for its result, cancel it."""

    def __init__(self, app: App, workflow_id: str) -> None:
        self.app = app
        self.id = workflow_id

    def __repr__(self) -> str:
        return f"<WorkflowHandle {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WorkflowHandle) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def get(self) -> Workflow:
        return self.app.workflows.get(self.id)

    async def get_async(self) -> Workflow:
        return await self.app.workflows.get_async(self.id)

    def state(self) -> WorkflowStatus:
        return self.get().status

    async def state_async(self) -> WorkflowStatus:
        return (await self.get_async()).status

    def cancel(self) -> Workflow:
        """Cancel the workflow: waiting members are cancelled, running ones asked to stop."""
        return self.app.workflows.cancel(self.id)

    async def cancel_async(self) -> Workflow:
        return await self.app.workflows.cancel_async(self.id)

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the workflow to end and return its last step's outcome, decoded.

        Raises `WorkflowFailedError` once it failed (a member died or was cancelled; a failed
        workflow resumes if that member is re-run and succeeds, so this reports the state
        when read), `WorkflowCancelledError`, `WorkflowNotFoundError`, or `TimeoutError`
        after `timeout` seconds of real time (None: no limit).
        """
        deadline = _deadline(timeout)
        for wait in _waits():
            outcome = _outcome(self.get())
            if outcome is not _PENDING:
                return outcome
            time.sleep(_remaining(self.id, timeout, deadline, wait))
        raise AssertionError("unreachable")

    async def result_async(self, timeout: float | None = None) -> Any:
        """`result` without blocking the event loop."""
        deadline = _deadline(timeout)
        for wait in _waits():
            outcome = _outcome(await self.get_async())
            if outcome is not _PENDING:
                return outcome
            await asyncio.sleep(_remaining(self.id, timeout, deadline, wait))
        raise AssertionError("unreachable")


_PENDING = object()


def _waits() -> Any:
    yield from POLL_SECONDS
    while True:
        yield POLL_SECONDS[-1]


def _deadline(timeout: float | None) -> float:
    if timeout is None:
        return math.inf
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or math.isnan(timeout):
        raise TypeError(f"timeout must be a number of seconds or None, not {timeout!r}")
    return time.monotonic() + timeout


def _remaining(workflow_id: str, timeout: float | None, deadline: float, wait: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError(f"workflow {workflow_id} has not finished after {timeout}s")
    return min(wait, left)


def _outcome(workflow: Workflow) -> Any:
    if workflow.status is WorkflowStatus.SUCCEEDED:
        return None if workflow.result is None else decode(workflow.result, what="workflow result")
    if workflow.status is WorkflowStatus.CANCELLED:
        raise WorkflowCancelledError(f"workflow {workflow.id} was cancelled")
    if workflow.status is WorkflowStatus.FAILED:
        raise WorkflowFailedError(f"workflow {workflow.id} failed: {failure_of(workflow)}")
    return _PENDING


def failure_of(workflow: Workflow) -> str:
    """Which member made the workflow fail, for messages."""
    for job in workflow.members:
        if job.state.is_final and job.state.value != "succeeded":
            last = job.last_error
            detail = f": {last.type}: {last.message}" if last else ""
            return f"job {job.id} ({job.task}, step {job.workflow_step}) is {job.state}{detail}"
    return "a member did not succeed"


def require(workflow: Workflow | None, workflow_id: str) -> Workflow:
    if workflow is None:
        raise WorkflowNotFoundError(
            f"no workflow with id {workflow_id} (it is pruned with its last member job)"
        )
    return workflow
