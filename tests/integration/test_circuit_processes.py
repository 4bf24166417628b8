"""A circuit breaker across real worker processes: a failing fake remote API opens the circuit
for every process, no job starts while it is open (none consumes an attempt), and after the
cooldown the probes find the remote back, close it, and the waiting jobs run, on every engine
that serves several processes.

The jobs write their start times to a ledger; the circuit's record (in the store) says when it
opened. A start lags the decision to let it through by the worker's dispatch time (`LAG`), and
a worker trusts a closed circuit it read for `FRESH` seconds, so the other process may let
jobs through for that long after one opened it: the quiet window starts after both.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from stagecrew import App, JobState
from stagecrew.limits.circuit import CLOSED, OPEN, CircuitState
from stagecrew.testing.engines import Engine, engine_params
from stagecrew.worker.circuits import FRESH
from tests.support.processes import start_worker, stop, wait_for, write_app

pytestmark = pytest.mark.slow

COOLDOWN = 5.0
LAG = 0.5

APP = """
import os, time
from stagecrew import App, Context

app = App()

def record(what: str, job_id: int) -> None:
    with open(os.environ["LEDGER_PATH"], "a") as ledger:
        ledger.write(f"{what} {time.time():.6f} {job_id} {os.getpid()}\\n")

@app.task(
    circuit=dict(name="remote", min_calls=4, failure_threshold=0.5, cooldown=5, probes=2),
    max_attempts=50,
    backoff=dict(base=0.1, cap=0.3),
)
def call_remote(i: int, ctx: Context) -> None:
    record("start", ctx.job_id)
    if os.path.exists(os.environ["REMOTE_DOWN"]):
        raise ConnectionError("the remote API is down")
"""


def _producer(url: str) -> App:
    app = App(url)

    @app.task(name="call_remote")
    def call_remote(i: int) -> None: ...

    return app


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def _circuit(app: App) -> CircuitState | None:
    [*records] = app.backend.list_limits("circuit:")
    return CircuitState.from_text(records[0].value) if records else None


@pytest.mark.parametrize("engine", engine_params(cross_process=True, variants=False))
def test_a_failing_remote_opens_the_circuit_for_every_process_until_probes_close_it(
    tmp_path: Path, engine: Engine
) -> None:
    ledger, down = tmp_path / "ledger.txt", tmp_path / "remote-down"
    down.touch()
    with engine.stores(tmp_path) as stores:
        url = stores.url()
        env = {"STAGECREW_URL": url, "LEDGER_PATH": str(ledger), "REMOTE_DOWN": str(down)}
        ref = write_app(tmp_path, "circuit_app", APP)
        app = _producer(url)
        args = ("--concurrency", "2", "--poll-interval", "0.2")
        logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
        workers = [start_worker(tmp_path, ref, env, *args, log_file=log) for log in logs]
        try:
            assert wait_for(lambda: all("started:" in _text(log) for log in logs), 60)
            failing = app.tasks["call_remote"].enqueue_many([(i,) for i in range(6)])
            assert wait_for(lambda: (s := _circuit(app)) is not None and s.state == OPEN, 60)
            opened = _circuit(app)
            assert opened is not None
            waiting = app.tasks["call_remote"].enqueue_many([(i,) for i in range(6, 12)])
            down.unlink()  # the remote is back; only probes can find out
            everything = [*failing, *waiting]
            assert wait_for(
                lambda: all(j.get().state is JobState.SUCCEEDED for j in everything), 120
            ), [j.get().state for j in everything]
            closed = _circuit(app)
            assert closed is not None and (closed.state, closed.opened) == (CLOSED, 1)
            assert {j.get().attempt for j in waiting} == {1}  # waiting cost no attempt
        finally:
            for worker in workers:
                stop(worker)
            app.close()
    starts = [
        (float(at), int(job_id), int(pid))
        for what, at, job_id, pid in (line.split() for line in ledger.read_text().splitlines())
    ]
    opened_at = opened.changed_at
    quiet = [at for at, *_ in starts if opened_at + FRESH + LAG < at < opened_at + COOLDOWN - LAG]
    assert quiet == []  # nothing started, in either process, while the circuit was open
    after = sorted(at for at, *_ in starts if at >= opened_at + COOLDOWN - LAG)
    assert len(after) >= len(waiting)  # and everything ran once it had closed
    assert len({pid for *_, pid in starts}) == 2  # both processes took part
