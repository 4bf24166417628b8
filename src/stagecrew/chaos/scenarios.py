"""The chaos scenarios. Each runs real worker processes against one store and returns a report.

Pass criterion for every scenario: no job lost, none stuck, every duplicate run
caused by a crash the scenario made, plus the scenario's own checks. See
docs/chaos.md for what each one proves.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..backends.base import DEFAULT_MAX_LOST
from ..job import ErrorKind, JobState
from ..testing.audit import AuditReport, Check
from ..worker.faults import FaultPoint
from .harness import ChaosOptions, ChaosRun, Settled
from .tasks import CRASH

Scenario = Callable[[ChaosOptions], AuditReport]


def _count_check(name: str, count: int, what: str) -> Check:
    return Check(name, count >= 1, f"{count} {what}")


def kill_storm(options: ChaosOptions) -> AuditReport:
    """SIGKILL a random worker every few hundred ms (and restart it) while the jobs drain."""
    with ChaosRun("kill-storm", options) as run:
        ids = run.enqueue_work(options.jobs)
        run.fleet.start(options.processes)
        next_kill = time.monotonic() + options.kill_interval
        kills = 0

        def storm() -> None:
            nonlocal next_kill, kills
            if options.kills is not None and kills >= options.kills:
                return
            if time.monotonic() < next_kill:
                return
            slots = run.fleet.alive()
            if slots:
                run.fleet.kill(run.rng.choice(slots))
                kills += 1
            next_kill = time.monotonic() + options.kill_interval * run.rng.uniform(0.5, 1.5)

        settled = run.settle(drained=run.wait_drained(tick=storm))
        return run.report(
            ids, settled, [_count_check("workers SIGKILLed while jobs ran", kills, "kills")]
        )


def _rescued(settled: Settled) -> int:
    """Jobs the store rescued from a lost worker at least once."""
    return sum(
        1
        for job in settled.jobs.values()
        if job is not None and any(e.kind is ErrorKind.LOST for e in job.errors)
    )


def kill_at(point: FaultPoint) -> Scenario:
    """Workers kill themselves at `point` (see `stagecrew.worker.faults`) while the jobs drain."""
    name = f"kill-{point.value.replace('_', '-')}"

    def scenario(options: ChaosOptions) -> AuditReport:
        faults = f"{point.value}:{options.fault_chance}"
        with ChaosRun(name, options, faults=faults) as run:
            ids = run.enqueue_work(options.jobs)
            run.fleet.start(options.processes)
            settled = run.settle()
            fault_kills = sum(1 for pid in run.fleet.crashed if run.fleet.exit_codes[pid] == -9)
            checks = [
                _count_check(f"workers killed themselves at {point.value}", fault_kills, "kills"),
                _count_check(
                    "jobs of a killed worker rescued after their lease", _rescued(settled), "jobs"
                ),
            ]
            if point is FaultPoint.BEFORE_ACK:
                returned_then_lost = sum(
                    1
                    for r in settled.executions
                    if r.ended is not None and r.pid in run.fleet.crashed
                )
                checks.append(
                    _count_check(
                        "jobs that returned but were not acked ran again",
                        returned_then_lost,
                        "jobs",
                    )
                )
            return run.report(ids, settled, checks)

    scenario.__name__ = name.replace("-", "_")
    scenario.__doc__ = f"Workers SIGKILL themselves at {point.value} with some probability."
    return scenario


SHORT_JOB = 0.1
LONG_JOB = 2.5
SHUTDOWN_GRACE = 1.0


def graceful_shutdown(options: ChaosOptions) -> AuditReport:
    """SIGTERM with a grace shorter than some jobs; then SIGTERM followed by SIGKILL.

    Phase 1: jobs that finish within the grace are acked and never rerun; the
    rest are handed back (the attempt not counted) and run again. Phase 2: the
    worker is SIGKILLed during its grace, after its short jobs were acked: those
    stay succeeded, the unfinished ones run again after their lease (counted).
    """
    with ChaosRun("graceful-shutdown", options) as run:
        concurrency = max(8, options.concurrency)
        durations = [SHORT_JOB, SHORT_JOB, LONG_JOB, LONG_JOB] * 2  # sync and async of each
        checks: list[Check] = []

        # phase 1: SIGTERM, grace shorter than the long jobs
        first = run.enqueue_work(8, durations)
        (slot,) = run.fleet.start(1, concurrency=concurrency, grace=SHUTDOWN_GRACE)
        stopped_pid = run.fleet.pid(slot)
        run.wait(lambda: len(run.started_on(first)) == len(first), 30, every=0.02)
        run.fleet.terminate(slot)
        run.fleet.processes[slot].wait(SHUTDOWN_GRACE + 30)

        # phase 2: a fresh worker reruns phase 1's leftovers, then takes SIGTERM and SIGKILL
        (slot,) = run.fleet.start(1, concurrency=concurrency, grace=LONG_JOB * 2)
        run.wait(lambda: run.unfinished() == 0, 60)
        second = run.enqueue_work(8, durations)
        short = [j for j, d in zip(second, durations, strict=True) if d == SHORT_JOB]
        long = [j for j, d in zip(second, durations, strict=True) if d == LONG_JOB]
        run.wait(lambda: len(run.started_on(second)) == len(second), 30, every=0.02)
        killed_pid = run.fleet.pid(slot)
        run.fleet.terminate(slot)
        short_acked = run.wait(
            lambda: all(
                j is not None and j.state is JobState.SUCCEEDED for j in run.jobs(short).values()
            ),
            LONG_JOB,
            every=0.02,
        )
        long_running = [j for j in long if run.app.jobs.get(j).state is JobState.RUNNING]
        run.fleet.kill(slot, restart=False)
        run.fleet.start(1)
        settled = run.settle()

        for phase, ids, pid, counted in (
            ("SIGTERM", first, stopped_pid, False),
            ("SIGTERM then SIGKILL", second, killed_pid, True),
        ):
            on_pid = [r for r in settled.executions if r.pid == pid and r.job_id in ids]
            finished = {r.job_id for r in on_pid if r.ended is not None}
            unfinished = {r.job_id for r in on_pid if r.ended is None}
            rerun = {j for j in ids if len(settled.runs_of(j)) > 1}
            checks.append(
                Check(
                    f"{phase}: jobs finished during the grace were acked and not rerun",
                    bool(finished) and not (finished & rerun),
                    f"{len(finished)} finished, {len(finished & rerun)} of them rerun",
                )
            )
            checks.append(
                Check(
                    f"{phase}: exactly the unfinished jobs ran again",
                    bool(unfinished) and rerun == unfinished,
                    f"{len(unfinished)} unfinished, {len(rerun)} rerun",
                )
            )
            expected_attempt = 2 if counted else 1
            attempts = sorted(
                {job.attempt for j in unfinished if (job := settled.jobs.get(j)) is not None}
            )
            checks.append(
                Check(
                    f"{phase}: the interrupted attempt was "
                    + ("counted (lost lease)" if counted else "not counted (handed back)"),
                    attempts == [expected_attempt],
                    f"final attempts {attempts}",
                )
            )
        checks.append(
            Check(
                "SIGKILL came after the short jobs were acked and while the long ones ran",
                short_acked and len(long_running) == len(long),
                f"{len(long_running)} of {len(long)} long jobs running at the kill",
            )
        )
        return run.report(first + second, settled, checks)


def paused_worker(options: ChaosOptions) -> AuditReport:
    """SIGSTOP a worker mid-job past its lease, let another run the job, then SIGCONT it.

    The store must end with exactly one success, written by the second run, and
    the late worker's outcome must be refused (fenced) or abandoned at its next
    heartbeat; the worker log says which.
    """
    with ChaosRun("paused-worker", options) as run:
        (late,) = run.fleet.start(1, concurrency=1)
        (job_id,) = run.enqueue_work(1, max(1.0, options.lease_seconds))
        run.wait(lambda: job_id in run.started_on([job_id]), 30, every=0.02)
        paused_pid = run.fleet.pause(late)
        run.fleet.start(1)

        def rerun_finished() -> bool:
            return any(
                r.pid != paused_pid and r.ended is not None
                for r in run.ledger.executions()
                if r.job_id == job_id
            )

        rerun_done = run.wait(rerun_finished, options.rescue_horizon + 30, every=0.05)
        succeeded = run.wait(
            lambda: run.app.jobs.get(job_id).state is JobState.SUCCEEDED, 10, every=0.05
        )
        run.fleet.resume(late)

        late_outcome = (": outcome complete rejected", ": outcome complete not sent")

        def refused_or_abandoned() -> bool:
            """The heartbeat found the lease lost, or the late outcome was fenced or not sent
            (the worker's log names the job and its claim: `job 7 claim 3: outcome ...`)."""
            return any(
                f"job {job_id}: lease lost" in line
                or (f"job {job_id} claim " in line and any(o in line for o in late_outcome))
                for line in run.worker_log().splitlines()
            )

        refused = run.wait(refused_or_abandoned, 15, every=0.05)
        late_returned = run.wait(
            lambda: any(
                r.pid == paused_pid and r.ended is not None for r in run.ledger.executions()
            ),
            5,
            every=0.05,
        )
        settled = run.settle([job_id])
        job = settled.jobs.get(job_id)
        runs = settled.runs_of(job_id)
        winner = next((r for r in runs if r.pid != paused_pid and r.ended is not None), None)
        result = job.result if job is not None else None
        checks = [
            Check(
                "the job ran on the paused worker and again on another",
                rerun_done and len(runs) == 2 and runs[0].pid == paused_pid,
                f"{len(runs)} runs",
            ),
            Check(
                "the store holds exactly one success: the second run's",
                succeeded
                and job is not None
                and job.state is JobState.SUCCEEDED
                and job.attempt == 2
                and winner is not None
                and result == {"pid": winner.pid, "attempt": 2},
                f"state {job.state if job else None}, attempt {job.attempt if job else None}, "
                f"result {result}",
            ),
            Check(
                "the store recorded the paused attempt as a lost lease",
                job is not None
                and any(e.attempt == 1 and e.kind is ErrorKind.LOST for e in job.errors),
            ),
            Check(
                "the late worker's outcome was refused (fenced) or abandoned",
                refused,
                "it returned after resuming" if late_returned else "it had not returned",
            ),
        ]
        return run.report([job_id], settled, checks)


FUTURE_JOBS = 3
EARLY_TOLERANCE = 0.1
"""Seconds a run may seem to start before its `run_at`: clock skew between machines."""


def future_job(options: ChaosOptions) -> AuditReport:
    """Jobs due 10 leases from now run exactly once, at their time, through a worker kill."""
    with ChaosRun("future-job", options) as run:
        delay = 10 * options.lease_seconds
        run.fleet.start(options.processes)
        filler = run.enqueue_work(min(options.jobs, 50))
        future = run.enqueue_work(FUTURE_JOBS, 0.01, delay=delay)
        run_at = {i: j.run_at for i, j in run.jobs(future).items() if j is not None}
        killed = False

        def kill_midway() -> None:
            nonlocal killed
            if not killed and time.monotonic() - run.started > delay / 2:
                slots = run.fleet.alive()
                if slots:
                    run.fleet.kill(run.rng.choice(slots))
                    killed = True

        settled = run.settle(drained=run.wait_drained(delay + 60, tick=kill_midway))
        checks = [Check("a worker was killed while the jobs waited", killed)]
        earliest = min(
            (r.started - run_at[r.job_id] for r in settled.executions if r.job_id in run_at),
            default=None,
        )
        latest = max(
            (r.started - run_at[r.job_id] for r in settled.executions if r.job_id in run_at),
            default=None,
        )
        runs = [len(settled.runs_of(j)) for j in future]
        checks.append(Check("each future job ran exactly once", runs == [1] * len(future)))
        checks.append(
            Check(
                "no future job ran before its time",
                earliest is not None and earliest >= -EARLY_TOLERANCE,
                f"earliest start {earliest:+.3f}s from run_at" if earliest is not None else "",
            )
        )
        late_limit = options.lease_seconds + 2.0
        checks.append(
            Check(
                f"every future job started within {late_limit:g}s of its time",
                latest is not None and latest <= late_limit,
                f"latest start {latest:+.3f}s from run_at" if latest is not None else "",
            )
        )
        return run.report(filler + future, settled, checks)


def poison_job(options: ChaosOptions) -> AuditReport:
    """A job that kills its process every time goes dead as "worker lost"; the rest all finish.

    The jobs that share a worker with the poison job die with it, but they are
    never condemned with it: a job one lost worker away from the limit runs in
    a process of its own (see `stagecrew.worker.isolated`), so only the poison
    job reaches the limit, and its last crash takes down that process, not a worker.
    """
    with ChaosRun("poison-job", options, max_worker_losses=DEFAULT_MAX_LOST) as run:
        run.fleet.start(options.processes, concurrency=options.concurrency)
        poison = run.app.get_task(CRASH).enqueue().id
        good = run.enqueue_work(options.jobs)
        settled = run.settle([poison, *good])
        job = settled.jobs.get(poison)
        max_lost = run.app.max_worker_losses
        errors = job.errors if job is not None else ()
        runs = settled.runs_of(poison)
        workers = run.fleet.worker_pids
        checks = [
            Check(
                "the poison job is dead",
                job is not None and job.state is JobState.DEAD,
                f"state {job.state if job else None}",
            ),
            Check(
                f'it died as "worker lost" after {max_lost} lost workers',
                len(errors) == max_lost
                and all(e.kind is ErrorKind.LOST and "worker lost" in e.message for e in errors),
                f"{len(errors)} errors: {sorted({e.kind.value for e in errors})}",
            ),
            Check(
                f"it killed {max_lost - 1} workers, then only the process of its own it ran in",
                len(run.fleet.crashed) == max_lost - 1
                and len(runs) == max_lost
                and all(r.pid in workers for r in runs[:-1])
                and runs[-1].pid not in workers,
                f"{len(run.fleet.crashed)} workers crashed; {len(runs)} runs, the last "
                + ("on a worker" if runs and runs[-1].pid in workers else "alone"),
            ),
        ]
        return run.report(good, settled, checks)


SCENARIOS: dict[str, Scenario] = {
    "kill-storm": kill_storm,
    "kill-after-claim": kill_at(FaultPoint.AFTER_CLAIM),
    "kill-before-ack": kill_at(FaultPoint.BEFORE_ACK),
    "kill-during-ack": kill_at(FaultPoint.DURING_ACK),
    "graceful-shutdown": graceful_shutdown,
    "paused-worker": paused_worker,
    "future-job": future_job,
    "poison-job": poison_job,
}


def run_scenario(name: str, options: ChaosOptions) -> AuditReport:
    return SCENARIOS[name](options)
