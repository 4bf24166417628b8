"""The ops commands with only a store URL (`--url` or STAGECREW_URL), no app code, on every
engine that a command line can reach; and a SQLite store that does not exist is refused by
the inspection commands, not created empty."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from stagecrew import App, JobState
from stagecrew.cli.main import main
from stagecrew.cli.options import store_name
from stagecrew.testing.engines import Engine, engine_params


def producer_of(url: str) -> App:
    app = App(url)

    @app.task(queue="reports")
    def send_report(n: int) -> None: ...

    return app


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(autouse=True)
def no_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STAGECREW_APP", raising=False)
    monkeypatch.delenv("STAGECREW_URL", raising=False)


@pytest.mark.parametrize("engine", engine_params(cross_process=True, variants=False))
def test_every_ops_command_works_with_a_url_alone(tmp_path: Path, engine: Engine) -> None:
    with engine.stores(tmp_path) as stores:
        url = stores.url()
        producer = producer_of(url)
        try:
            producer.backend.migrate()
            job = producer.enqueue("send_report", [1])
            [dead] = producer.backend.claim(["reports"], "w1", 1, 30.0)
            assert dead.id == job.id
        finally:
            producer.close()
        again = run("migrate", "--url", url)
        assert again.exit_code == 0 and "up to date already; nothing applied" in again.stdout
        stats = run("stats", "--url", url, "--json")
        assert stats.exit_code == 0, stats.output
        [queue] = json.loads(stats.stdout)
        assert (queue["queue"], queue["counts"][JobState.RUNNING.value]) == ("reports", 1)
        shown = run("--url", url, "jobs", "show", str(job.id), "--json")  # the top-level --url
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.stdout)["task"] == "send_report"
        for command in (
            ["jobs", "list"],
            ["dlq", "list"],
            ["queues", "list"],
            ["limits"],
            ["circuits"],
            ["workers"],
        ):
            result = run(*command, "--url", url, "--json")
            assert result.exit_code == 0, (command, result.output)
        frame = run("top", "--url", url, "--once")
        assert frame.exit_code == 0, frame.output
        assert "reports" in frame.stdout and "recent failures" in frame.stdout
        health = run("health", "--url", url, "--json")
        assert health.exit_code == 1  # no worker runs
        assert json.loads(health.stdout)["problems"] == [f"no live worker in {store_name(url)}"]
        assert run("queues", "pause", "reports", "--url", url).exit_code == 0
        assert json.loads(run("queues", "list", "--url", url, "--json").stdout)[0]["paused"]


def test_stagecrew_url_alone_is_enough(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    producer = producer_of(url)
    producer.enqueue("send_report", [1])
    producer.close()
    monkeypatch.setenv("STAGECREW_URL", url)
    result = run("stats", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["counts"][JobState.AVAILABLE.value] == 1


def test_neither_app_nor_url_exits_2_naming_both() -> None:
    result = run("stats")
    assert result.exit_code == 2
    assert "--app module:attr" in result.stderr and "--url URL" in result.stderr


def test_a_command_that_runs_the_apps_code_still_needs_the_app(tmp_path: Path) -> None:
    result = run("enqueue", "send_report", "--url", f"sqlite:///{tmp_path / 'jobs.db'}")
    assert result.exit_code == 2
    assert "runs the app's code" in result.stderr


@pytest.mark.parametrize("command", [["stats"], ["jobs", "list"], ["dlq", "list"], ["limits"]])
def test_an_inspection_command_never_creates_a_sqlite_store(
    tmp_path: Path, command: list[str]
) -> None:
    missing = tmp_path / "typo" / ".." / "jbos.db"
    result = run(*command, "--url", f"sqlite:///{missing}")
    assert result.exit_code == 2
    assert f"no store at {missing.resolve()}" in result.stderr
    assert not missing.exists()


def test_migrate_creates_the_sqlite_store_and_says_what_it_applied(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    created = run("migrate", "--url", f"sqlite:///{path}")
    assert created.exit_code == 0 and path.exists()
    assert created.stdout.startswith(f"{path.resolve()}: applied 0001_jobs, 0002_claims, ")
    again = run("migrate", "--url", f"sqlite:///{path}")
    assert "the schema was up to date already; nothing applied" in again.stdout
    stats = run("stats", "--url", f"sqlite:///{path}")
    assert stats.exit_code == 0 and f"no jobs in {path.resolve()}" in stats.stdout
