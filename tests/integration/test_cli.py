"""The `stagecrew` command line on a SQLite file: every command's round trip, JSON and errors."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from stagecrew import App, JobState
from stagecrew.cli.loading import load_app
from stagecrew.cli.main import main
from stagecrew.cli.options import parse_duration
from stagecrew.worker.runner import Worker
from tests.support.processes import start_worker, stop, wait_for

APP_SOURCE = """
import time
from stagecrew import App

app = App()

@app.task(queue="images", max_attempts=2)
def resize(path: str, width: int = 100) -> str:
    return f"{path}@{width}"

@app.task(max_attempts=1)
def explode(reason: str) -> None:
    raise ValueError(reason)

@app.task
def pause(seconds: float) -> float:
    time.sleep(seconds)
    return seconds

@app.task(rate_limit=dict(rate="1/m", burst=2))
def ping(n: int) -> int:
    return n

@app.task(circuit=dict(name="payments", min_calls=2))
def charge(n: int) -> int:
    return n

@app.task(concurrency=1)
def exclusive(n: int) -> int:
    return n
"""


@dataclass
class CliApp:
    """An app module written to a temp folder, found by the CLI through STAGECREW_APP."""

    app: App
    ref: str
    url: str
    directory: Path

    def run(self, *args: str) -> Result:
        return CliRunner().invoke(main, list(args), catch_exceptions=False)

    def json(self, *args: str) -> Any:
        result = self.run(*args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    def drain(self) -> int:
        """Run every due job in this process, as a worker would."""
        return asyncio.run(Worker(self.app, concurrency=2).drain())


@pytest.fixture
def cli_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliApp]:
    name = f"cli_app_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(APP_SOURCE))
    monkeypatch.syspath_prepend(str(tmp_path))
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    monkeypatch.setenv("STAGECREW_URL", url)
    monkeypatch.setenv("STAGECREW_APP", f"{name}:app")
    app = load_app(f"{name}:app")
    app.backend.migrate()  # the store exists: inspection commands refuse a missing one
    try:
        yield CliApp(app, f"{name}:app", url, tmp_path)
    finally:
        app.close()
        sys.modules.pop(name, None)


def _dead_jobs(cli: CliApp, count: int) -> list[int]:
    ids = [cli.app.enqueue("explode", [f"boom {i}"]).id for i in range(count)]
    cli.drain()
    assert all(cli.app.jobs.get(i).state is JobState.DEAD for i in ids)
    return ids


# -- help and app loading ------------------------------------------------------
@pytest.mark.parametrize(
    "command",
    [
        [],
        ["worker"],
        ["enqueue"],
        ["jobs"],
        ["jobs", "list"],
        ["jobs", "show"],
        ["jobs", "cancel"],
        ["workflows"],
        ["workflows", "show"],
        ["workflows", "cancel"],
        ["dlq"],
        ["dlq", "list"],
        ["dlq", "requeue"],
        ["dlq", "purge"],
        ["stats"],
        ["limits"],
        ["circuits"],
        ["circuits", "open"],
        ["circuits", "close"],
        ["cron"],
        ["cron", "list"],
        ["cron", "pause"],
        ["cron", "resume"],
        ["cron", "run"],
        ["queues"],
        ["queues", "pause"],
        ["queues", "resume"],
        ["queues", "list"],
        ["demo"],
        ["chaos"],
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output


def test_the_main_help_lists_every_command() -> None:
    result = CliRunner().invoke(main, ["--help"])
    commands = result.output.split("Commands:", 1)[1].split()
    for name in ("chaos", "demo", "dlq", "enqueue", "jobs", "migrate", "stats", "worker"):
        assert name in commands, result.output


def test_the_worker_command_imports_no_other_command_nor_rich_nor_the_runner() -> None:
    """What `stagecrew worker` starts with: the other commands' modules are for them, and
    the runner for its worker processes (their fork server imports it)."""
    script = (
        "import sys\n"
        "from stagecrew.cli.main import main\n"
        "try:\n"
        "    main(['worker', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "loaded = [m for m in sys.modules if m.startswith(('rich', 'stagecrew.cli.', "
        "'stagecrew.chaos', 'stagecrew.demo', 'stagecrew.worker.'))]\n"
        "print(*sorted(loaded), file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(result.stderr.split())
    assert "stagecrew.cli.worker" in loaded, result.stderr
    assert not {m for m in loaded if m.startswith(("rich", "stagecrew.chaos", "stagecrew.demo"))}
    others = {"chaos", "demo", "dlq", "enqueue", "jobs", "migrate", "stats", "output"}
    assert not {m for m in loaded if m.removeprefix("stagecrew.cli.") in others}, loaded
    assert "stagecrew.worker.supervisor" in loaded, loaded
    assert "stagecrew.worker.runner" not in loaded, loaded


def test_without_an_app_commands_exit_2_saying_how_to_name_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("STAGECREW_APP", raising=False)
    monkeypatch.delenv("STAGECREW_URL", raising=False)
    result = CliRunner().invoke(main, ["stats"])
    assert result.exit_code == 2
    assert "--app module:attr" in result.stderr
    assert "Traceback" not in result.output


def test_an_app_that_does_not_import_exits_2_with_one_line(cli_app: CliApp) -> None:
    result = cli_app.run("stats", "--app", "no_such_module_here:app")
    assert result.exit_code == 2
    assert "cannot import 'no_such_module_here'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_module_that_raises_on_import_exits_2_with_one_line(
    cli_app: CliApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    (cli_app.directory / "broken_app_module.py").write_text("raise RuntimeError('no config')\n")
    result = cli_app.run("stats", "--app", "broken_app_module:app")
    sys.modules.pop("broken_app_module", None)
    assert result.exit_code == 2
    assert "RuntimeError: no config" in result.stderr
    assert "Traceback" not in result.output


def test_app_option_works_before_the_command_and_on_it(
    cli_app: CliApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STAGECREW_APP")
    cli_app.app.enqueue("resize", ["a.png"])
    before = CliRunner().invoke(main, ["--app", cli_app.ref, "stats", "--json"])
    on = CliRunner().invoke(main, ["stats", "--app", cli_app.ref, "--json"])
    assert before.exit_code == on.exit_code == 0, before.output + on.output
    counts = [[q["counts"] for q in json.loads(r.stdout)] for r in (before, on)]
    assert counts[0] == counts[1] and counts[0][0]["available"] == 1


# -- enqueue -------------------------------------------------------------------
def test_enqueue_prints_the_id_of_the_stored_job(cli_app: CliApp) -> None:
    result = cli_app.run("enqueue", "resize", "--args", '["a.png"]', "--kwargs", '{"width": 3}')
    assert result.exit_code == 0, result.output
    job = cli_app.app.jobs.get(int(result.stdout.strip()))
    assert (job.task, job.queue, job.args, job.kwargs) == (
        "resize",
        "images",
        ["a.png"],
        {"width": 3},
    )
    assert job.state is JobState.AVAILABLE


def test_enqueue_json_says_whether_an_idempotency_key_created_a_job(cli_app: CliApp) -> None:
    args = ("enqueue", "resize", "--args", '["a.png"]', "--idempotency-key", "order-42")
    first = cli_app.json(*args)
    second = cli_app.json(*args)
    assert first["created"] is True
    assert second == {"id": first["id"], "created": False}
    assert len(cli_app.app.jobs.list()) == 1


def test_enqueue_options_reach_the_job(cli_app: CliApp) -> None:
    before = time.time()
    created = cli_app.json(
        "enqueue", "resize", "--args", '["b.png"]',
        "--queue", "urgent", "--priority", "-5", "--delay", "15m", "--max-attempts", "7",
    )  # fmt: skip
    job = cli_app.app.jobs.get(created["id"])
    assert (job.queue, job.priority, job.max_attempts) == ("urgent", -5, 7)
    assert job.state is JobState.SCHEDULED
    assert before + 900 <= job.run_at <= time.time() + 900


def test_enqueue_of_an_unknown_task_exits_2_with_the_unknown_task_message(
    cli_app: CliApp,
) -> None:
    result = cli_app.run("enqueue", "resise", "--args", '["a.png"]')
    assert result.exit_code == 2
    assert "no task named 'resise' is registered" in result.stderr
    assert "Traceback" not in result.output
    assert cli_app.app.jobs.list() == []


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--args", '["a.png",', "--args is not valid JSON"),
        ("--args", '{"path": "a.png"}', "--args must be a JSON array"),
        ("--kwargs", "width=3", "--kwargs is not valid JSON"),
        ("--kwargs", "[3]", "--kwargs must be a JSON object"),
    ],
)
def test_enqueue_with_bad_json_exits_2_naming_the_option(
    cli_app: CliApp, option: str, value: str, message: str
) -> None:
    result = cli_app.run("enqueue", "resize", option, value)
    assert result.exit_code == 2
    assert message in result.stderr
    assert cli_app.app.jobs.list() == []


def test_enqueue_with_arguments_that_do_not_fit_the_task_exits_2(cli_app: CliApp) -> None:
    result = cli_app.run("enqueue", "resize", "--kwargs", '{"height": 3}')
    assert result.exit_code == 2
    assert "arguments do not fit task 'resize'" in result.stderr


def test_enqueue_into_an_unreachable_store_exits_1_with_the_store_error(
    cli_app: CliApp, tmp_path: Path
) -> None:
    cli_app.app.close()
    cli_app.app.url = f"sqlite:///{tmp_path / 'missing' / 'dir' / 'jobs.db'}"
    result = cli_app.run("enqueue", "resize", "--args", '["a.png"]')
    assert result.exit_code == 1
    assert "could not enqueue" in result.stderr
    assert "Traceback" not in result.output


# -- jobs ----------------------------------------------------------------------
def test_jobs_list_filters_by_queue_task_and_state(cli_app: CliApp) -> None:
    images = [cli_app.app.enqueue("resize", [f"{i}.png"]).id for i in range(3)]
    other = cli_app.app.enqueue("pause", [0]).id
    listed = cli_app.json("jobs", "list", "--queue", "images")
    assert [j["id"] for j in listed] == sorted(images, reverse=True)
    assert listed[0]["args"] == ["2.png"]
    assert [j["id"] for j in cli_app.json("jobs", "list", "--task", "pause")] == [other]
    assert cli_app.json("jobs", "list", "--state", "succeeded") == []
    assert len(cli_app.json("jobs", "list", "--limit", "2")) == 2

    human = cli_app.run("jobs", "list")
    assert human.exit_code == 0
    assert "resize" in human.stdout and "pause" in human.stdout


def test_jobs_list_rejects_an_unknown_state(cli_app: CliApp) -> None:
    result = cli_app.run("jobs", "list", "--state", "exploded")
    assert result.exit_code == 2


def test_jobs_show_prints_args_result_and_every_attempts_traceback(cli_app: CliApp) -> None:
    done = cli_app.app.enqueue("resize", ["a.png"], {"width": 3}).id
    (dead,) = _dead_jobs(cli_app, 1)
    cli_app.drain()

    shown = cli_app.json("jobs", "show", str(done))
    assert shown["state"] == "succeeded"
    assert shown["args"] == ["a.png"] and shown["kwargs"] == {"width": 3}
    assert shown["result"] == "a.png@3"

    failed = cli_app.json("jobs", "show", str(dead))
    assert failed["state"] == "dead"
    (error,) = failed["errors"]
    assert error["type"] == "ValueError" and error["message"] == "boom 0"
    assert "Traceback" in error["traceback"]

    human = cli_app.run("jobs", "show", str(dead))
    assert human.exit_code == 0
    assert "ValueError: boom 0" in human.stdout
    assert "Traceback (most recent call last)" in human.stdout
    assert "raise ValueError(reason)" in human.stdout


def test_workflows_show_prints_the_workflow_and_jobs_show_its_place(cli_app: CliApp) -> None:
    from stagecrew import chord, group

    resize, explode = cli_app.app.tasks["resize"], cli_app.app.tasks["explode"]
    handle = chord(group(resize.s("a.png"), explode.s("no")), resize.s()).enqueue()
    cli_app.drain()
    shown = cli_app.json("workflows", "show", handle.id)
    assert shown["status"] == "failed"
    assert [s["size"] for s in shown["steps"]] == [2, 1]
    assert [(m["step"], m["index"], m["state"]) for m in shown["members"]] == [
        (0, 0, "succeeded"),
        (0, 1, "dead"),
        (1, 0, "pending"),
    ]
    assert shown["members"][1]["error"] == "ValueError: no"
    human = cli_app.run("workflows", "show", handle.id)
    assert human.exit_code == 0
    assert "failed" in human.stdout and "pending" in human.stdout
    callback = shown["members"][2]["job_id"]
    job = cli_app.json("jobs", "show", str(callback))
    assert (job["workflow_id"], job["workflow_step"], job["workflow_index"]) == (handle.id, 1, 0)
    assert f"{handle.id} step 1, member 0" in cli_app.run("jobs", "show", str(callback)).stdout
    cancelled = cli_app.json("workflows", "cancel", handle.id)
    assert cancelled["status"] == "cancelled"
    assert cancelled["members"][2]["state"] == "cancelled"
    missing = cli_app.run("workflows", "show", "nope")
    assert missing.exit_code == 1 and "no workflow with id nope" in missing.stderr


def test_jobs_show_prints_the_unique_key_and_the_states_that_hold_it(cli_app: CliApp) -> None:
    @cli_app.app.task(
        unique=dict(key="sync-{n}", states=("succeeded", "running", "scheduled", "available"))
    )
    def sync(n: int) -> None: ...

    unique = sync.enqueue(7).id
    plain = cli_app.app.enqueue("resize", ["a.png"]).id

    shown = cli_app.json("jobs", "show", str(unique))
    assert shown["unique_key"] == "sync-7"
    assert shown["unique_states"] == ["scheduled", "available", "running", "succeeded"]
    human = cli_app.run("jobs", "show", str(unique)).stdout
    assert re.search(r"^unique key\s+sync-7\s*$", human, re.M)
    assert re.search(r"^unique states\s+scheduled, available, running, succeeded\s*$", human, re.M)

    none = cli_app.json("jobs", "show", str(plain))
    assert (none["unique_key"], none["unique_states"]) == (None, [])
    human = cli_app.run("jobs", "show", str(plain)).stdout
    assert re.search(r"^unique key\s+-\s*$", human, re.M)
    assert re.search(r"^unique states\s+-\s*$", human, re.M)


def test_jobs_show_of_a_missing_job_exits_1(cli_app: CliApp) -> None:
    result = cli_app.run("jobs", "show", "4242")
    assert result.exit_code == 1
    assert "no job with id 4242" in result.stderr


def test_jobs_cancel_cancels_a_waiting_job_and_leaves_a_finished_one(cli_app: CliApp) -> None:
    waiting = cli_app.app.enqueue("resize", ["a.png"]).id
    result = cli_app.run("jobs", "cancel", str(waiting))
    assert result.exit_code == 0
    assert "is cancelled" in result.stdout
    assert cli_app.app.jobs.get(waiting).state is JobState.CANCELLED

    finished = cli_app.app.enqueue("resize", ["b.png"]).id
    cli_app.drain()
    again = cli_app.json("jobs", "cancel", str(finished))
    assert again["state"] == "succeeded"
    assert "already finished" in cli_app.run("jobs", "cancel", str(finished)).stdout


# -- stats ---------------------------------------------------------------------
def test_stats_counts_jobs_per_queue_and_state(cli_app: CliApp) -> None:
    for i in range(3):
        cli_app.app.enqueue("resize", [f"{i}.png"])
    _dead_jobs(cli_app, 2)  # drains the resize jobs too
    cli_app.app.enqueue("resize", ["late.png"])
    queues = {q["queue"]: q for q in cli_app.json("stats")}
    assert set(queues) == {"images", "default"}
    assert queues["images"]["counts"]["succeeded"] == 3
    assert queues["images"]["counts"]["available"] == 1
    assert queues["images"]["oldest_available_age"] >= 0
    assert queues["default"]["counts"]["dead"] == 2
    assert queues["default"]["oldest_available_age"] is None

    human = cli_app.run("stats")
    assert human.exit_code == 0
    assert "images" in human.stdout and "oldest waiting" in human.stdout


def test_limits_and_stats_show_what_a_rate_limit_holds_back(cli_app: CliApp) -> None:
    assert cli_app.json("limits")["rate_limits"] == []
    ids = [cli_app.app.enqueue("ping", [i]).id for i in range(5)]
    assert cli_app.drain() == 2  # the burst; the other three are booked a minute apart
    [row] = cli_app.json("limits")["rate_limits"]
    assert (row["name"], row["rate"], row["burst"], row["tokens"]) == ("rate:ping", "1/m", 2, 0)
    assert 170 < row["booked_for"] <= 180 and row["slowed_for"] == 0
    booked = sorted(cli_app.app.jobs.get(i).run_at for i in ids[2:])
    assert [round(b - booked[0]) for b in booked] == [0, 60, 120]
    human = cli_app.run("limits")
    assert human.exit_code == 0 and "rate:ping" in human.stdout and "1/m" in human.stdout
    stats = cli_app.run("stats")
    assert "rate limit rate:ping: jobs booked up to" in stats.stdout


def test_limits_show_the_jobs_waiting_on_a_full_cap(cli_app: CliApp) -> None:
    [cap] = cli_app.json("limits")["caps"]
    assert cap == {"cap": "exclusive", "limit": 1, "running": 0, "full_keys": None, "waiting": 0}
    for i in range(3):
        cli_app.app.enqueue("exclusive", [i])
    cli_app.app.backend.claim(["default"], "w1", 1, 60.0)  # one runs: the cap is full
    [cap] = cli_app.json("limits")["caps"]
    assert (cap["running"], cap["waiting"]) == (1, 2)
    human = cli_app.run("limits")
    assert "concurrency caps" in human.stdout and "exclusive" in human.stdout
    assert "cap exclusive is full: 2 due job(s) wait on it" in cli_app.run("stats").stdout


def test_circuits_list_and_open_and_close_by_hand(cli_app: CliApp) -> None:
    [row] = cli_app.json("circuits")
    assert (row["name"], row["state"], row["held_open"], row["calls"]) == (
        "payments",
        "closed",
        False,
        0,
    )
    opened = cli_app.run("circuits", "open", "payments")
    assert opened.exit_code == 0, opened.output
    job = cli_app.app.enqueue("charge", [1])
    cli_app.drain()
    held = cli_app.app.jobs.get(job.id)
    assert (held.state, held.attempt) == (JobState.SCHEDULED, 0)  # behind the open circuit
    [row] = cli_app.json("circuits")
    assert (row["state"], row["held_open"], row["opened"]) == ("open", True, 0)
    assert "open (by hand)" in cli_app.run("circuits").stdout
    assert "circuit payments is open by hand: its jobs wait" in cli_app.run("stats").stdout
    assert cli_app.run("circuits", "close", "payments").exit_code == 0
    [row] = cli_app.json("circuits")
    assert (row["state"], row["held_open"]) == ("closed", False)
    missing = cli_app.run("circuits", "open", "no-such-circuit")
    assert missing.exit_code == 1 and "no task of this app declares" in missing.output


def test_stats_of_an_empty_store(cli_app: CliApp) -> None:
    assert cli_app.json("stats") == []
    assert "no jobs" in cli_app.run("stats").stdout


# -- the dead-letter queue -------------------------------------------------------
def test_dlq_purge_dry_run_says_how_many_and_deletes_nothing(cli_app: CliApp) -> None:
    _dead_jobs(cli_app, 3)
    dry = cli_app.run("dlq", "purge", "--all", "--dry-run")
    assert dry.exit_code == 0 and "would purge 3 jobs (dry run: nothing deleted)" in dry.stdout
    assert cli_app.json("dlq", "purge", "--all", "--dry-run") == {
        "would_purge": 3,
        "at_least": False,
    }
    assert len(cli_app.app.jobs.list(state=JobState.DEAD)) == 3


def test_dlq_purge_on_a_terminal_asks_first(
    cli_app: CliApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    _dead_jobs(cli_app, 2)
    monkeypatch.setattr("stagecrew.cli.dlq.interactive", lambda: True)
    no = CliRunner().invoke(main, ["dlq", "purge", "--all"], input="n\n")
    assert no.exit_code == 1 and "delete 2 jobs for good?" in no.stderr
    assert len(cli_app.app.jobs.list(state=JobState.DEAD)) == 2  # nothing deleted
    yes = CliRunner().invoke(main, ["dlq", "purge", "--all"], input="y\n")
    assert yes.exit_code == 0 and "purged 2 jobs" in yes.stdout
    _dead_jobs(cli_app, 1)
    skipped = CliRunner().invoke(main, ["dlq", "purge", "--all", "--yes"])  # no question
    assert skipped.exit_code == 0 and "for good?" not in skipped.stderr


def test_dlq_list_requeue_and_purge_round_trip(cli_app: CliApp) -> None:
    first, second, third = _dead_jobs(cli_app, 3)
    cli_app.app.enqueue("resize", ["alive.png"])

    listed = cli_app.json("dlq", "list")
    assert sorted(j["id"] for j in listed) == [first, second, third]
    human = cli_app.run("dlq", "list")
    assert "ValueError: boom 1" in human.stdout

    assert cli_app.json("dlq", "requeue", str(first)) == {"requeued": 1}
    retried = cli_app.app.jobs.get(first)
    assert (retried.state, retried.attempt) == (JobState.AVAILABLE, 0)
    assert len(retried.errors) == 1, "past errors are kept"

    assert cli_app.json("dlq", "requeue", "--all", "--task", "resize") == {"requeued": 0}
    assert cli_app.json("dlq", "requeue", "--all") == {"requeued": 2}
    cli_app.drain()
    assert len(cli_app.json("dlq", "list")) == 3

    recent = cli_app.run("dlq", "purge", "--older-than", "1h")
    assert recent.exit_code == 0 and "purged 0 jobs" in recent.stdout
    assert cli_app.json("dlq", "purge", "--all", "--queue", "images") == {"purged": 0}
    assert cli_app.json("dlq", "purge", "--all") == {"purged": 3}
    assert "empty" in cli_app.run("dlq", "list").stdout
    assert [j.task for j in cli_app.app.jobs.list()] == ["resize"], "only dead jobs are purged"


def test_dlq_retry_still_requeues_under_its_former_name_and_is_not_listed(cli_app: CliApp) -> None:
    [dead] = _dead_jobs(cli_app, 1)
    assert cli_app.json("dlq", "retry", str(dead)) == {"requeued": 1}
    assert cli_app.app.jobs.get(dead).state is JobState.AVAILABLE
    assert type(cli_app.app.jobs).retry is type(cli_app.app.jobs).requeue
    listed = cli_app.run("dlq", "--help").stdout
    assert "requeue" in listed and "retry" not in listed.split("Commands:")[1]


def test_dlq_requeue_of_jobs_that_were_not_requeued_exits_1_saying_how_many(
    cli_app: CliApp,
) -> None:
    [dead] = _dead_jobs(cli_app, 1)
    alive = cli_app.app.enqueue("resize", ["alive.png"]).id
    partly = cli_app.run("dlq", "requeue", str(dead), str(alive), str(alive + 1000))
    assert partly.exit_code == 1, partly.output
    assert "requeued 1 job" in partly.stdout
    assert "2 of the named jobs were not requeued" in partly.stderr
    assert cli_app.app.jobs.get(dead).state is JobState.AVAILABLE, "the dead one was requeued"
    again = cli_app.run("dlq", "requeue", str(alive), "--json")
    assert again.exit_code == 1 and json.loads(again.stdout) == {"requeued": 0}


def test_version_of_the_command_and_the_package_agree() -> None:
    from importlib import metadata

    import stagecrew

    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"stagecrew {metadata.version('stagecrew')}"
    assert stagecrew.__version__ == metadata.version("stagecrew")
    with pytest.raises(AttributeError, match="no attribute 'version_info'"):
        stagecrew.version_info  # noqa: B018 - the lookup is the test


def test_dlq_purge_of_old_jobs_keeps_the_recent_ones(cli_app: CliApp) -> None:
    _dead_jobs(cli_app, 2)
    time.sleep(1.1)
    (recent,) = _dead_jobs(cli_app, 1)
    assert cli_app.json("dlq", "purge", "--older-than", "1s") == {"purged": 2}
    assert [j["id"] for j in cli_app.json("dlq", "list")] == [recent]


def test_dlq_requeue_and_purge_need_to_be_told_which_jobs(cli_app: CliApp) -> None:
    _dead_jobs(cli_app, 1)
    for args in (
        ["dlq", "requeue"],
        ["dlq", "purge"],
        ["dlq", "purge", "--all", "--older-than", "7d"],
    ):
        result = cli_app.run(*args)
        assert result.exit_code == 2, args
        assert "Traceback" not in result.output
    bad = cli_app.run("dlq", "purge", "--older-than", "7 days")
    assert bad.exit_code == 2
    assert "not a duration" in bad.stderr
    assert len(cli_app.app.jobs.list(state="dead")) == 1


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("30s", 30), ("15m", 900), ("12h", 43_200), ("7d", 604_800), ("2w", 1_209_600),
     ("1h30m", 5_400), ("0.5s", 0.5)],
)  # fmt: skip
def test_durations_accept_seconds_and_units(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "7x", "d7", "-5s", "-5", "inf", "nan", "1h 30", "seven days"])
def test_durations_refuse_anything_else(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


# -- worker --------------------------------------------------------------------
def test_worker_with_an_app_that_does_not_load_exits_2_before_starting_processes(
    cli_app: CliApp,
) -> None:
    result = cli_app.run("worker", "no_such_module_here:app", "--processes", "2")
    assert result.exit_code == 2
    assert "cannot import 'no_such_module_here'" in result.stderr


def test_worker_with_an_unusable_store_url_exits_2(cli_app: CliApp) -> None:
    cli_app.app.close()
    cli_app.app.url = "mysql://localhost/jobs"
    result = cli_app.run("worker", cli_app.ref)
    assert result.exit_code == 2
    assert "unsupported store URL" in result.stderr


@pytest.mark.slow
def test_worker_process_runs_jobs_and_exits_0_on_sigterm(cli_app: CliApp) -> None:
    ids = [cli_app.app.enqueue("resize", [f"{i}.png"], {"width": i}).id for i in range(20)]
    process = start_worker(
        cli_app.directory,
        cli_app.ref,
        {"STAGECREW_URL": cli_app.url},
        "--processes", "1", "--concurrency", "4", "--queues", "images,default", "--grace", "5",
    )  # fmt: skip
    try:
        done = wait_for(
            lambda: all(cli_app.app.jobs.get(i).state is JobState.SUCCEEDED for i in ids), 30
        )
    finally:
        code, output = stop(process)
    assert done, output[-3000:]
    assert code == 0, output[-3000:]
    assert cli_app.app.jobs.get(ids[3]).result == "3.png@3"
    assert "all workers stopped" in output


def test_the_worker_command_a_supervised_child_and_an_embedded_worker_share_one_default() -> None:
    from stagecrew.worker import defaults
    from stagecrew.worker.supervisor import WorkerOptions

    shown = CliRunner().invoke(main, ["worker", "--help"], terminal_width=200).output
    assert "Jobs run at once by each worker process" in shown
    assert f"[default: {defaults.CONCURRENCY}; x>=1]" in shown
    assert WorkerOptions().concurrency == defaults.CONCURRENCY
    assert Worker(App("memory://")).concurrency == defaults.CONCURRENCY


# -- queues ----------------------------------------------------------------------
def test_queues_pause_holds_a_queues_jobs_from_workers_until_resume(cli_app: CliApp) -> None:
    paused = cli_app.run("queues", "pause", "images")
    assert paused.exit_code == 0, paused.output
    assert "queue 'images' paused" in paused.output
    assert "paused already" in cli_app.run("queues", "pause", "images").output
    job = cli_app.app.enqueue("resize", ["a.png"])
    assert cli_app.drain() == 0
    assert cli_app.app.jobs.get(job.id).state is JobState.AVAILABLE
    assert cli_app.json("queues", "list") == [
        {
            "queue": "images",
            "paused": True,
            "counts": {str(state): int(state is JobState.AVAILABLE) for state in JobState},
        }
    ]
    assert cli_app.json("queues", "resume", "images") == {
        "queue": "images",
        "paused": False,
        "changed": True,
    }
    assert cli_app.drain() == 1
    assert cli_app.app.jobs.get(job.id).state is JobState.SUCCEEDED
    assert "was not paused" in cli_app.run("queues", "resume", "images").output


def test_stats_shows_paused_queues_even_without_jobs(cli_app: CliApp) -> None:
    cli_app.app.enqueue("resize", ["a.png"])
    assert cli_app.run("queues", "pause", "email").exit_code == 0
    listed = {q["queue"]: q for q in cli_app.json("stats")}
    assert (listed["images"]["paused"], listed["email"]["paused"]) == (False, True)
    text = cli_app.run("stats")
    assert text.exit_code == 0, text.output
    assert "email (paused)" in text.output
    assert "paused: email" in text.output
    table = cli_app.run("queues", "list")
    assert "paused" in table.output and "email" in table.output


@pytest.mark.parametrize("name", ["", "nul\x00inside"])
def test_queues_pause_of_a_name_no_store_can_hold_exits_2(cli_app: CliApp, name: str) -> None:
    result = CliRunner().invoke(main, ["queues", "pause", name])
    assert result.exit_code == 2
    assert "queue name" in result.output
    assert cli_app.app.backend.paused_queues() == []


def test_jobs_show_prints_how_often_a_job_snoozed(cli_app: CliApp) -> None:
    job = cli_app.app.enqueue("resize", ["a.png"])
    assert cli_app.json("jobs", "show", str(job.id))["snoozes"] == 0
    assert "snoozes" in cli_app.run("jobs", "show", str(job.id)).output


STEPS_SOURCE = """
from stagecrew import App, Context

