"""Real worker processes on one SQLite file: no attempt runs twice, shutdown hands jobs back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from subprocess import Popen

import pytest

from stagecrew import App, JobHandle, JobState
from stagecrew.testing.ledger import Ledger, check
from tests.support.processes import kill, start_worker, stop, wait_for, write_app

pytestmark = pytest.mark.slow


def _ledger_app(tmp_path: Path, **env: str) -> tuple[App, str, dict[str, str]]:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    full_env = {"STAGECREW_URL": url, "LEDGER_PATH": str(tmp_path / "ledger.txt"), **env}
    app_ref = write_app(tmp_path)
    app = App(url)

    @app.task(name="work")
    def work(i: int) -> int: ...

    @app.task(name="awork")
    def awork(i: int) -> int: ...

    return app, app_ref, full_env


def test_two_worker_processes_never_run_the_same_attempt_twice(tmp_path: Path) -> None:
    app, app_ref, env = _ledger_app(tmp_path, JOB_SECONDS="0.002")
    worker = start_worker(tmp_path, app_ref, env, "--processes", "2", "--concurrency", "10")
    try:
        # both at work before the jobs come: one alone would drain them all in a moment
        assert wait_for(lambda: len(app.backend.list_workers().alive()) == 2, 60)
        jobs = app.tasks["work"].enqueue_many([(i,) for i in range(500)])
        jobs += app.tasks["awork"].enqueue_many([(i,) for i in range(500)])
        done = wait_for(
            lambda: sum(s.count(JobState.SUCCEEDED) for s in app.jobs.stats()) == 1000, 60
        )
    finally:
        code, output = stop(worker)
    assert done, output[-3000:]
    report = check(Ledger(env["LEDGER_PATH"]), [j.id for j in jobs])
    assert report.lost == frozenset()
    assert report.attempts_started_twice == frozenset()
    assert report.duplicate_runs == 0  # nothing crashed, so nothing ran twice
    assert len(report.pids) == 2, "both processes should have taken work"
    assert {j.get().attempt for j in jobs} == {1}
    assert code == 0, output[-3000:]


def test_sigterm_hands_running_jobs_back_without_burning_an_attempt(tmp_path: Path) -> None:
    app, app_ref, env = _ledger_app(
        tmp_path, JOB_MIN_SECONDS="60", JOB_SECONDS="60", MAX_ATTEMPTS="1"
    )
    jobs = app.tasks["awork"].enqueue_many([(i,) for i in range(4)])
    worker = start_worker(
        tmp_path, app_ref, env, "--processes", "1", "--concurrency", "4", "--grace", "0.5"
    )
    ledger = Ledger(env["LEDGER_PATH"])
    try:
        assert wait_for(lambda: len(ledger.entries()) == 4, 30)
    finally:
        code, output = stop(worker)
    assert code == 0, output[-3000:]
    for job in jobs:
        stored = job.get()
        assert stored.state is JobState.AVAILABLE, output[-3000:]
        assert stored.attempt == 0 and stored.errors == ()


def test_a_worker_process_does_not_wait_for_the_sync_jobs_it_handed_back(tmp_path: Path) -> None:
    """Their threads cannot be stopped and still sleep for a minute: the process leaves them."""
    app, app_ref, env = _ledger_app(
        tmp_path, JOB_MIN_SECONDS="60", JOB_SECONDS="60", MAX_ATTEMPTS="1"
    )
    jobs = app.tasks["work"].enqueue_many([(i,) for i in range(2)])
    worker = start_worker(
        tmp_path, app_ref, env, "--processes", "1", "--concurrency", "2", "--grace", "0.5"
    )
    ledger = Ledger(env["LEDGER_PATH"])
    try:
        assert wait_for(lambda: len(ledger.entries()) == 2, 30)
    finally:
        code, output = stop(worker, timeout=20)
    assert code == 0, output[-3000:]
    assert "grace period over: handing 2 jobs back to the queue" in output
    assert "did not end within" not in output  # it ended by itself, without the last resort
    for job in jobs:
        stored = job.get()
        assert stored.state is JobState.AVAILABLE, output[-3000:]
        assert stored.attempt == 0 and stored.errors == ()


STUBBORN_APP = """
import asyncio, os
from stagecrew import App
from stagecrew.testing.ledger import Ledger

app = App()
ledger = Ledger(os.environ["LEDGER_PATH"])

@app.task(max_attempts=1)
async def stubborn() -> None:
    ledger.record("start", 0, 1)
    while True:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            pass  # a bug in the task: it goes on when cancelled
"""


def test_a_worker_process_exits_even_when_a_job_ignores_its_cancellation(tmp_path: Path) -> None:
    """The event loop's teardown would wait for that job for ever; the process exits anyway."""
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    env = {"STAGECREW_URL": url, "LEDGER_PATH": str(tmp_path / "ledger.txt")}
    app_ref = write_app(tmp_path, "stubborn_app", STUBBORN_APP)
    app = App(url)

    @app.task(name="stubborn")
    def stubborn() -> None: ...

    job = stubborn.enqueue()
    worker = start_worker(tmp_path, app_ref, env, "--processes", "1", "--grace", "0.5")
    ledger = Ledger(env["LEDGER_PATH"])
    try:
        assert wait_for(lambda: len(ledger.entries()) == 1, 30)
    finally:
        code, output = stop(worker, timeout=40)
    assert code == 0, output[-3000:]
    assert "grace period over: handing 1 jobs back to the queue" in output
    assert "did not end within" in output, output[-3000:]
    stored = job.get()  # handed back all the same, its task abandoned with the process
    assert stored.state is JobState.AVAILABLE, output[-3000:]
    assert stored.attempt == 0 and stored.errors == ()


