"""A poison suspect runs in a process of its own: it never wedges its worker or condemns others.

A suspect is a job one lost worker away from `App.max_worker_losses`. Real
worker processes (`stagecrew worker`) on SQLite, PostgreSQL and Redis, with a
task module of this test's own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from stagecrew import App, ErrorKind, JobHandle, JobState
from stagecrew.testing.ledger import Ledger
from tests.support.processes import start_worker, stop, wait_for, workers_of, write_app
from tests.support.stores import fresh_store

pytestmark = pytest.mark.slow

MAX_LOST = 3

SUSPECT_APP = """
import asyncio, os, signal, time
from stagecrew import App, Context, JobState
from stagecrew.testing.ledger import Ledger

app = App(max_worker_losses=3)
ledger = Ledger(os.environ["LEDGER_PATH"])

@app.task
def quick(ctx: Context) -> int:
    ledger.record("start", ctx.job_id, ctx.attempt)
    return os.getpid()

@app.task
async def hang(ctx: Context) -> None:
    ledger.record("start", ctx.job_id, ctx.attempt)
    await asyncio.Event().wait()

@app.task
def kill_own_process(ctx: Context) -> None:
    ledger.record("start", ctx.job_id, ctx.attempt)
    os.kill(os.getpid(), signal.SIGKILL)

@app.task
def hold_the_interpreter(ctx: Context) -> int:
    '''Never return, and never let another thread of this process run (C code holding the GIL).'''
    ledger.record("start", ctx.job_id, ctx.attempt)
    return sum(range(10**15))

@app.task
def outlive(job_id: int, ctx: Context) -> list[object]:
    '''Run until job `job_id` is dead: [True, pid], or [False, pid] after a minute.'''
    ledger.record("start", ctx.job_id, ctx.attempt)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if app.jobs.get(job_id).state is JobState.DEAD:
            return [True, os.getpid()]
        time.sleep(0.05)
    return [False, os.getpid()]
