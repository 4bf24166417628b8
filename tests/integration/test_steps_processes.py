"""A worker process SIGKILLed in the middle of a job with steps: the next attempt resumes after
its completed steps, which never run again (an outside ledger file proves it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stagecrew import App, JobState
from tests.support.processes import kill, start_worker, stop, wait_for, write_app
from tests.support.stores import fresh_store

pytestmark = pytest.mark.slow

STEPS_APP = """
import os, time
from stagecrew import App, Context

app = App()
LEDGER = os.environ["LEDGER_PATH"]

def record(line: str) -> None:
    with open(LEDGER, "a") as ledger:
        ledger.write(line + "\\n")

def effect(name: str) -> str:
    record(name)
    return name.upper()

@app.task(max_attempts=5)
def three_steps(ctx: Context) -> list[str]:
    one = ctx.step("one", effect, "one")
    two = ctx.step("two", effect, "two")
    if ctx.attempt == 1:
        record("killed here")
        time.sleep(300)  # the test SIGKILLs the worker now
    three = ctx.step("three", effect, "three")
    return [one, two, three]
"""


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.parametrize("engine", ["sqlite", "postgres", "redis"])
def test_a_sigkilled_job_resumes_at_its_third_step_without_rerunning_the_first_two(
    tmp_path: Path, engine: str
) -> None:
    ledger = tmp_path / "ledger.txt"
    app_ref = write_app(tmp_path, "steps_app", STEPS_APP)
    with fresh_store(engine, tmp_path) as url:
        env = {"STAGECREW_URL": url, "LEDGER_PATH": str(ledger)}
        app = App(url)

        @app.task(name="three_steps")
        def three_steps() -> None: ...

        handle = three_steps.enqueue()
        args = ("--processes", "1", "--concurrency", "1", "--lease-seconds", "1")
        first = start_worker(tmp_path, app_ref, env, *args)
        try:
            assert wait_for(lambda: "killed here" in _lines(ledger), 60), stop(first)[1][-3000:]
        finally:
            kill(first)
        second = start_worker(tmp_path, app_ref, env, *args)
        try:
            finished = wait_for(lambda: handle.state() is JobState.SUCCEEDED, 60)
        finally:
            code, output = stop(second)
        assert code == 0, output[-3000:]
        try:
            assert finished, output[-3000:]
            assert handle.result(timeout=0) == ["ONE", "TWO", "THREE"]
            assert _lines(ledger) == ["one", "two", "killed here", "three"]
            job = handle.get()
            assert job.attempt == 2
            assert [step for step in app.backend.read_steps(job.id).steps] == [
                "one",
                "two",
                "three",
            ]
        finally:
            app.close()
