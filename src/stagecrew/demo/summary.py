"""What the demo run did, read back from the store: counts, dead letters, throughput, latency.

Nothing here is taken from the producer's or the workers' own bookkeeping:
every number is computed from the stored jobs, which is what an operator
would see. The store keeps only the latest attempt's start time, so the
latency figures say which attempt they measure.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..app import App
from ..errors import SerializationError
from ..job import Job, JobState
from .workload import DemoRun

PAGE = 500

NOTES = (
    "wait = started_at - run_at of each succeeded job's last attempt (the store keeps only the "
    "latest attempt's start; for a retried job run_at is the time its retry became due)",
    "run = finished_at - started_at of that attempt, up to when its outcome was written "
    "(workers write outcomes in small batches)",
    "end to end = finished_at - enqueued_at, including every failed attempt, backoff and the "
    "delayed job's 1 s delay",
    "throughput = finished jobs / (last finished_at - first enqueued_at); worker start-up is "
    "not included",
)


@dataclass(frozen=True, slots=True)
class Percentiles:
    """Nearest-rank percentiles of a set of durations, in seconds."""

    count: int
    p50: float | None
    p99: float | None
    max: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Percentiles:
        ordered = sorted(values)
        if not ordered:
            return cls(0, None, None, None)

        def rank(q: float) -> float:
            return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]

        return cls(len(ordered), rank(0.50), rank(0.99), ordered[-1])


@dataclass(frozen=True, slots=True)
class TaskSummary:
    task: str
    jobs: int
    succeeded: int
    dead: int
    retried: int
    """Jobs that ran more than once."""
    failed_attempts: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    task: str
    attempts: int
    kind: str
    reason: str


@dataclass(frozen=True, slots=True)
class Summary:
    url: str
    processes: int
    concurrency: int
    enqueued: int
    """Jobs the demo wrote."""
    stored: int
    """Jobs found in the store afterwards."""
    missing: tuple[int, ...]
    """Enqueued jobs not found in the store (none, unless a job was lost)."""
    succeeded: int
    dead: int
    cancelled: int
    unfinished: int
    retried: int
    """Jobs that ran more than once."""
    recovered: int
    """Retried jobs that then succeeded."""
    failed_attempts: int
    by_task: tuple[TaskSummary, ...]
    dead_letters: tuple[DeadLetter, ...]
    expected_dead: tuple[int, ...]
    """The poison and unrunnable jobs the demo wrote on purpose."""
    drain_seconds: float
    throughput: float
    wait: Percentiles
    run: Percentiles
    end_to_end: Percentiles
    thumbnails_verified: int
    thumbnails_succeeded: int
    elapsed_seconds: float
    worker_exit_code: int | None
    timed_out: bool
    output_dir: str
    log_path: str
    notes: tuple[str, ...] = NOTES

    @property
    def processed(self) -> int:
        return self.succeeded + self.dead + self.cancelled

    @property
    def as_expected(self) -> bool:
        """Every job finished, none lost, and exactly the jobs meant to fail are dead."""
        return (
            not self.timed_out
            and self.unfinished == 0
            and not self.missing
            and self.stored == self.enqueued
            and {d.id for d in self.dead_letters} == set(self.expected_dead)
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["processed"] = self.processed
        data["as_expected"] = self.as_expected
        data["by_task"] = {t["task"]: t for t in data["by_task"]}
        return data


def all_jobs(app: App) -> Iterator[Job]:
    """Every stored job, newest first, a page at a time."""
    before: int | None = None
    while True:
        page = app.jobs.list(limit=PAGE, before_id=before)
        yield from page
        if len(page) < PAGE:
            return
        before = page[-1].id


def _verified_thumbnail(job: Job) -> bool:
    """The file the job reported exists and has the checksum it reported."""
    try:
        result = job.result
        data = Path(result["path"]).read_bytes()
    except (SerializationError, OSError, KeyError, TypeError):
        return False
    return bool(hashlib.sha256(data).hexdigest() == result.get("sha256"))


def _latencies(jobs: Sequence[Job]) -> tuple[list[float], list[float], list[float]]:
    """Wait, run and end-to-end seconds of each job's last attempt (see NOTES)."""
    wait: list[float] = []
    run: list[float] = []
    end_to_end: list[float] = []
    for job in jobs:
        if job.started_at is None or job.finished_at is None:
            continue
        wait.append(job.started_at - job.run_at)
        run.append(job.finished_at - job.started_at)
        end_to_end.append(job.finished_at - job.enqueued_at)
    return wait, run, end_to_end


def summarize(run: DemoRun) -> Summary:
    jobs = list(all_jobs(run.app))
    by_state: dict[JobState, list[Job]] = {}
    for job in jobs:
        by_state.setdefault(job.state, []).append(job)
    succeeded = by_state.get(JobState.SUCCEEDED, [])
    dead = sorted(by_state.get(JobState.DEAD, []), key=lambda j: j.id)
    finished = [j for j in jobs if j.state.is_final and j.finished_at is not None]

    tasks: dict[str, list[Job]] = {}
    for job in jobs:
        tasks.setdefault(job.task, []).append(job)
    by_task = tuple(
        TaskSummary(
            task=name,
            jobs=len(group),
            succeeded=sum(j.state is JobState.SUCCEEDED for j in group),
            dead=sum(j.state is JobState.DEAD for j in group),
            retried=sum(j.attempt > 1 for j in group),
            failed_attempts=sum(len(j.errors) for j in group),
        )
        for name, group in sorted(tasks.items())
    )

    dead_letters = []
    for job in dead:
        last = job.last_error
        dead_letters.append(
            DeadLetter(
                id=job.id,
                task=job.task,
                attempts=job.attempt,
                kind=str(last.kind) if last else "",
                reason=f"{last.type}: {last.message}" if last else "(no error recorded)",
            )
        )

    first_enqueued = min((j.enqueued_at for j in jobs), default=0.0)
    last_finished = max((j.finished_at or 0.0 for j in finished), default=first_enqueued)
    drain = max(last_finished - first_enqueued, 0.0)
    wait, run_, end_to_end = _latencies(succeeded)
    thumbnails = [j for j in succeeded if j.task == "thumbnail"]
    return Summary(
        url=run.app.url,
        processes=run.options.processes,
        concurrency=run.options.concurrency,
        enqueued=run.enqueued.total,
        stored=len(jobs),
        missing=tuple(sorted(set(run.enqueued.ids) - {j.id for j in jobs})),
        succeeded=len(succeeded),
        dead=len(dead),
        cancelled=len(by_state.get(JobState.CANCELLED, [])),
        unfinished=sum(not j.state.is_final for j in jobs),
        retried=sum(j.attempt > 1 for j in jobs),
        recovered=sum(j.attempt > 1 for j in succeeded),
        failed_attempts=sum(len(j.errors) for j in jobs),
        by_task=by_task,
        dead_letters=tuple(dead_letters),
        expected_dead=tuple(sorted(run.enqueued.poison_ids + run.enqueued.unrunnable_ids)),
        drain_seconds=drain,
        throughput=len(finished) / drain if drain > 0 else 0.0,
        wait=Percentiles.of(wait),
        run=Percentiles.of(run_),
        end_to_end=Percentiles.of(end_to_end),
        thumbnails_verified=sum(_verified_thumbnail(j) for j in thumbnails),
        thumbnails_succeeded=len(thumbnails),
        elapsed_seconds=run.elapsed,
        worker_exit_code=run.worker_exit_code,
        timed_out=run.timed_out,
        output_dir=str(run.options.output_dir),
        log_path=str(run.log_path),
    )