"""


@pytest.fixture(params=["sqlite", "postgres", "redis"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_store(request.param, tmp_path) as url:
        yield url


def _apps(url: str, tmp_path: Path) -> tuple[App, str, dict[str, str]]:
    """The producer's app (task names only), the worker's app reference, and its environment."""
    env = {"STAGECREW_URL": url, "LEDGER_PATH": str(tmp_path / "ledger.txt")}
    app_ref = write_app(tmp_path, "suspect_app", SUSPECT_APP)
    app = App(url, max_worker_losses=MAX_LOST)

    @app.task(name="quick")
    def quick() -> int: ...

    @app.task(name="hang")
    def hang() -> None: ...

    @app.task(name="kill_own_process")
    def kill_own_process() -> None: ...

    @app.task(name="outlive")
    def outlive(job_id: int) -> list[object]: ...

    @app.task(name="hold_the_interpreter")
    def hold_the_interpreter() -> int: ...

    return app, app_ref, env


def _make_suspect(app: App, job: JobHandle) -> None:
    """Two workers die while they run `job` (claimed, then rescued after its lease)."""
    backend = app.backend
    for losses in range(1, MAX_LOST):
        claimed = backend.claim([app.default_queue], "a-worker-that-dies", 10, 0.05)
        assert [c.id for c in claimed] == [job.id]
        assert wait_for(lambda: backend.rescue(MAX_LOST).total == 1, 30)
        assert job.get().lost == losses
    assert job.get().state is JobState.AVAILABLE


def test_a_poison_suspect_beside_a_hung_job_runs_and_the_worker_keeps_serving(
    url: str, tmp_path: Path
) -> None:
    app, app_ref, env = _apps(url, tmp_path)
    suspect = app.tasks["quick"].enqueue()
    _make_suspect(app, suspect)
    hung = app.tasks["hang"].enqueue()  # claimed in the suspect's batch: it never finishes
    ledger = Ledger(env["LEDGER_PATH"])
    worker = start_worker(
        tmp_path, app_ref, env, "--processes", "1", "--concurrency", "4", "--grace", "1"
    )
    try:
        started = wait_for(lambda: hung.id in {e.job_id for e in ledger.entries()}, 60)
        others = app.tasks["quick"].enqueue_many([() for _ in range(5)])
        served = wait_for(
            lambda: all(j.get().state is JobState.SUCCEEDED for j in [suspect, *others]), 60
        )
        hung_state = hung.get().state
    finally:
        app.close()
        code, output = stop(worker)
    assert started, output[-3000:]
    assert served, output[-3000:]
    assert hung_state is JobState.RUNNING
    worker_pids = {j.get().result for j in others}
    assert len(worker_pids) == 1, output[-3000:]
    ran_alone_in = suspect.get().result
    assert ran_alone_in not in worker_pids, "the suspect should run in a process of its own"
    assert suspect.get().lost == MAX_LOST - 1
    assert code == 0, output[-3000:]


def test_a_poison_suspect_that_kills_its_process_goes_dead_alone_while_its_neighbours_finish(
    url: str, tmp_path: Path
) -> None:
    app, app_ref, env = _apps(url, tmp_path)
    suspect = app.tasks["kill_own_process"].enqueue()
    _make_suspect(app, suspect)
    neighbours = app.tasks["outlive"].enqueue_many([(suspect.id,) for _ in range(3)])
    worker = start_worker(
        tmp_path, app_ref, env, "--processes", "1", "--concurrency", "4", "--grace", "1"
    )
    try:
        finished = wait_for(
            lambda: all(j.get().state is JobState.SUCCEEDED for j in neighbours), 120
        )
    finally:
        code, output = stop(worker)
    try:
        dead = suspect.get()
        results = [j.get() for j in neighbours]
    finally:
        app.close()
    assert finished, output[-3000:]
    assert dead.state is JobState.DEAD, output[-3000:]
    assert len(dead.errors) == MAX_LOST
    verdict = dead.errors[-1]
    assert verdict.kind is ErrorKind.LOST and "worker lost" in verdict.message, verdict
    # the neighbours ran while the verdict fell, in the one worker process, which lived on
    assert [r.result[0] for r in results] == [True, True, True], output[-3000:]
    assert len({r.result[1] for r in results}) == 1
    assert "restarting" not in output, output[-3000:]
    for job in results:
        assert (job.attempt, job.lost, job.errors) == (1, 0, ()), job
    assert code == 0, output[-3000:]


def _started_in(ledger: Ledger, job: JobHandle) -> int | None:
    """The pid of the process that started `job` last, or None if it has not started."""
    pids = [e.pid for e in ledger.entries() if e.job_id == job.id and e.event == "start"]
    return pids[-1] if pids else None


def _gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


def test_cancelling_a_poison_suspect_stops_the_process_it_runs_in(url: str, tmp_path: Path) -> None:
    app, app_ref, env = _apps(url, tmp_path)
    suspect = app.tasks["hang"].enqueue()
    _make_suspect(app, suspect)
    ledger = Ledger(env["LEDGER_PATH"])
    worker = start_worker(
        tmp_path, app_ref, env, "--processes", "1", "--lease-seconds", "3", "--grace", "1"
    )
    try:
        assert wait_for(lambda: _started_in(ledger, suspect) is not None, 60)
        child = _started_in(ledger, suspect)
        assert child is not None and child not in workers_of(worker.pid)
        app.jobs.cancel(suspect.id)
        cancelled = wait_for(lambda: suspect.get().state is JobState.CANCELLED, 60)
        child_gone = wait_for(lambda: _gone(child), 30)
        worker_alive = worker.poll() is None
    finally:
        code, output = stop(worker)
        app.close()
    assert cancelled, output[-3000:]
    assert child_gone and worker_alive, output[-3000:]
    assert code == 0, output[-3000:]


def test_at_shutdown_a_poison_suspect_is_handed_back_and_its_process_stopped(
    url: str, tmp_path: Path
) -> None:
    app, app_ref, env = _apps(url, tmp_path)
    suspect = app.tasks["hang"].enqueue()
    _make_suspect(app, suspect)
    ledger = Ledger(env["LEDGER_PATH"])
    worker = start_worker(tmp_path, app_ref, env, "--processes", "1", "--grace", "1")
    try:
        assert wait_for(lambda: _started_in(ledger, suspect) is not None, 60)
        child = _started_in(ledger, suspect)
        workers = workers_of(worker.pid)
    finally:
        code, output = stop(worker)
    try:
        stored = suspect.get()
    finally:
        app.close()
    assert child is not None and child not in workers and _gone(child), output[-3000:]
    assert stored.state is JobState.AVAILABLE, output[-3000:]
    assert (stored.attempt, stored.lost, len(stored.errors)) == (MAX_LOST - 1, MAX_LOST - 1, 2)
    assert code == 0, output[-3000:]


def test_a_poison_suspect_whose_lease_is_lost_has_its_process_stopped(tmp_path: Path) -> None:
    """Another owner took the job (as after a stall): the child stops, and nothing is written."""
    with fresh_store("sqlite", tmp_path) as url:
        app, app_ref, env = _apps(url, tmp_path)
        suspect = app.tasks["hang"].enqueue()
        _make_suspect(app, suspect)
        ledger = Ledger(env["LEDGER_PATH"])
        worker = start_worker(
            tmp_path, app_ref, env, "--processes", "1", "--lease-seconds", "3", "--grace", "1"
        )
        try:
            assert wait_for(lambda: _started_in(ledger, suspect) is not None, 60)
            child = _started_in(ledger, suspect)
            assert child is not None and child not in workers_of(worker.pid)
            with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
                db.execute(
                    "UPDATE stagecrew_jobs SET lease_owner = 'another-worker' WHERE id = ?",
                    (suspect.id,),
                )
            child_gone = wait_for(lambda: _gone(child), 30)
            worker_alive = worker.poll() is None
        finally:
            code, output = stop(worker)
        try:
            stored = suspect.get()
        finally:
            app.close()
        assert child_gone and worker_alive, output[-3000:]
        assert "lease lost" in output, output[-3000:]
        assert (stored.state, stored.lease_owner) == (JobState.RUNNING, "another-worker")
        assert code == 0, output[-3000:]


def _gone(pid: int) -> bool:
    """The process has exited (a zombie no one reaped yet counts as exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_a_poison_suspect_stuck_in_c_code_dies_with_its_worker_before_its_job_is_released(
    tmp_path: Path,
) -> None:
    """The process a suspect runs in watches its worker from a thread; a task holding the GIL
    starves that thread. The supervisor must end that process itself before it releases the
    dead worker's jobs, or the released job would still be running somewhere."""
    with fresh_store("sqlite", tmp_path) as url:
        app, app_ref, env = _apps(url, tmp_path)
        suspect = app.tasks["hold_the_interpreter"].enqueue()
        _make_suspect(app, suspect)
        ledger = Ledger(env["LEDGER_PATH"])
        worker = start_worker(tmp_path, app_ref, env, "--processes", "1", "--grace", "1")
        isolated: int | None = None
        try:
            assert wait_for(lambda: bool(ledger.entries()), 60)
            isolated = ledger.entries()[0].pid
            stat = Path(f"/proc/{isolated}/stat").read_text().rsplit(")", 1)[1].split()
            its_worker = int(stat[1])  # the worker process that started it
            assert its_worker in workers_of(worker.pid)
            os.kill(its_worker, signal.SIGKILL)
            assert wait_for(lambda: _gone(isolated), 15), (
                "the suspect's process outlived its worker"
            )
        finally:
            if isolated is not None and not _gone(isolated):  # never leave it spinning
                with contextlib.suppress(ProcessLookupError):
                    os.kill(isolated, signal.SIGKILL)
            app.close()
            stop(worker)
