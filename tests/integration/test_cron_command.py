"""`stagecrew cron` on a SQLite file: list, pause, resume, run, and removed schedules."""

from __future__ import annotations

import json
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from stagecrew import App
from stagecrew.cli.loading import load_app
from stagecrew.cli.main import main
from stagecrew.maintenance.scheduler import Scheduler

APP_SOURCE = """
from stagecrew import App

app = App()

@app.periodic(cron="0 3 * * *", tz="Europe/Paris")
@app.task
def nightly_report() -> None: ...

@app.task(queue="email")
def send_digest(region: str) -> str:
    return region

app.schedule(send_digest, every=900, kwargs={"region": "eu"}, name="digest-eu")
"""


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def listed(*args: str) -> dict[str, Any]:
    result = run("cron", "list", "--json", *args)
    assert result.exit_code == 0, result.output
    return {row["name"]: row for row in json.loads(result.stdout)}


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    name = f"cron_cli_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(APP_SOURCE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("STAGECREW_URL", f"sqlite:///{tmp_path / 'jobs.db'}")
    monkeypatch.setenv("STAGECREW_APP", f"{name}:app")
    loaded = load_app(f"{name}:app")
    try:
        yield loaded
    finally:
        loaded.close()
        sys.modules.pop(name, None)


def test_list_shows_each_schedule_before_and_after_a_worker_ran_it(app: App) -> None:
    before = listed()
    assert before["nightly_report"]["expression"] == "0 3 * * *"
    assert before["nightly_report"]["zone"] == "Europe/Paris"
    assert before["digest-eu"]["queue"] == "email"
    assert before["digest-eu"]["last_tick"] is None and not before["digest-eu"]["paused"]
    assert before["digest-eu"]["next_fire"] is not None
    Scheduler(app).fire_due()
    after = listed()
    assert after["digest-eu"]["last_tick"] is not None
    table = run("cron", "list")
    assert table.exit_code == 0
    assert "nightly_report" in table.output and "Europe/Paris" in table.output


def test_pause_and_resume_are_seen_by_the_scheduler(app: App) -> None:
    assert run("cron", "pause", "digest-eu").exit_code == 0
    assert listed()["digest-eu"]["paused"] is True
    assert listed()["digest-eu"]["next_fire"] is None
    assert "digest-eu" not in Scheduler(app).fire_due().fired
    assert run("cron", "resume", "digest-eu").exit_code == 0
    assert listed()["digest-eu"]["paused"] is False


def test_run_enqueues_one_job_now_and_leaves_the_ticks_alone(app: App) -> None:
    Scheduler(app).fire_due()
    tick_before = listed()["digest-eu"]["last_tick"]
    result = run("cron", "run", "digest-eu")
    assert result.exit_code == 0, result.output
    job_id = int(result.output.split()[2])
    job = app.jobs.get(job_id)
    assert (job.task, job.queue, job.payload) == (
        "send_digest",
        "email",
        '{"args":[],"kwargs":{"region":"eu"}}',
    )
    assert listed()["digest-eu"]["last_tick"] == tick_before


def test_a_schedule_removed_from_the_code_is_listed_as_removed(app: App) -> None:
    Scheduler(app).fire_due()
    app.backend.pause_schedule("gone", "default")  # a record no code declares
    rows = listed()
    assert rows["gone"]["removed"] is True
    assert rows["digest-eu"]["removed"] is False
    assert "removed" in run("cron", "list").output
    assert run("cron", "run", "gone").exit_code == 2


def test_an_unknown_schedule_exits_2_naming_the_known_ones(app: App) -> None:
    result = CliRunner().invoke(main, ["cron", "pause", "nope"])
    assert result.exit_code == 2
    assert "digest-eu" in result.output