app = App()

@app.task
def stepped(ctx: Context) -> int:
    ctx.step("fetch", lambda: {"rows": 3})
    ctx.step("load ✓", lambda: [1, 2, 3])
    ctx.checkpoint_state({"cursor": "c" * 200})
    ctx.progress(3, 4, "rows loaded")
    return 3
"""


def test_jobs_show_prints_steps_checkpoint_and_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"steps_app_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(STEPS_SOURCE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("STAGECREW_URL", f"sqlite:///{tmp_path / 'jobs.db'}")
    monkeypatch.setenv("STAGECREW_APP", f"{name}:app")
    app = load_app(f"{name}:app")
    cli = CliApp(app, f"{name}:app", "", tmp_path)
    try:
        job = app.enqueue("stepped")
        cli.drain()
        shown = cli.json("jobs", "show", str(job.id))
        assert [(s["name"], s["size"]) for s in shown["steps"]] == [("fetch", 10), ("load ✓", 7)]
        assert shown["checkpoint"]["size"] == len('{"cursor":""}') + 200
        assert shown["checkpoint"]["preview"].endswith("…")
        assert shown["progress"]["done"] == 3 and shown["progress"]["total"] == 4
        human = cli.run("jobs", "show", str(job.id)).stdout
        assert "steps (2)" in human and "load ✓" in human and "10 B" in human
        assert "3 of 4 (75%)  rows loaded" in human
        assert "checkpoint" in human and "213 bytes" in human
    finally:
        app.close()
        sys.modules.pop(name, None)
