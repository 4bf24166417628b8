"""The scenario verdict: lost, stuck, unsettled jobs, and a cause for every duplicate run."""

from __future__ import annotations

from pathlib import Path

from stagecrew.job import AttemptError, ErrorKind, Job, JobState
from stagecrew.testing.audit import Check, Interruptions, RerunCause, audit
from stagecrew.testing.ledger import Execution, Ledger, check


def run(job_id: int, attempt: int, pid: int, started: float, ended: float | None) -> Execution:
    return Execution(job_id, attempt, pid, started, ended)


def job(job_id: int, state: JobState, attempt: int = 1, *errors: AttemptError) -> Job:
    return Job(
        id=job_id,
        task="t",
        queue="q",
        state=state,
        payload="{}",
        priority=0,
        run_at=0.0,
        attempt=attempt,
        max_attempts=3,
        enqueued_at=0.0,
        errors=errors,
    )


def lost_lease(attempt: int) -> AttemptError:
    return AttemptError(attempt, 1.0, ErrorKind.LOST, "WorkerLost", "worker lost")


def test_the_ledger_pairs_each_start_with_its_end(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.txt")
    ledger.record("start", 1, 1)
    ledger.record("start", 2, 1)
    ledger.record("end", 1, 1)
    with (tmp_path / "ledger.txt").open("a") as f:
        f.write("start 3 1 12")  # torn by a kill
    runs = ledger.executions()
    assert [(r.job_id, r.ended is not None) for r in runs] == [(1, True), (2, False)]
    assert check(ledger, [1, 2]).lost == frozenset({2})


def test_a_clean_run_is_ok_and_says_so() -> None:
    report = audit(
        [run(1, 1, 10, 0.0, 0.1), run(2, 1, 11, 0.0, 0.2)],
        [1, 2],
        jobs={1: job(1, JobState.SUCCEEDED), 2: job(2, JobState.SUCCEEDED)},
        title="kill-storm on sqlite",
    )
    assert report.ok
    text = report.render()
    assert text.startswith("kill-storm on sqlite: OK")
    assert "2 enqueued, 2 completed" in text and "0 lost" in text


def test_lost_stuck_and_unsettled_jobs_fail_the_report() -> None:
    report = audit(
        [run(1, 1, 10, 0.0, None), run(2, 1, 10, 0.0, 0.1), run(3, 1, 10, 0.0, None)],
        [1, 2, 3, 4],
        jobs={
            1: job(1, JobState.RUNNING),
            2: job(2, JobState.AVAILABLE),
            3: job(3, JobState.DEAD),
            4: None,
        },
    )
    assert not report.ok
    assert report.lost == {1, 3, 4}
    assert report.stuck == {1}
    assert dict(report.unsettled) == {2: "available"}
    assert "stuck: 1" in report.render()


def test_every_duplicate_gets_the_cause_the_scenario_and_the_store_can_tell() -> None:
    runs = [
        run(1, 1, 10, 0.0, 0.5),  # returned, then its process was killed before the ack
        run(1, 2, 11, 1.0, 1.1),
        run(2, 1, 12, 0.0, None),  # paused
        run(2, 2, 11, 1.0, 1.1),
        run(3, 1, 13, 0.0, None),  # graceful stop handed it back: the attempt is not counted
        run(3, 1, 11, 1.0, 1.1),
        run(4, 1, 14, 0.0, None),  # the store says the lease was lost
        run(4, 2, 11, 1.0, 1.1),
        run(5, 1, 15, 0.0, 0.1),  # nobody can say why this ran again
        run(5, 2, 11, 1.0, 1.1),
    ]
    jobs = {
        1: job(1, JobState.SUCCEEDED, 2, lost_lease(1)),
        2: job(2, JobState.SUCCEEDED, 2, lost_lease(1)),
        3: job(3, JobState.SUCCEEDED, 1),
        4: job(4, JobState.SUCCEEDED, 2, lost_lease(1)),
        5: job(5, JobState.SUCCEEDED, 2),
    }
    who = Interruptions(killed=frozenset({10}), paused=frozenset({12}), stopped=frozenset({13}))
    report = audit(runs, [1, 2, 3, 4, 5], jobs=jobs, interruptions=who)
    assert [r.cause for r in report.reruns] == [
        RerunCause.KILLED,
        RerunCause.PAUSED,
        RerunCause.HANDED_BACK,
        RerunCause.LEASE_EXPIRED,
        RerunCause.UNEXPLAINED,
    ]
    assert report.completed_twice == 2
    assert not report.ok
    assert "unexplained duplicates: 5 (attempt 1 on pid 15)" in report.render()


def test_attempts_above_max_attempts_and_failed_checks_fail_the_report() -> None:
    report = audit([run(1, 4, 10, 0.0, 0.1)], [1], jobs={1: job(1, JobState.SUCCEEDED, 4)})
    assert report.over_max_attempts == {1}
    assert not report.ok
    failed = audit(
        [run(1, 1, 10, 0.0, 0.1)],
        [1],
        max_attempts=3,
        checks=[Check("the future job ran on time", False, "ran 2.0s early")],
    )
    assert not failed.ok
    assert "[FAIL] the future job ran on time: ran 2.0s early" in failed.render()
