"""The verdict of a crash scenario, from the ledger the jobs wrote and the store's final word.

`audit` compares what ran (the ledger, written outside the store) with what was
enqueued and what the store says now, and reports:

- **lost**: enqueued jobs whose function never returned;
- **stuck**: jobs the store still shows running once the scenario waited past
  the rescue horizon (the caller takes the snapshot after that wait);
- **unsettled**: jobs that completed but that the store does not show succeeded;
- **duplicates**: runs of a job after its first, each with a cause when one can
  be told: the worker running the earlier run was killed (or crashed), was
  paused past its lease, was stopped gracefully and handed the job back, the
  store recorded a lost lease or an error for the earlier attempt. Any other
  duplicate is *unexplained* and fails the report;
- **attempts above max_attempts**, from the ledger and the store.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import pairwise
from typing import Any

from ..job import ErrorKind, Job, JobState
from .ledger import Execution, Ledger


class RerunCause(StrEnum):
    KILLED = "killed"
    """The process of the earlier run was killed or crashed."""
    PAUSED = "paused"
    """The process of the earlier run was paused past its lease."""
    HANDED_BACK = "handed back"
    """The process of the earlier run stopped gracefully and handed the unfinished job back."""
    LEASE_EXPIRED = "lease expired"
    """The store recorded a lost lease ("worker lost") for the earlier attempt."""
    RETRIED = "retried"
    """The earlier attempt failed with an error and was retried."""
    UNEXPLAINED = "unexplained"


@dataclass(frozen=True, slots=True)
class Rerun:
    job_id: int
    earlier: Execution
    later: Execution
    cause: RerunCause


@dataclass(frozen=True, slots=True)
class Check:
    """A scenario-specific assertion, shown in the report and part of its verdict."""

    name: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Interruptions:
    """Worker processes the scenario interrupted, by pid."""

    killed: frozenset[int] = frozenset()
    """SIGKILLed by the scenario or dead by themselves (an injected fault, a poison job)."""
    paused: frozenset[int] = frozenset()
    stopped: frozenset[int] = frozenset()
    """Sent SIGTERM while they still had jobs running."""


@dataclass(frozen=True, slots=True)
class AuditReport:
    title: str
    expected: int
    completed: int
    lost: frozenset[int]
    stuck: frozenset[int]
    lost_as: Mapping[int, str]
    """What the store says of each lost job it still holds (its state and last error)."""
    unsettled: Mapping[int, str]
    """Completed in the ledger, but the store shows another state (or no job)."""
    executions: int
    finished_executions: int
    pids: int
    reruns: tuple[Rerun, ...]
    completed_twice: int
    """Jobs whose function returned more than once: what idempotency has to absorb."""
    over_max_attempts: frozenset[int]
    highest_attempt: int
    interruptions: Interruptions
    checks: tuple[Check, ...] = ()
    elapsed: float | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def unexplained(self) -> tuple[Rerun, ...]:
        return tuple(r for r in self.reruns if r.cause is RerunCause.UNEXPLAINED)

    @property
    def duplicates(self) -> int:
        return len(self.reruns)

    def duplicates_by_cause(self) -> dict[RerunCause, int]:
        return dict(Counter(r.cause for r in self.reruns))

    @property
    def ok(self) -> bool:
        return (
            not self.lost
            and not self.stuck
            and not self.unsettled
            and not self.unexplained
            and not self.over_max_attempts
            and all(c.ok for c in self.checks)
        )

    def render(self) -> str:
        lines = [f"{self.title}: {'OK' if self.ok else 'FAILED'}"]
        took = f" in {self.elapsed:.1f}s" if self.elapsed is not None else ""
        lines.append(
            f"  jobs         {self.expected} enqueued, {self.completed} completed{took}; "
            f"{len(self.lost)} lost, {len(self.stuck)} stuck, {len(self.unsettled)} unsettled"
        )
        lines.append(
            f"  runs         {self.executions} started, {self.finished_executions} returned, "
            f"on {self.pids} worker processes"
        )
        i = self.interruptions
        lines.append(
            f"  processes    {len(i.killed)} killed or crashed, {len(i.paused)} paused, "
            f"{len(i.stopped)} sent SIGTERM"
        )
        by_cause = self.duplicates_by_cause()
        causes = ", ".join(f"{n} {cause}" for cause, n in sorted(by_cause.items())) or "none"
        lines.append(f"  duplicates   {self.duplicates} reruns ({causes})")
        lines.append(f"               {self.completed_twice} jobs returned more than once")
        lines.append(
            f"  attempts     highest {self.highest_attempt}, "
            f"{len(self.over_max_attempts)} jobs above max_attempts"
        )
        for check in self.checks:
            detail = f": {check.detail}" if check.detail else ""
            lines.append(f"  [{'ok' if check.ok else 'FAIL'}] {check.name}{detail}")
        lines.extend(f"  note: {note}" for note in self.notes)
        problems: list[tuple[str, list[Any]]] = [
            (
                "lost",
                [f"{j} ({self.lost_as[j]})" if j in self.lost_as else j for j in sorted(self.lost)],
            ),
            ("stuck", sorted(self.stuck)),
            ("unsettled", [f"{k} ({v})" for k, v in sorted(self.unsettled.items())]),
            (
                "unexplained duplicates",
                [
                    f"{r.job_id} (attempt {r.earlier.attempt} on pid {r.earlier.pid})"
                    for r in self.unexplained
                ],
            ),
            ("above max_attempts", sorted(self.over_max_attempts)),
        ]
        for name, items in problems:
            if items:
                shown = ", ".join(str(x) for x in items[:20])
                more = f" and {len(items) - 20} more" if len(items) > 20 else ""
                lines.append(f"  {name}: {shown}{more}")
        return "\n".join(lines)


def _cause(earlier: Execution, later: Execution, job: Job | None, who: Interruptions) -> RerunCause:
    if earlier.pid in who.killed:
        return RerunCause.KILLED
    if earlier.pid in who.paused:
        return RerunCause.PAUSED
    if earlier.pid in who.stopped and earlier.ended is None:
        return RerunCause.HANDED_BACK
    if job is not None and earlier.attempt < later.attempt:
        kinds = {e.kind for e in job.errors if e.attempt == earlier.attempt}
        if ErrorKind.LOST in kinds:
            return RerunCause.LEASE_EXPIRED
        if kinds & {ErrorKind.ERROR, ErrorKind.TIMEOUT}:
            return RerunCause.RETRIED
    return RerunCause.UNEXPLAINED


def audit(
    ledger: Ledger | Sequence[Execution],
    expected_ids: Iterable[int],
    *,
    jobs: Mapping[int, Job | None] | None = None,
    interruptions: Interruptions | None = None,
    max_attempts: int | None = None,
    checks: Iterable[Check] = (),
    title: str = "ledger",
    elapsed: float | None = None,
    notes: Collection[str] = (),
) -> AuditReport:
    """Judge one scenario. `jobs` is the store's view of the expected jobs, read at the end.

    Without `jobs` only the ledger is judged (no stuck or unsettled jobs, and
    duplicates are explained by the interrupted pids alone). `max_attempts`
    applies when the store's own figure is not given.
    """
    runs = ledger.executions() if isinstance(ledger, Ledger) else list(ledger)
    who = interruptions or Interruptions()
    expected = frozenset(expected_ids)
    by_job: dict[int, list[Execution]] = defaultdict(list)
    for run in runs:
        by_job[run.job_id].append(run)
    returned = Counter(r.job_id for r in runs if r.ended is not None)
    completed = frozenset(j for j in expected if returned[j])

    reruns: list[Rerun] = []
    for job_id, job_runs in by_job.items():
        ordered = sorted(job_runs, key=lambda r: r.started)
        job = jobs.get(job_id) if jobs is not None else None
        for earlier, later in pairwise(ordered):
            reruns.append(Rerun(job_id, earlier, later, _cause(earlier, later, job, who)))

    over: set[int] = set()
    highest = max((r.attempt for r in runs), default=0)
    for job_id, job_runs in by_job.items():
        job = jobs.get(job_id) if jobs is not None else None
        limit = job.max_attempts if job is not None else max_attempts
        attempts = [r.attempt for r in job_runs] + ([job.attempt] if job is not None else [])
        if limit is not None and max(attempts) > limit:
            over.add(job_id)

    stuck: set[int] = set()
    unsettled: dict[int, str] = {}
    if jobs is not None:
        for job_id in expected:
            job = jobs.get(job_id)
            if job is not None and job.state is JobState.RUNNING:
                stuck.add(job_id)
            elif job_id in completed and (job is None or job.state is not JobState.SUCCEEDED):
                unsettled[job_id] = "not in the store" if job is None else job.state.value
            if job is not None:
                highest = max(highest, job.attempt)

    lost = expected - completed
    lost_as: dict[int, str] = {}
    for job_id in lost:
        job = jobs.get(job_id) if jobs is not None else None
        if job is not None:
            last = job.errors[-1].message if job.errors else ""
            lost_as[job_id] = f"{job.state.value}: {last}" if last else job.state.value
    return AuditReport(
        title=title,
        expected=len(expected),
        completed=len(completed),
        lost=lost,
        stuck=frozenset(stuck),
        lost_as=lost_as,
        unsettled=unsettled,
        executions=len(runs),
        finished_executions=sum(returned.values()),
        pids=len({r.pid for r in runs}),
        reruns=tuple(reruns),
        completed_twice=sum(1 for n in returned.values() if n > 1),
        over_max_attempts=frozenset(over),
        highest_attempt=highest,
        interruptions=who,
        checks=tuple(checks),
        elapsed=elapsed,
        notes=tuple(notes),
    )
