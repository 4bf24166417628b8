"""Concurrency caps across real worker processes, from a ledger the jobs write: a cap of N is
never exceeded and is reached (not serialised to one), jobs waiting on a cap keep their
attempt, and a killed worker's slots come back, on every engine that serves several processes.

A job writes its start and end times itself, between its claim and its outcome, so the
intervals the ledger shows lie inside the slots the store gave out: more than N of them
overlapping would mean the store let more than N claims hold the cap at once.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from stagecrew import App, JobState
from stagecrew.testing.engines import Engine, engine_params
from tests.support.processes import kill, start_worker, stop, wait_for, write_app

pytestmark = pytest.mark.slow

APP = """
import os, time
from stagecrew import App, Context

app = App()

def record(what: str, job_id: int, group: str) -> None:
    with open(os.environ["LEDGER_PATH"], "a") as ledger:
        ledger.write(f"{what} {time.time():.6f} {job_id} {group} {os.getpid()}\\n")

@app.task(concurrency=3)
def capped(i: int, ctx: Context) -> None:
    record("start", ctx.job_id, "capped")
    time.sleep(0.05)
    record("end", ctx.job_id, "capped")

@app.task(concurrency=dict(key="{customer}", limit=1))
def per_customer(customer: str, ctx: Context) -> None:
    record("start", ctx.job_id, customer)
    time.sleep(0.05)
    record("end", ctx.job_id, customer)

@app.task(concurrency=1)
def hold(seconds: float, ctx: Context) -> None:
    record("start", ctx.job_id, "hold")
    time.sleep(seconds if ctx.attempt == 1 else 0.01)  # a re-run (after a kill) is quick
    record("end", ctx.job_id, "hold")
"""


def _producer(url: str) -> App:
    """The tasks as the producer declares them: with the per-key cap, whose key the producer
    computes at enqueue (the other caps are the workers' alone)."""
    app = App(url)

    @app.task(name="capped")
    def capped(i: int) -> None: ...

    @app.task(name="per_customer", concurrency=dict(key="{customer}", limit=1))
    def per_customer(customer: str) -> None: ...

    @app.task(name="hold")
    def hold(seconds: float) -> None: ...

    return app


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def _events(ledger: Path) -> list[tuple[str, float, int, str, int]]:
    if not ledger.exists():
        return []
    out = []
    for line in ledger.read_text().splitlines():
        what, at, job_id, group, pid = line.split()
        out.append((what, float(at), int(job_id), group, int(pid)))
    return out


def _most_at_once(events: list[tuple[str, float, int, str, int]], groups: set[str]) -> int:
    """The most jobs of `groups` the ledger shows running at one time (an end at the same
    instant as a start counts first)."""
    points = sorted((at, 0 if what == "end" else 1) for what, at, _, g, _ in events if g in groups)
    now = most = 0
    for _, starts in points:
        now += 1 if starts else -1
        most = max(most, now)
    return most


@pytest.mark.parametrize("engine", engine_params(cross_process=True, variants=False))
def test_caps_hold_across_worker_processes_and_are_reached(tmp_path: Path, engine: Engine) -> None:
    ledger = tmp_path / "ledger.txt"
    with engine.stores(tmp_path) as stores:
        url = stores.url()
        env = {"STAGECREW_URL": url, "LEDGER_PATH": str(ledger)}
        ref = write_app(tmp_path, "caps_app", APP)
        app = _producer(url)
        # 2 slots a process: 4 in the fleet, above the caps, which only the store can hold
        # (each process alone would never exceed them)
        args = ("--concurrency", "2", "--poll-interval", "0.2", "--log-level", "info")
        logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
        workers = [start_worker(tmp_path, ref, env, *args, log_file=log) for log in logs]
        try:
            # both wait for work before there is any, so that both take some
            assert wait_for(lambda: all("started:" in _text(log) for log in logs), 60)
            jobs = app.tasks["capped"].enqueue_many([(i,) for i in range(30)])
            jobs += app.tasks["per_customer"].enqueue_many([(c,) for c in "abc" * 6])
            assert wait_for(lambda: all(j.get().state is JobState.SUCCEEDED for j in jobs), 120), [
                j.get().state for j in jobs
            ]
            assert {j.get().attempt for j in jobs} == {1}  # waiting on a cap cost no attempt
        finally:
            for worker in workers:
                stop(worker)
            app.close()
    events = _events(ledger)
    assert len(events) == 2 * 48
    assert len({pid for *_, pid in events}) == 2  # both processes took capped work
    assert _most_at_once(events, {"capped"}) == 3  # reached: both processes at once
    for customer in "abc":
        assert _most_at_once(events, {customer}) == 1
    assert _most_at_once(events, {"a", "b", "c"}) >= 2  # the keys ran side by side


@pytest.mark.parametrize("engine", engine_params(cross_process=True, variants=False))
def test_a_killed_workers_slot_comes_back_with_its_lease(tmp_path: Path, engine: Engine) -> None:
    ledger = tmp_path / "ledger.txt"
    with engine.stores(tmp_path) as stores:
        url = stores.url()
        env = {"STAGECREW_URL": url, "LEDGER_PATH": str(ledger)}
        ref = write_app(tmp_path, "caps_app", APP)
        app = _producer(url)
        args = ("--concurrency", "4", "--poll-interval", "0.2", "--lease-seconds", "2")
        doomed = start_worker(tmp_path, ref, env, *args)
        survivor = None
        try:
            stuck = app.tasks["hold"].enqueue(600.0)
            assert wait_for(lambda: stuck.get().state is JobState.RUNNING, 60)
            after = app.tasks["hold"].enqueue_many([(0.01,) for _ in range(3)])
            survivor = start_worker(tmp_path, ref, env, *args)
            time.sleep(1.0)  # the cap is held: the survivor runs none of them yet
            assert {j.get().state for j in after} == {JobState.AVAILABLE}
            killed_at = time.time()
            kill(doomed)
            everything = [stuck, *after]
            assert wait_for(
                lambda: all(j.get().state is JobState.SUCCEEDED for j in everything), 60
            ), [j.get().state for j in everything]
        finally:
            kill(doomed)
            if survivor is not None:
                stop(survivor)
            app.close()
    events = _events(ledger)
    # before the kill only the stuck job started; after it, one at a time (the killed
    # attempt never wrote its end, so it is left out of the count)
    assert [e[2] for e in events if e[1] < killed_at] == [stuck.id]
    assert _most_at_once([e for e in events if e[1] >= killed_at], {"hold"}) == 1
    assert len([e for e in events if e[0] == "end"]) == 4
