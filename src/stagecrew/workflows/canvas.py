"""Signatures and the three workflow shapes: `chain`, `group`, `chord`.

Each shape flattens into steps that run one after the other, a step being one task or a
group of tasks that run in parallel (`backends/workflows.py` stores them so). What nests:
a chain of tasks, groups, chords and chains; a chord whose header is a group of tasks.
What does not: a group whose members are chains, groups or chords (a `TypeError` says so).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..backends.workflows import NewWorkflow, OnFailure, new_workflow_id
from ..errors import ConfigurationError
from ..job import NewJob
from ..serialization import encode_payload
from .handle import WorkflowHandle

if TYPE_CHECKING:
    from ..app import App
    from ..task import EnqueueOptions, Task


@dataclass(frozen=True, slots=True)
class Signature:
    """A task with its arguments and options, frozen: one member of a workflow.

    Made by `task.s(*args, **kwargs)` (or `task.options(queue=...).s(...)`). Its arguments
    are checked to be JSON at once; whether they fit the task is checked when the workflow
    is enqueued, where it is known whether the member gets its step's input in front.
    """

    task: Task[Any, Any]
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    options: EnqueueOptions

    @classmethod
    def of(
        cls,
        task: Task[Any, Any],
        options: EnqueueOptions,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
    ) -> Signature:
        if options.delay is not None or options.run_at is not None:
            raise ConfigurationError(
                f"task {task.name!r}: a workflow's member runs when its step is reached; "
                "it takes no delay or run_at"
            )
        if options.idempotency_key is not None or options.fairness_key is not None:
            raise ConfigurationError(
                f"task {task.name!r}: a workflow's member takes no idempotency key or fairness key"
            )
        if options.connection is not None:
            raise ConfigurationError(
                f"task {task.name!r}: a workflow is enqueued on its own, not in a transaction"
            )
        encode_payload(tuple(args), dict(kwargs), max_bytes=task.app.max_payload_bytes)
        return cls(task, tuple(args), dict(kwargs), options)

    @property
    def name(self) -> str:
        return self.task.name

    def __repr__(self) -> str:
        return f"<Signature {self.task.name}{self.args!r}>"

    def build(self, *, takes_input: bool) -> NewJob:
        [job] = self.task.build_many(
            [(self.args, self.kwargs)], self.options, member=True, takes_input=takes_input
        )
        return job

    def enqueue(self) -> WorkflowHandle:
        """A workflow of this one task (rarely useful alone; see `chain`)."""
        return chain(self).enqueue()


Step = tuple[bool, tuple[Signature, ...]]
"""(is a group, its signatures)."""


class _Workflow:
    """What `chain`, `group` and `chord` share: steps, enqueue, on_failure."""

    on_failure: OnFailure

    def steps(self) -> list[Step]:
        raise NotImplementedError

    def _build(self) -> tuple[App, NewWorkflow]:
        steps = self.steps()
        if not steps:
            raise ConfigurationError("a workflow needs at least one task")
        apps = {id(sig.task.app): sig.task.app for _, sigs in steps for sig in sigs}
        if len(apps) != 1:
            raise ConfigurationError("every task of one workflow belongs to one App")
        built = tuple(
            tuple(sig.build(takes_input=index > 0) for sig in sigs)
            for index, (_, sigs) in enumerate(steps)
        )
        workflow = NewWorkflow(
            id=new_workflow_id(),
            steps=built,
            groups=tuple(group for group, _ in steps),
            on_failure=self.on_failure,
        )
        return next(iter(apps.values())), workflow

    def enqueue(self) -> WorkflowHandle:
        """Write the whole workflow in one atomic write (all of it or nothing); its handle."""
        app, workflow = self._build()
        backend = app._producer_backend()
        backend.enqueue_workflow(workflow)
        app._unserved.enqueued(backend, _members(workflow))
        return WorkflowHandle(app, workflow.id)

    async def enqueue_async(self) -> WorkflowHandle:
        app, workflow = self._build()
        backend = app._producer_backend()
        await backend.enqueue_workflow_async(workflow)
        app._unserved.enqueued_async(backend, _members(workflow))
        return WorkflowHandle(app, workflow.id)


def _members(workflow: NewWorkflow) -> list[NewJob]:
    return [job for jobs in workflow.steps for job in jobs]


def _on_failure(value: str) -> OnFailure:
    try:
        return OnFailure(value)
    except ValueError:
        raise ConfigurationError(f"on_failure is 'fail' or 'continue', not {value!r}") from None


class Chain(_Workflow):
    def __init__(self, parts: Iterable[Any], on_failure: str = "fail") -> None:
        self.parts = tuple(parts)
        for part in self.parts:
            if not isinstance(part, Signature | Chain | Group | Chord):
                raise TypeError(
                    f"a chain holds signatures (task.s(...)), groups, chords and chains, "
                    f"not {part!r}"
                )
        self.on_failure = _on_failure(on_failure)

    def steps(self) -> list[Step]:
        out: list[Step] = []
        for part in self.parts:
            out.extend([(False, (part,))] if isinstance(part, Signature) else part.steps())
        return out

    def __repr__(self) -> str:
        return f"chain{self.parts!r}"


class Group(_Workflow):
    def __init__(self, members: Iterable[Any], on_failure: str = "fail") -> None:
        self.members = tuple(members)
        if not self.members:
            raise ConfigurationError("a group needs at least one signature")
        for member in self.members:
            if not isinstance(member, Signature):
                raise TypeError(
                    "a group's members are signatures (task.s(...)); a group of chains, "
                    f"groups or chords is not supported: {member!r}"
                )
        self.on_failure = _on_failure(on_failure)

    def steps(self) -> list[Step]:
        return [(True, self.members)]

    def __repr__(self) -> str:
        return f"group{self.members!r}"


class Chord(_Workflow):
    def __init__(self, header: Any, body: Any, on_failure: str = "fail") -> None:
        if isinstance(header, list | tuple):
            header = Group(header)
        if not isinstance(header, Group):
            raise TypeError(f"a chord's header is a group of signatures, not {header!r}")
        if not isinstance(body, Signature):
            raise TypeError(f"a chord's callback is a signature (task.s(...)), not {body!r}")
        self.header = header
        self.body = body
        self.on_failure = _on_failure(on_failure)

    def steps(self) -> list[Step]:
        return [*self.header.steps(), (False, (self.body,))]

    def __repr__(self) -> str:
        return f"chord({self.header!r}, {self.body!r})"


def chain(*parts: Any, on_failure: str = "fail") -> Chain:
    """Run `parts` one after the other; each one's outcome is the next one's first argument.

    `on_failure="continue"` passes outcome objects instead of values, so that a step after
    a failure still runs (see docs/workflows.md for their shape).
    """
    return Chain(parts, on_failure)


def group(*members: Any, on_failure: str = "fail") -> Group:
    """Run signatures in parallel; the group's outcome is the list of their results, in order."""
    if len(members) == 1 and isinstance(members[0], list | tuple):
        members = tuple(members[0])
    return Group(members, on_failure)


def chord(header: Any, body: Any, *, on_failure: str = "fail") -> Chord:
    """Run the group `header`, then `body` once, with the list of the header's results.

    The callback runs exactly once after every member finished (the fan-in is one atomic
    store update); a member that dies fails the chord and the callback does not run, unless
    `on_failure="continue"`, which gives the callback every member's outcome instead.
    """
    return Chord(header, body, on_failure)
