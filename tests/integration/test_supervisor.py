"""The supervisor with real processes: one stop request per route, dead children's jobs freed at
once, and workers that wait for a store that is down when they start."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stagecrew import App, JobHandle, JobState
from stagecrew.backends.postgres import PostgresBackend
from stagecrew.job import ErrorKind
from stagecrew.testing.ledger import Ledger
from tests.support.processes import (
    children_of,
    descendants_of,
    kill,
    start_worker,
    stop,
    wait_for,
    workers_of,
    write_app,
)
from tests.support.servers import REDIS_BINARY, PostgresCluster, RedisServer
from tests.support.stores import fresh_store

pytestmark = pytest.mark.slow

S = JobState

GATED_APP = """
import os, time
from pathlib import Path
from stagecrew import App, Context
from stagecrew.testing.ledger import Ledger

app = App()
ledger = Ledger(os.environ["LEDGER_PATH"])
GATE = Path(os.environ["GATE_PATH"])

@app.task(max_attempts=5)
def gated(ctx: Context) -> str:
    # Runs until the test opens the gate (creates the file).
    ledger.record("start", ctx.job_id, ctx.attempt)
    while not GATE.exists():
        time.sleep(0.01)
    ledger.record("end", ctx.job_id, ctx.attempt)
    return "done"

@app.task(max_attempts=5)
def stuck_first_time(ctx: Context) -> str:
    # The first attempt never ends by itself (the test kills its process); later ones do.
    ledger.record("start", ctx.job_id, ctx.attempt)
    if ctx.attempt == 1:
        time.sleep(3600)
    ledger.record("end", ctx.job_id, ctx.attempt)
    return "done"
