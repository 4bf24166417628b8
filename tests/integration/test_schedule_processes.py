"""Three real worker processes share one store and each runs the scheduler: every tick of
an every=1s schedule becomes one job, fired by one of them only."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from stagecrew import App, JobState
from stagecrew.schedule import scheduled_tick
from stagecrew.testing.engines import Engine, engine_params
from tests.support.processes import start_worker, stop, wait_for, write_app

APP = """
from stagecrew import App

app = App()

@app.periodic(every=1, catch_up="all")
@app.task
def tick() -> None:
    pass
"""

FIRED = re.compile(r"schedule tick fired \d+ job\(s\): ([\d, ]+)")
TICKS = 5


@pytest.mark.slow
@pytest.mark.parametrize("engine", engine_params(cross_process=True, variants=False))
def test_three_scheduler_processes_make_one_job_per_tick(tmp_path: Path, engine: Engine) -> None:
    with engine.stores(tmp_path) as stores:
        url = stores.url()
        ref = write_app(tmp_path, "cron_app", APP)
        env = {"STAGECREW_URL": url}
        logs = [tmp_path / f"worker-{i}.log" for i in range(3)]
        workers = [
            start_worker(tmp_path, ref, env, "--concurrency", "2", log_file=log) for log in logs
        ]
        reader = App(url)
        try:
            assert wait_for(lambda: len(reader.jobs.list(task="tick")) >= TICKS, timeout=60)
        finally:
            for worker in workers:
                stop(worker)
        jobs = reader.jobs.list(task="tick", limit=10_000)
        reader.close()
    ticks = Counter(scheduled_tick(job) for job in jobs)
    assert None not in ticks
    assert len(ticks) == len(jobs) >= TICKS  # one job per tick
    fired = Counter(
        int(job_id)
        for log in logs
        for found in FIRED.findall(log.read_text())
        for job_id in found.split(", ")
    )
    assert sorted(fired) == sorted(job.id for job in jobs)
    assert max(fired.values()) == 1, "a tick was fired by two workers"
    assert all(
        job.state in (JobState.SUCCEEDED, JobState.AVAILABLE, JobState.RUNNING) for job in jobs
    )
