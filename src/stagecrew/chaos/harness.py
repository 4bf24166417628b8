"""What every chaos scenario shares: the producer app, the ledger, the fleet, the verdict.

A `ChaosRun` enqueues the scenario's jobs on the chaos queue, drives its fleet
of worker processes while waiting for the jobs to finish (restarting workers
that die by themselves), then settles: it waits past the rescue horizon when
jobs are still unfinished, reads the store and the ledger, and audits them.
Closing it stops the workers and removes the scenario's jobs from the store.
"""

from __future__ import annotations

import dataclasses
import random
import tempfile
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..job import FINAL_STATES, Job, JobState
from ..testing.audit import AuditReport, Check, Interruptions, audit
from ..testing.ledger import Execution, Ledger
from ..worker.supervisor import WorkerOptions
from .fleet import Fleet
from .tasks import AWORK, QUEUE, WORK, create_app

BATCH = 1000
TICK = 0.05
UNFINISHED = frozenset({JobState.AVAILABLE, JobState.SCHEDULED, JobState.RUNNING})


@dataclass(frozen=True, slots=True)
class ChaosOptions:
    """One scenario's size and timing; the defaults are the short version."""

    url: str
    jobs: int = 200
    """Jobs of the scenarios that take a count (kill storm, kill points, future, poison)."""
    processes: int = 3
    concurrency: int = 8
    lease_seconds: float = 1.0
    job_seconds: float = 0.1
    """Each job sleeps a random time up to this."""
    kill_interval: float = 0.3
    """Mean seconds between SIGKILLs in the kill storm."""
    kills: int | None = None
    """Stop the storm after this many kills; None: until every job finished."""
    fault_chance: float = 0.1
    """Probability that a worker kills itself each time it passes the injected point."""
    max_worker_losses: int = 10
    """Lost workers a job survives before it goes dead as "worker lost" (App default: 3).

    A storm kills bystanders of a job as often as the job itself, so the default
    of 3 would dead-letter unlucky jobs that never did anything wrong; the
    poison-job scenario uses the App default.
    """
    timeout: float = 300.0
    """Seconds a scenario may take to finish its jobs before it is judged as it stands."""
    seed: int | None = None
    workdir: Path | None = None
    """Where ledgers and worker logs go [default: a new temporary folder]."""

    @property
    def rescue_horizon(self) -> float:
        """Time after a worker died by which its jobs are surely rescued (lease, rescue, slack)."""
        return 2 * self.lease_seconds + 2.0