"""


class GatedRun:
    """A `stagecrew worker` serving GATED_APP against `url`; its output goes to a file."""

    def __init__(self, tmp_path: Path, url: str) -> None:
        self.tmp_path = tmp_path
        self.gate = tmp_path / "gate"
        self.ledger = Ledger(tmp_path / "ledger.txt")
        self.log = tmp_path / "worker.log"
        self.env = {
            "STAGECREW_URL": url,
            "LEDGER_PATH": str(self.ledger.path),
            "GATE_PATH": str(self.gate),
        }
        self.app_ref = write_app(tmp_path, "gated_app", GATED_APP)
        self.app = App(url)

        @self.app.task(name="gated")
        def gated() -> str: ...

        @self.app.task(name="stuck_first_time")
        def stuck_first_time() -> str: ...

        self.gated = gated
        self.stuck_first_time = stuck_first_time

    def start(self, *args: str) -> None:
        self.process = start_worker(self.tmp_path, self.app_ref, self.env, *args, log_file=self.log)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def started(self, handle: JobHandle, attempt: int) -> list[int]:
        """Pids of the processes that started `attempt` of the job."""
        return [
            e.pid
            for e in self.ledger.entries()
            if e.job_id == handle.id and e.attempt == attempt and e.event == "start"
        ]

    def close(self) -> tuple[int, str]:
        self.gate.touch()
        code, _ = stop(self.process, timeout=60)
        self.app.close()
        return code, self.output()


@pytest.fixture
def sqlite_run(tmp_path: Path) -> Iterator[GatedRun]:
    run = GatedRun(tmp_path, f"sqlite:///{tmp_path / 'jobs.db'}")
    try:
        yield run
    finally:
        if hasattr(run, "process"):
            kill(run.process)


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


# -- one stop request, whatever its route (systemd's KillMode=control-group) ----------------
@pytest.mark.parametrize("first", ["worker", "supervisor", "every process"])
def test_a_sigterm_to_the_supervisor_and_its_worker_at_once_lets_the_running_job_finish(
    sqlite_run: GatedRun, first: str
) -> None:
    """systemd signals every process of the service at once: that is one stop request.

    "every process": the fork server the workers come from too, which must outlive their
    graceful stop (their exit codes reach the supervisor through it)."""
    run = sqlite_run
    run.start("--processes", "1", "--grace", "60", "--lease-seconds", "60")
    job = run.gated.enqueue()
    assert wait_for(lambda: run.started(job, 1), 30), run.output()[-3000:]
    [child] = run.started(job, 1)
    targets = [child, run.process.pid]
    if first == "supervisor":
        targets.reverse()
    elif first == "every process":
        targets = [run.process.pid, *descendants_of(run.process.pid)]
        assert child in targets
    for pid in targets:  # what systemd does on `systemctl stop`
        os.kill(pid, signal.SIGTERM)
    # Both requests must have reached the worker before the job may end (a worker that takes
    # them as two signals exits at once).
    assert wait_for(lambda: _took_both_requests(run) or not _alive(child), 30), run.output()
    run.gate.touch()
    exited = wait_for(lambda: run.process.poll() is not None, 60)
    code, output = run.close()
    assert exited, output[-3000:]
    assert code == 0, output[-3000:]
    assert "exiting now" not in output, output[-3000:]
    stored = job.get()
    assert stored.state is S.SUCCEEDED, output[-3000:]
    assert (stored.attempt, stored.lost, stored.errors) == (1, 0, ())
    events = [(e.event, e.attempt) for e in run.ledger.entries() if e.job_id == job.id]
    assert events == [("start", 1), ("end", 1)]


def test_a_second_ctrl_c_kills_the_workers_and_the_exit_code_says_so(
    sqlite_run: GatedRun,
) -> None:
    """Jobs were left unfinished: the command exits 128 + SIGINT, as a shell reports it."""
    run = sqlite_run
    run.start("--processes", "1", "--grace", "60", "--lease-seconds", "60")
    job = run.gated.enqueue()
    assert wait_for(lambda: run.started(job, 1), 30), run.output()[-3000:]
    os.kill(run.process.pid, signal.SIGINT)
    assert wait_for(lambda: "stopping workers gracefully" in run.output(), 30), run.output()
    os.kill(run.process.pid, signal.SIGINT)
    exited = wait_for(lambda: run.process.poll() is not None, 60)
    code, output = run.close()
    assert exited, output[-3000:]
    assert code == 128 + signal.SIGINT, output[-3000:]
    assert "SIGINT again: killing workers" in output
    assert job.get().state is not S.SUCCEEDED  # it was not let finish


def _took_both_requests(run: GatedRun) -> bool:
    output = run.output()
    return (
        re.search(r"stagecrew\.worker: stop requested by the supervisor", output) is not None
        and re.search(r"stagecrew\.worker: SIGTERM: ", output) is not None
    )


def test_two_direct_sigterms_to_a_stopping_worker_still_exit_it_at_once(
    sqlite_run: GatedRun,
) -> None:
    """The relay never escalates, but a second signal sent to the worker itself does."""
    run = sqlite_run
    run.start("--processes", "1", "--grace", "60", "--lease-seconds", "60")
    job = run.gated.enqueue()
    assert wait_for(lambda: run.started(job, 1), 30), run.output()[-3000:]
    [child] = run.started(job, 1)
    os.kill(run.process.pid, signal.SIGTERM)  # relayed: a graceful stop
    os.kill(child, signal.SIGTERM)  # the first direct one: the same request
    assert wait_for(lambda: _took_both_requests(run), 30), run.output()[-3000:]
    assert _alive(child)
    os.kill(child, signal.SIGTERM)  # the second direct one: exit now
    assert wait_for(lambda: not _alive(child), 30), run.output()[-3000:]
    assert "again: exiting now" in run.output()


# -- a supervisor that vanishes ---------------------------------------------------------------
def test_the_workers_of_a_killed_supervisor_stop_and_leave_no_process_behind(
    sqlite_run: GatedRun,
) -> None:
    run = sqlite_run
    run.start("--processes", "2", "--lease-seconds", "1")
    run.gate.touch()
    job = run.gated.enqueue()
    assert wait_for(lambda: job.state() is S.SUCCEEDED, 30), run.output()[-3000:]
    assert wait_for(lambda: len(workers_of(run.process.pid)) == 2, 30), run.output()[-3000:]
    left = descendants_of(run.process.pid)
    os.kill(run.process.pid, signal.SIGKILL)
    assert wait_for(lambda: not any(_alive(pid) for pid in left), 30), run.output()[-3000:]
    assert run.output().count("supervisor is gone; shutting down") == 2, run.output()[-3000:]


def test_when_the_fork_server_is_killed_its_workers_are_replaced_and_jobs_still_run(
    sqlite_run: GatedRun,
) -> None:
    """Without the server the supervisor cannot see its workers exit: it takes them for dead,
    ends them (none is left running unsupervised) and starts new ones from a new server."""
    run = sqlite_run
    run.start("--processes", "2")
    assert wait_for(lambda: len(workers_of(run.process.pid)) == 2, 30), run.output()[-3000:]
    old = workers_of(run.process.pid)
    [server] = [p for p in children_of(run.process.pid) if children_of(p)]
    os.kill(server, signal.SIGKILL)
    assert wait_for(lambda: not any(_alive(pid) for pid in old), 30), run.output()[-3000:]
    run.gate.touch()
    job = run.gated.enqueue()
    assert wait_for(lambda: job.state() is S.SUCCEEDED, 30), run.output()[-3000:]
    assert len(workers_of(run.process.pid)) == 2, run.output()[-3000:]
    code, output = run.close()
    assert code == 0, output[-3000:]


# -- the environment -----------------------------------------------------------------------
def test_each_worker_takes_the_environment_its_supervisor_has_when_it_starts_it(
    tmp_path: Path,
) -> None:
    """The fork server keeps the environment it started with; a child must not."""
    run = GatedRun(tmp_path, f"sqlite:///{tmp_path / 'jobs.db'}")
    run.gate.touch()
    job = run.gated.enqueue()
    elsewhere = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    script = (
        "import os, sys\n"
        "from stagecrew.worker.supervisor import Supervisor, WorkerOptions\n"
        f"os.environ['STAGECREW_URL'] = {elsewhere!r}\n"
        f"Supervisor({run.app_ref!r}, 1, WorkerOptions()).start_fork_server()\n"
        f"os.environ['STAGECREW_URL'] = {run.env['STAGECREW_URL']!r}\n"
        f"sys.exit(Supervisor({run.app_ref!r}, 1, WorkerOptions()).run())\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        **run.env,
        "STAGECREW_URL": "",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(root / "src")]),
    }
    with run.log.open("ab") as log:
        run.process = subprocess.Popen(
            [sys.executable, "-c", script],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        ran = wait_for(lambda: job.state() is S.SUCCEEDED, 30)
    finally:
        code, output = run.close()
        kill(run.process)
    assert ran, output[-3000:]
    assert code == 0, output[-3000:]


# -- a core per worker process ----------------------------------------------------------------
@pytest.mark.parametrize("flag", [None, "--no-cpu-affinity"])
def test_a_fleet_covering_the_cores_keeps_each_worker_to_a_core_of_its_own(
    sqlite_run: GatedRun, flag: str | None
) -> None:
    cpus = set(os.sched_getaffinity(0))
    if len(cpus) < 2:
        _missing("needs two usable cores")
    sqlite_run.start("--processes", str(len(cpus)), *([flag] if flag else []))
    assert wait_for(lambda: len(workers_of(sqlite_run.process.pid)) == len(cpus), 30)
    kept = [os.sched_getaffinity(pid) for pid in workers_of(sqlite_run.process.pid)]
    if flag is None:
        assert sorted(kept, key=min) == [{cpu} for cpu in sorted(cpus)]
    else:
        assert kept == [cpus] * len(cpus)
    code, output = sqlite_run.close()
    assert code == 0, output[-3000:]


# -- instant recovery when a child dies ------------------------------------------------------
@pytest.mark.parametrize("engine", ["sqlite", "postgres", "redis"])
def test_the_jobs_of_a_killed_worker_run_again_long_before_their_lease_expires(
    tmp_path: Path, engine: str
) -> None:
    with fresh_store(engine, tmp_path) as url:
        run = GatedRun(tmp_path, url)
        run.start("--processes", "1", "--lease-seconds", "60")
        try:
            job = run.stuck_first_time.enqueue()
            assert wait_for(lambda: run.started(job, 1), 30), run.output()[-3000:]
            [child] = run.started(job, 1)
            os.kill(child, signal.SIGKILL)  # the OOM killer, a segfault
            # the lease has 60 s left: only the supervisor's release can bring it back this soon
            assert wait_for(lambda: job.state() is S.SUCCEEDED, 15), run.output()[-3000:]
        finally:
            code, output = run.close()
        stored = job.get()
        assert (stored.attempt, stored.lost) == (2, 1)
        [error] = stored.errors
        assert (error.kind, error.type, error.attempt) == (ErrorKind.LOST, "WorkerLost", 1)
        assert "released 1 job of dead worker-0" in output, output[-3000:]
        assert code == 0, output[-3000:]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


# -- start-up while the store is down --------------------------------------------------------
def _start_errors(run: GatedRun, reason: str) -> int:
    pattern = rf" ERROR +\S+ job=- stagecrew\.worker: cannot start: .*{re.escape(reason)}"
    return len(re.findall(pattern, run.output()))


def _waits_for_the_store_then_runs_a_job(
    run: GatedRun, bring_up: Callable[[], object], reason: str = "Connection refused"
) -> None:
    run.start("--processes", "1")
    try:
        # every failed start is logged at ERROR with the reason, and the worker keeps trying
        assert wait_for(lambda: _start_errors(run, reason) >= 2, 60), run.output()[-3000:]
        assert run.process.poll() is None, run.output()[-3000:]
        bring_up()
        run.gate.touch()
        job = run.gated.enqueue()
        assert wait_for(lambda: job.state() is S.SUCCEEDED, 60), run.output()[-3000:]
    finally:
        code, output = run.close()
    assert code == 0, output[-3000:]
    assert "store reachable" in output, output[-3000:]


def test_a_worker_started_while_redis_is_down_logs_why_and_starts_once_redis_is_up(
    tmp_path: Path,
) -> None:
    if REDIS_BINARY is None:
        _missing("redis-server is not installed")
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory)  # a free port, nothing listening on it yet
    run = GatedRun(tmp_path, server.url)
    try:
        _waits_for_the_store_then_runs_a_job(run, server.start)
    finally:
        kill(run.process)
        server.crash()


def test_a_worker_started_while_postgres_is_down_logs_why_and_starts_once_it_is_up(
    tmp_path: Path,
) -> None:
    reason = PostgresCluster.missing_reason()
    if reason:
        _missing(reason)
    cluster = PostgresCluster()
    try:
        cluster.create()
        backend = PostgresBackend(cluster.url)
        backend.migrate()
        backend.close()
        cluster.stop()  # the port is closed now: what a worker sees of a server that is down
        run = GatedRun(tmp_path, cluster.url)
        try:
            _waits_for_the_store_then_runs_a_job(run, cluster.start)
        finally:
            kill(run.process)
    finally:
        cluster.remove()


def test_a_worker_started_before_its_sqlite_folder_exists_logs_why_and_starts_once_it_does(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "not-mounted-yet"
    run = GatedRun(tmp_path, f"sqlite:///{folder / 'jobs.db'}")
    try:
        _waits_for_the_store_then_runs_a_job(run, folder.mkdir, "unable to open database file")
    finally:
        kill(run.process)