def test_supervisor_restarts_a_worker_that_was_killed(tmp_path: Path) -> None:
    app, app_ref, env = _ledger_app(tmp_path, JOB_SECONDS="0.01")
    worker = start_worker(tmp_path, app_ref, env, "--processes", "1", "--lease-seconds", "1")
    ledger = Ledger(env["LEDGER_PATH"])
    try:
        first = app.tasks["work"].enqueue(1)
        assert wait_for(lambda: first.state() is JobState.SUCCEEDED, 30)
        victim = ledger.entries()[-1].pid
        os.kill(victim, signal.SIGKILL)
        second = app.tasks["work"].enqueue(2)
        assert wait_for(lambda: second.state() is JobState.SUCCEEDED, 30)
    finally:
        code, output = stop(worker)
    assert ledger.entries()[-1].pid != victim
    assert "restarting" in output
    assert code == 0


def test_supervisor_gives_up_when_a_worker_cannot_load_its_app(tmp_path: Path) -> None:
    (tmp_path / "broken_app.py").write_text(
        "import os\n"
        "from stagecrew import App\n"
        "if os.getpid() != int(os.environ['SUPERVISOR_PID']):\n"
        "    raise RuntimeError('missing setting in the worker')\n"
        "app = App()\n"
    )
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    script = (
        "import os, sys\n"
        f"sys.path[:0] = [{str(tmp_path)!r}]\n"
        "os.environ['SUPERVISOR_PID'] = str(os.getpid())\n"
        "from stagecrew.worker.supervisor import Supervisor, WorkerOptions\n"
        "sys.exit(Supervisor('broken_app:app', 1, WorkerOptions()).run())\n"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "STAGECREW_URL": url, "PYTHONPATH": str(root / "src")},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr.decode()[-2000:]
    assert b"cannot start" in result.stderr


def _running_sync_jobs(tmp_path: Path) -> tuple[App, list[JobHandle], Ledger, Popen[bytes]]:
    """Two processes each running two sync jobs of a minute, with a grace of a minute."""
    app, app_ref, env = _ledger_app(tmp_path, JOB_MIN_SECONDS="60", JOB_SECONDS="60")
    jobs = app.tasks["work"].enqueue_many([(i,) for i in range(4)])
    worker = start_worker(
        tmp_path,
        app_ref,
        env,
        *("--processes", "2", "--concurrency", "2", "--grace", "60", "--lease-seconds", "1"),
    )
    ledger = Ledger(env["LEDGER_PATH"])
    if not wait_for(lambda: len(ledger.entries()) == 4, 30):
        _, output = stop(worker)
        pytest.fail(f"the jobs did not start: {output[-3000:]}")
    return app, jobs, ledger, worker


def _signal_twice(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    time.sleep(0.3)
    os.kill(pid, signal.SIGTERM)


def _gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists() or "Z" in _proc_state(pid)


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def _came_back(app: App, jobs: list[JobHandle]) -> bool:
    app.backend.rescue()
    return all(j.get().state is JobState.AVAILABLE for j in jobs)


def test_a_second_sigterm_to_the_supervisor_kills_its_workers_at_once(tmp_path: Path) -> None:
    app, jobs, ledger, worker = _running_sync_jobs(tmp_path)
    children = {e.pid for e in ledger.entries()}
    try:
        _signal_twice(worker.pid)
        exited = wait_for(lambda: worker.poll() is not None, 15)
    finally:
        code, output = stop(worker)
    assert exited, output[-3000:]
    assert code == 128 + signal.SIGTERM, output[-3000:]  # jobs were left unfinished
    assert "again: killing workers" in output
    assert all(_gone(pid) for pid in children), output[-3000:]
    assert wait_for(lambda: _came_back(app, jobs), 10)
    assert {tuple(e.kind.value for e in j.get().errors) for j in jobs} == {("lost",)}


def test_a_second_sigterm_to_a_worker_exits_it_at_once(tmp_path: Path) -> None:
    app, jobs, ledger, worker = _running_sync_jobs(tmp_path)
    child = ledger.entries()[0].pid
    mine = [j for j in jobs if any(e.pid == child and e.job_id == j.id for e in ledger.entries())]
    try:
        _signal_twice(child)
        exited = wait_for(lambda: _gone(child), 15)
    finally:
        kill(worker)  # the other worker's jobs would hold it for a minute
        _, output = stop(worker)
    assert exited, output[-3000:]
    assert "again: exiting now" in output
    assert len(mine) == 2
    assert wait_for(lambda: _came_back(app, mine), 10)
