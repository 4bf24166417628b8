"""Real worker processes on every server engine: a paused queue is held, a snooze waits.

Pausing a queue while workers run holds its new jobs from all of them; a job in another
queue, enqueued after the held one, completing meanwhile shows that the workers did claim
in the meantime (the positive control). Resuming lets the held job run. A task that snoozes
runs again once what it waits for is there, without spending an attempt.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stagecrew import App, JobState
from tests.support.processes import start_worker, stop, wait_for, write_app
from tests.support.stores import fresh_store

pytestmark = pytest.mark.slow

APP_SOURCE = """
import os
from pathlib import Path
from stagecrew import App, Snooze

app = App()

@app.task(queue="held")
def held(i: int) -> int:
    return i

@app.task(queue="open")
def control(i: int) -> int:
    return i

@app.task(queue="open", max_attempts=1)
def wait_for_file(path: str) -> str:
    if not Path(path).exists():
        raise Snooze(0.05, reason="the file is not there yet")
    return Path(path).read_text()
"""

WAIT = 60.0


@pytest.fixture(params=["sqlite", "postgres", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_store(request.param, tmp_path) as url:
        yield url


def _app(url: str) -> App:
    app = App(url)
    for name, queue in (("held", "held"), ("control", "open"), ("wait_for_file", "open")):
        app.task(name=name, queue=queue)(lambda *args: None)
    return app


def _state(app: App, job_id: int) -> JobState:
    return app.jobs.get(job_id).state


def test_a_queue_paused_under_running_workers_holds_its_jobs_until_resumed(
    tmp_path: Path, store_url: str
) -> None:
    app = _app(store_url)
    app_ref = write_app(tmp_path, "pause_app", APP_SOURCE)
    env = {"STAGECREW_URL": store_url}
    worker = start_worker(
        tmp_path, app_ref, env, "--queues", "held,open", "--processes", "2", "--concurrency", "4"
    )
    try:
        warm_up = app.enqueue("control", [0])
        assert wait_for(lambda: _state(app, warm_up.id) is JobState.SUCCEEDED, WAIT)
        assert app.backend.pause_queue("held") is True
        kept = app.enqueue("held", [1])
        controls = [app.enqueue("control", [i]) for i in range(1, 9)]
        assert wait_for(
            lambda: all(_state(app, c.id) is JobState.SUCCEEDED for c in controls), WAIT
        )
        job = app.jobs.get(kept.id)
        assert (job.state, job.attempt, job.claims) == (JobState.AVAILABLE, 0, 0)
        assert {s.queue: s.paused for s in app.backend.stats()}["held"] is True

        assert app.backend.resume_queue("held") is True
        assert wait_for(lambda: _state(app, kept.id) is JobState.SUCCEEDED, WAIT)
        assert app.jobs.get(kept.id).attempt == 1
    finally:
        code, output = stop(worker)
        app.close()
    assert code == 0, output[-3000:]


def test_a_snoozing_job_runs_once_what_it_waits_for_is_there_without_spending_attempts(
    tmp_path: Path, store_url: str
) -> None:
    app = _app(store_url)
    app_ref = write_app(tmp_path, "snooze_app", APP_SOURCE)
    marker = tmp_path / "uploaded.txt"
    worker = start_worker(tmp_path, app_ref, {"STAGECREW_URL": store_url}, "--queues", "open")
    try:
        handle = app.enqueue("wait_for_file", [str(marker)])
        assert wait_for(lambda: app.jobs.get(handle.id).snoozes >= 2, WAIT)
        assert app.jobs.get(handle.id).state is not JobState.DEAD
        marker.write_text("contents")
        assert wait_for(lambda: _state(app, handle.id) is JobState.SUCCEEDED, WAIT)
        done = app.jobs.get(handle.id)
        assert done.result == "contents"
        assert (done.attempt, done.errors) == (1, ())
        assert done.snoozes >= 2
    finally:
        code, output = stop(worker)
        app.close()
    assert code == 0, output[-3000:]
