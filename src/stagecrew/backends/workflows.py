"""Workflow records and the fan-in decision, as every engine stores and applies them.

A workflow (docs/workflows.md) is stored as one record and its member jobs. Its steps run
one after the other; a step is one job, or a group of jobs that run in parallel. Every
member is written at enqueue, in one atomic write with the record: the members of step 0
are waiting as usual, the members of later steps are *held*: scheduled at `HELD_AT`, a
time no claim reaches. The record keeps which step is current (`step`) and a status.

The fan-in. Whenever a member of the current step becomes final (its ack, or a cancel),
the engine, in that same atomic write, reads the step's members and asks `decide` what
follows; an advance is a compare-and-set of the record's step (from k to k + 1) that also
releases the held members of step k + 1 (available now, with the step's outcome as their
`workflow_input`), so however many writers decide at once, one advance happens.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from ..job import FINAL_STATES, AttemptError, Job, JobState, NewJob

HELD_AT = 253402300799.0
"""9999-12-31T23:59:59Z: the run_at of a member whose step has not been reached (held)."""


class WorkflowStatus(StrEnum):
    RUNNING = "running"
    """Its current step has members that have not finished (or it is being advanced)."""
    SUCCEEDED = "succeeded"
    """Its last step finished; `result` holds what it returned."""
    FAILED = "failed"
    """A member died or was cancelled (`on_failure="fail"`; no later step runs unless that
    member is re-run from the dead-letter queue and succeeds), or, with
    `on_failure="continue"`, a member of its last step did not succeed."""
    CANCELLED = "cancelled"
    """`WorkflowHandle.cancel()`: its waiting members were cancelled; it never advances."""

    @property
    def is_final(self) -> bool:
        return self in (WorkflowStatus.SUCCEEDED, WorkflowStatus.CANCELLED)


ADVANCING = frozenset({WorkflowStatus.RUNNING, WorkflowStatus.FAILED})
"""The statuses a fan-in may change: a failed workflow resumes when its failed member is re-run."""


class OnFailure(StrEnum):
    FAIL = "fail"
    CONTINUE = "continue"


@dataclass(frozen=True, slots=True)
class WorkflowStep:
    """One step as the store keeps it: a single job, or a group (whose outcome is a list)."""

    group: bool
    size: int


@dataclass(frozen=True, slots=True)
class NewWorkflow:
    """A workflow as handed to `Backend.enqueue_workflow`: its members built and encoded."""

    id: str
    steps: tuple[tuple[NewJob, ...], ...]
    groups: tuple[bool, ...]
    on_failure: OnFailure = OnFailure.FAIL

    @property
    def shape(self) -> tuple[WorkflowStep, ...]:
        return tuple(
            WorkflowStep(group, len(jobs))
            for group, jobs in zip(self.groups, self.steps, strict=True)
        )


@dataclass(frozen=True, slots=True)
class Workflow:
    """A stored workflow and its members (the inspection view: `app.workflows.get`)."""

    id: str
    status: WorkflowStatus
    step: int
    """The current step (the last one once the workflow finished)."""
    shape: tuple[WorkflowStep, ...]
    on_failure: OnFailure
    created_at: float
    finished_at: float | None = None
    result: str | None = None
    """JSON text: the last step's outcome, once it finished (see docs/workflows.md)."""
    members: tuple[Job, ...] = field(default_factory=tuple)
    """Member jobs still stored, by (step, index)."""

    @property
    def result_value(self) -> Any:
        """`result` decoded (None while the workflow has none)."""
        return None if self.result is None else orjson.loads(self.result)

    def pending(self, job: Job) -> bool:
        """A member held until its step is reached (stored as scheduled at `HELD_AT`)."""
        return (
            job.workflow_step is not None
            and job.workflow_step > self.step
            and (job.state is JobState.SCHEDULED)
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready view, for the CLI's `--json` output."""
        return {
            "id": self.id,
            "status": self.status.value,
            "step": self.step,
            "steps": [{"group": s.group, "size": s.size} for s in self.shape],
            "on_failure": self.on_failure.value,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "result": self.result_value,
            "members": [
                {
                    "job_id": job.id,
                    "task": job.task,
                    "step": job.workflow_step,
                    "index": job.workflow_index,
                    "state": "pending" if self.pending(job) else job.state.value,
                    "result": job.result_value,
                    "error": None
                    if job.last_error is None
                    else f"{job.last_error.type}: {job.last_error.message}",
                }
                for job in self.members
            ],
        }


def new_workflow_id() -> str:
    return uuid.uuid4().hex


def check_workflow_id(workflow_id: object, operation: str) -> str:
    if not isinstance(workflow_id, str) or not workflow_id or len(workflow_id) > 64:
        raise ValueError(f"{operation}: a workflow id is a non-empty str, not {workflow_id!r}")
    if not workflow_id.isascii() or not all(c.isalnum() or c in "-_" for c in workflow_id):
        raise ValueError(f"{operation}: {workflow_id!r} is not a workflow id")
    return workflow_id


def check_new_workflow(workflow: NewWorkflow) -> NewWorkflow:
    """Refuse what no engine can run as a workflow, before anything is written."""
    if not isinstance(workflow, NewWorkflow):
        raise TypeError(f"enqueue_workflow needs a NewWorkflow, not {workflow!r}")
    check_workflow_id(workflow.id, "enqueue_workflow")
    if not workflow.steps or any(not jobs for jobs in workflow.steps):
        raise ValueError("a workflow has at least one step, and every step at least one job")
    if len(workflow.groups) != len(workflow.steps):
        raise ValueError("a workflow names, for each step, whether it is a group")
    pairs = zip(workflow.groups, workflow.steps, strict=True)
    if any(not group and len(jobs) != 1 for group, jobs in pairs):
        raise ValueError("a step that is not a group holds exactly one job")
    for jobs in workflow.steps:
        for job in jobs:
            if not isinstance(job, NewJob):
                raise TypeError(f"a workflow's member is a NewJob, not {job!r}")
            if job.idempotency_key is not None or job.fairness_key is not None:
                raise ValueError(
                    "a workflow's member takes no idempotency key and no fairness key "
                    f"(task {job.task!r})"
                )
            if job.run_at is not None or job.delay:
                raise ValueError(
                    f"a workflow's member runs when its step is reached: task "
                    f"{job.task!r} takes no run_at or delay"
                )
    return workflow


@dataclass(frozen=True, slots=True)
class Member:
    """What the fan-in reads of one member of the current step."""

    index: int
    state: JobState
    result: str | None
    error: AttemptError | None


class Verdict(StrEnum):
    WAIT = "wait"
    """Members are still unfinished (and none failed, or failures are passed on)."""
    FAIL = "fail"
    """A member died or was cancelled, and the workflow fails (`on_failure="fail"`)."""
    ADVANCE = "advance"
    """The step is done: release the next step's members with `output` as their input."""
    FINISH = "finish"
    """The last step is done: the workflow ends with `status` and `output` as its result."""


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    output: str | None = None
    status: WorkflowStatus | None = None


def settled_early(on_failure: OnFailure, unfinished: bool, failed: bool) -> Decision | None:
    """The verdict two index probes of a step can give without reading its members (whether
    a member is unfinished, whether one failed), or None: then read them all and `decide`."""
    if failed and on_failure is OnFailure.FAIL:
        return Decision(Verdict.FAIL)
    if unfinished:
        return Decision(Verdict.WAIT)
    return None


def decide(
    shape: Sequence[WorkflowStep], step: int, on_failure: OnFailure, members: Sequence[Member]
) -> Decision:
    """What follows, given the members of step `step` as they are now (the pure fan-in).

    The step's outcome is a member's result for a single job and the list of its members'
    results, in order, for a group. With `on_failure="continue"` it is made of outcome
    objects instead: `{"state": "succeeded", "result": value}` or `{"state": "dead" |
    "cancelled", "error": {"type": ..., "message": ...} | null}`. Results are spliced as
    stored JSON text, never decoded.
    """
    ordered = sorted(members, key=lambda m: m.index)
    failed = any(m.state in FINAL_STATES and m.state is not JobState.SUCCEEDED for m in ordered)
    if failed and on_failure is OnFailure.FAIL:
        return Decision(Verdict.FAIL)
    if len(ordered) < shape[step].size or any(m.state not in FINAL_STATES for m in ordered):
        return Decision(Verdict.WAIT)
    passed = [_value(m) if on_failure is OnFailure.FAIL else _outcome(m) for m in ordered]
    output = ("[" + ",".join(passed) + "]") if shape[step].group else passed[0]
    if step + 1 < len(shape):
        return Decision(Verdict.ADVANCE, output)
    if failed:
        return Decision(Verdict.FINISH, output, WorkflowStatus.FAILED)
    values = [_value(m) for m in ordered]
    result = ("[" + ",".join(values) + "]") if shape[step].group else values[0]
    return Decision(Verdict.FINISH, result, WorkflowStatus.SUCCEEDED)


def _value(member: Member) -> str:
    return "null" if member.result is None else member.result


def _outcome(member: Member) -> str:
    if member.state is JobState.SUCCEEDED:
        return '{"state":"succeeded","result":' + _value(member) + "}"
    error = None
    if member.error is not None:
        error = {"type": member.error.type, "message": member.error.message}
    return orjson.dumps({"state": member.state.value, "error": error}).decode()


def shape_to_json(shape: Sequence[WorkflowStep]) -> str:
    return orjson.dumps([[int(s.group), s.size] for s in shape]).decode()


def shape_from_json(text: str | bytes) -> tuple[WorkflowStep, ...]:
    return tuple(WorkflowStep(bool(group), int(size)) for group, size in orjson.loads(text))