def safe_url(url: str) -> str:
    """The URL without its password, fit for a report."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[2]}"))


@dataclass(frozen=True, slots=True)
class Settled:
    """What the store and the ledger say once the scenario is over."""

    executions: list[Execution]
    jobs: dict[int, Job | None]
    drained: bool

    def runs_of(self, job_id: int) -> list[Execution]:
        return [r for r in self.executions if r.job_id == job_id]


class ChaosRun:
    def __init__(
        self,
        scenario: str,
        options: ChaosOptions,
        *,
        faults: str | None = None,
        max_worker_losses: int | None = None,
    ) -> None:
        self.scenario = scenario
        self.options = options
        base = options.workdir or Path(tempfile.mkdtemp(prefix="stagecrew-chaos-"))
        self.workdir = base / scenario
        self.workdir.mkdir(parents=True, exist_ok=True)
        ledger_path = self.workdir / "ledger.txt"
        ledger_path.unlink(missing_ok=True)
        self.ledger = Ledger(ledger_path)
        self.log_path = self.workdir / "workers.log"
        self._log = self.log_path.open("ab")
        losses = options.max_worker_losses if max_worker_losses is None else max_worker_losses
        self.app = create_app(options.url, losses)
        self.rng = random.Random(options.seed)
        self.worker_options = WorkerOptions(
            queues=[QUEUE],
            concurrency=options.concurrency,
            lease_seconds=options.lease_seconds,
            grace=5.0,
            poll_interval=0.2,
            log_level="INFO",
        )
        self.fleet = Fleet(
            options.url,
            ledger_path,
            self.worker_options,
            self._log,
            faults=faults,
            max_worker_losses=losses,
        )
        self.enqueued: list[int] = []
        self.started = time.monotonic()

    def __enter__(self) -> ChaosRun:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- producing -------------------------------------------------------------------
    def enqueue_work(
        self, count: int, seconds: float | Sequence[float] | None = None, **options: Any
    ) -> list[int]:
        """Enqueue `count` jobs, sync and async in turn; each sleeps `seconds` (or at random).

        The ids come back in the order of `seconds` when that is a sequence.
        """
        if isinstance(seconds, Sequence):
            durations = list(seconds)
        else:
            durations = [
                self.rng.uniform(0, self.options.job_seconds) if seconds is None else seconds
                for _ in range(count)
            ]
        ids: list[int] = []
        for start in range(0, count, BATCH):
            chunk = range(start, min(count, start + BATCH))
            by_index: dict[int, int] = {}
            for name, parity in ((WORK, 0), (AWORK, 1)):
                task = self.app.get_task(name)
                bound = task.options(**options) if options else task
                indices = [i for i in chunk if i % 2 == parity]
                if indices:
                    handles = bound.enqueue_many([(durations[i],) for i in indices])
                    by_index.update(zip(indices, (h.id for h in handles), strict=True))
            ids.extend(by_index[i] for i in chunk)
        self.enqueued.extend(ids)
        return ids

    # -- waiting ---------------------------------------------------------------------
    def unfinished(self) -> int:
        return sum(
            q.count(s) for q in self.app.jobs.stats() if q.queue == QUEUE for s in UNFINISHED
        )

    def wait(
        self,
        condition: Callable[[], bool],
        timeout: float | None = None,
        *,
        every: float = 0.25,
        tick: Callable[[], None] | None = None,
    ) -> bool:
        """Poll `condition` every `every` seconds, keeping the fleet alive and calling `tick`."""
        deadline = time.monotonic() + (self.options.timeout if timeout is None else timeout)
        next_check = 0.0
        while True:
            self.fleet.restart_dead()
            if tick is not None:
                tick()
            now = time.monotonic()
            if now >= next_check:
                if condition():
                    return True
                next_check = now + every
            if now >= deadline:
                return False
            time.sleep(TICK)

    def wait_drained(
        self, timeout: float | None = None, tick: Callable[[], None] | None = None
    ) -> bool:
        return self.wait(lambda: self.unfinished() == 0, timeout, tick=tick)

    def started_on(self, job_ids: Collection[int]) -> dict[int, int]:
        """Job id -> pid of its latest started run, for the given jobs that started."""
        return {r.job_id: r.pid for r in self.ledger.executions() if r.job_id in job_ids}

    # -- judging ---------------------------------------------------------------------
    def jobs(self, ids: Iterable[int]) -> dict[int, Job | None]:
        """The store's view of the given jobs, read a page of the chaos queue at a time."""
        wanted = set(ids)
        found: dict[int, Job | None] = dict.fromkeys(wanted)
        before: int | None = None
        while True:
            page = self.app.jobs.list(queue=QUEUE, limit=BATCH, before_id=before)
            for job in page:
                if job.id in wanted:
                    found[job.id] = job
            if len(page) < BATCH or (wanted and min(wanted) >= page[-1].id):
                return found
            before = page[-1].id

    def settle(self, ids: Iterable[int] | None = None, *, drained: bool | None = None) -> Settled:
        """Wait for the jobs (past the rescue horizon if need be), stop the fleet, read both."""
        if drained is None:
            drained = self.wait_drained()
        if not drained:
            # whatever is still running now must be rescued within the horizon, or it is stuck
            self.wait(lambda: False, self.options.rescue_horizon)
        jobs = self.jobs(self.enqueued if ids is None else ids)
        self.fleet.stop()
        return Settled(self.ledger.executions(), jobs, drained)

    def report(
        self,
        expected: Iterable[int],
        settled: Settled,
        checks: Iterable[Check] = (),
        notes: Collection[str] = (),
    ) -> AuditReport:
        fleet = self.fleet
        report = audit(
            settled.executions,
            expected,
            jobs=settled.jobs,
            interruptions=Interruptions(
                killed=fleet.interrupted,
                paused=frozenset(fleet.paused),
                stopped=frozenset(fleet.stopped),
            ),
            checks=checks,
            title=f"{self.scenario} on {safe_url(self.options.url)}",
            elapsed=time.monotonic() - self.started,
            notes=(
                *notes,
                f"a job goes dead after {self.app.max_worker_losses} lost workers "
                "(max_worker_losses)",
            ),
        )
        if report.ok:
            return report
        where = f"ledger {self.ledger.path}, worker log {self.log_path}"
        return dataclasses.replace(report, notes=(*report.notes, where))

    def worker_log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    # -- cleaning up -----------------------------------------------------------------
    def close(self) -> None:
        """Stop the workers and remove this scenario's jobs from the store."""
        try:
            self.fleet.stop()
            leftover = [j for j in self.jobs(self.enqueued).values() if j is not None]
            for job in leftover:
                if job.state not in FINAL_STATES:
                    self.app.jobs.cancel(job.id)
            for state in FINAL_STATES:
                self.app.jobs.purge(state=state, queue=QUEUE)
        finally:
            self.app.close()
            self._log.close()
