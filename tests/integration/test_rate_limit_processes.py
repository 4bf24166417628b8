"""Rate limits across real worker processes, from a ledger the jobs write: a rate is never
exceeded beyond its burst fleet-wide, jobs waiting for a token keep their attempt, and a
`RateLimited` raised in one process pauses the limit for every process, on every engine that
serves several processes.

A job writes its start time itself, after its token was granted, so a start lags its grant by
the time the worker takes to dispatch it; the window check allows `LAG` seconds of that (a
fleet without the limit starts all the jobs within a fraction of a second, many times over).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from stagecrew import App, JobState
from stagecrew.testing.engines import Engine, engine_params
from tests.support.processes import start_worker, stop, wait_for, write_app

pytestmark = pytest.mark.slow

RATE = 10.0
BURST = 2
LAG = 0.5
PAUSE = 1.5

APP = """
import os, time
from stagecrew import App, Context, RateLimited

app = App()

def record(what: str, job_id: int) -> None:
    with open(os.environ["LEDGER_PATH"], "a") as ledger:
        ledger.write(f"{what} {time.time():.6f} {job_id} {os.getpid()}\\n")

@app.task(rate_limit=dict(rate="10/s", burst=2))
def call_api(i: int, ctx: Context) -> None:
    record("start", ctx.job_id)

@app.task(rate_limit=dict(rate="10/s", burst=2, key="{account}"))
def push(account: str, ctx: Context) -> None:
    record("start", ctx.job_id)

@app.task(rate_limit=dict(rate="10/s", burst=2, cooldown=60))
def answers_429(first: bool, ctx: Context) -> None:
    if first and ctx.attempt == 1 and not os.path.exists(os.environ["LEDGER_PATH"] + ".429"):
        open(os.environ["LEDGER_PATH"] + ".429", "w").close()
        record("limited", ctx.job_id)
        raise RateLimited(retry_after=float(os.environ["PAUSE"]))
    record("start", ctx.job_id)
"""


def _producer(url: str) -> App:
    app = App(url)

    @app.task(name="call_api")
    def call_api(i: int) -> None: ...

    @app.task(name="push", rate_limit=dict(rate="10/s", burst=2, key="{account}"))
    def push(account: str) -> None: ...

    @app.task(name="answers_429")
    def answers_429(first: bool) -> None: ...

    return app


def _events(ledger: Path) -> list[tuple[str, float, int, int]]:
    if not ledger.exists():
        return []
    out = []
    for line in ledger.read_text().splitlines():
        what, at, job_id, pid = line.split()
        out.append((what, float(at), int(job_id), int(pid)))
    return out


def _most_in_a_window(starts: list[float]) -> float:
    """The largest excess, over any window, of starts above burst + (window + LAG) * rate."""
    starts = sorted(starts)
    worst = -float("inf")
    for i, first in enumerate(starts):
        for j in range(i, len(starts)):
            allowed = BURST + (starts[j] - first + LAG) * RATE
            worst = max(worst, (j - i + 1) - allowed)
    return worst


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


@contextmanager
def _fleet(tmp_path: Path, engine: Engine, *extra: str) -> Iterator[App]:
    """Two worker processes of 4 slots on a fresh store, started and waiting for work; the
    producer's app, closed when the workers have stopped."""
    ledger = tmp_path / "ledger.txt"
    with engine.stores(tmp_path) as stores:
        url = stores.url()
        env = {"STAGECREW_URL": url, "LEDGER_PATH": str(ledger), "PAUSE": str(PAUSE)}
        ref = write_app(tmp_path, "rate_app", APP)
        app = _producer(url)
        args = ("--concurrency", "4", "--poll-interval", "0.2", *extra)
        logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
        workers = [start_worker(tmp_path, ref, env, *args, log_file=log) for log in logs]
        try:
            assert wait_for(lambda: all("started:" in _text(log) for log in logs), 60)
            yield app
        finally:
            for worker in workers:
                stop(worker)
            app.close()


def _all_succeed(handles: list[Any]) -> None:
    assert wait_for(lambda: all(j.get().state is JobState.SUCCEEDED for j in handles), 120), [
        j.get().state for j in handles
    ]


@pytest.mark.parametrize("engine", engine_params(cross_process=True, variants=False))
def test_a_rate_holds_across_worker_processes(tmp_path: Path, engine: Engine) -> None:
    with _fleet(tmp_path, engine, "--log-level", "info") as app:
        jobs = app.tasks["call_api"].enqueue_many([(i,) for i in range(30)])
        keyed = app.tasks["push"].enqueue_many([(a,) for a in "ab" * 8])
        _all_succeed([*jobs, *keyed])
        stored = [j.get() for j in [*jobs, *keyed]]
        assert {(j.attempt, j.snoozes, j.errors) for j in stored} == {(1, 0, ())}
        buckets = [r.name for r in app.backend.list_limits("rate:")]
        assert buckets == ["rate:call_api", "rate:push:a", "rate:push:b"]
    events = _events(tmp_path / "ledger.txt")
    by_job = {job_id: (at, pid) for what, at, job_id, pid in events if what == "start"}
    assert len(by_job) == len(events) == 46  # each job started once
    plain = [by_job[j.id][0] for j in jobs]
    assert _most_in_a_window(plain) <= 0
    assert len({by_job[j.id][1] for j in jobs}) == 2  # both processes took rated work
    for account in "ab":
        mine = [by_job[j.id][0] for j, a in zip(keyed, "ab" * 8, strict=True) if a == account]
        assert _most_in_a_window(mine) <= 0


@pytest.mark.parametrize("engine", engine_params(cross_process=True, variants=False))
def test_rate_limited_in_one_process_pauses_every_process(tmp_path: Path, engine: Engine) -> None:
    with _fleet(tmp_path, engine) as app:
        first = app.tasks["answers_429"].enqueue(True)
        assert wait_for(lambda: first.get().snoozes == 1, 60)
        rest = app.tasks["answers_429"].enqueue_many([(False,)] * 12)
        _all_succeed([first, *rest])
        assert first.get().attempt == 1 and first.get().snoozes == 1
        assert {(j.get().attempt, j.get().snoozes) for j in rest} == {(1, 0)}
    events = _events(tmp_path / "ledger.txt")
    [limited_at] = [at for what, at, *_ in events if what == "limited"]
    starts = sorted(at for what, at, *_ in events if what == "start")
    assert len(starts) == 13
    # nothing started during the pause, in either process (jobs enqueued after the 429)
    assert starts[0] >= limited_at + PAUSE - LAG
    # then at most half the rate while cooling down
    slowed = RATE / 2
    for i, at in enumerate(starts):
        for j in range(i, len(starts)):
            assert (j - i + 1) <= BURST + (starts[j] - at + LAG) * slowed
