"""Real worker processes are SIGKILLed mid-job; the ledger proves nothing was lost."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest

from stagecrew import App, JobState
from stagecrew.testing.ledger import Ledger, check
from tests.support.processes import start_worker, stop, wait_for, write_app

pytestmark = pytest.mark.slow


def _all_finished(app: App) -> bool:
    counts: dict[JobState, int] = {}
    for queue in app.jobs.stats():
        for state, n in queue.counts.items():
            counts[state] = counts.get(state, 0) + n
    return not any(
        counts.get(s, 0) for s in (JobState.AVAILABLE, JobState.SCHEDULED, JobState.RUNNING)
    )


def test_sigkilled_workers_lose_no_job_and_never_run_an_attempt_twice(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    ledger_path = tmp_path / "ledger.txt"
    app_ref = write_app(tmp_path)
    # Random kills, not a poison job: the supervisor hands a killed worker's jobs straight
    # back, so the next kill often finds them again, and three losses would condemn a job.
    env = {
        "STAGECREW_URL": url,
        "LEDGER_PATH": str(ledger_path),
        "JOB_SECONDS": "0.05",
        "MAX_WORKER_LOSSES": "20",
    }
    app = App(url)

    @app.task(name="work")
    def work(i: int) -> int: ...

    @app.task(name="awork")
    def awork(i: int) -> int: ...

    jobs = work.enqueue_many([(i,) for i in range(300)]) + awork.enqueue_many(
        [(i,) for i in range(300)]
    )
    ids = [j.id for j in jobs]
    worker = start_worker(
        tmp_path, app_ref, env, "--processes", "2", "--concurrency", "8", "--lease-seconds", "1"
    )
    ledger = Ledger(ledger_path)
    rng = random.Random(7)
    kills = 0
    try:
        for _ in range(6):
            time.sleep(0.4)
            recent = {e.pid for e in ledger.entries()[-50:]} - {worker.pid}
            alive = [p for p in recent if Path(f"/proc/{p}").exists()]
            if alive:
                os.kill(rng.choice(alive), signal.SIGKILL)
                kills += 1
        assert wait_for(lambda: _all_finished(app), timeout=90), app.jobs.stats()
    finally:
        code, output = stop(worker)
    report = check(ledger, ids)
    assert kills >= 3, output[-3000:]
    assert report.lost == frozenset(), output[-3000:]
    assert report.attempts_started_twice == frozenset()
    states = {app.jobs.get(i).state for i in ids}
    assert states == {JobState.SUCCEEDED}
    assert code == 0, output[-3000:]
    print(f"kills={kills} duplicates={report.duplicate_runs} worker pids={len(report.pids)}")


def test_job_that_keeps_killing_its_worker_goes_dead_as_worker_lost(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    env = {"STAGECREW_URL": url, "LEDGER_PATH": str(tmp_path / "ledger.txt")}
    app_ref = write_app(tmp_path)
    app = App(url)

    @app.task(name="crash", max_attempts=10)
    def crash() -> None: ...

    @app.task(name="work")
    def work(i: int) -> int: ...

    poison = crash.enqueue()
    good = work.enqueue_many([(i,) for i in range(50)])
    worker = start_worker(
        tmp_path, app_ref, env, "--processes", "1", "--concurrency", "1", "--lease-seconds", "0.5"
    )
    try:
        assert wait_for(lambda: poison.get().state is JobState.DEAD, timeout=60)
        assert wait_for(lambda: _all_finished(app), timeout=60)
    finally:
        _, output = stop(worker)
    dead = poison.get()
    assert dead.attempt == 3  # the app's max_worker_losses, not max_attempts
    assert all("worker lost" in e.message for e in dead.errors), dead.errors
    assert {g.get().state for g in good} == {JobState.SUCCEEDED}, output[-2000:]
