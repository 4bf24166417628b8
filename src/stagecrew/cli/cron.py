"""`stagecrew cron`: the app's schedules: list, pause, resume, and run one now."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import click

from ..app import App
from ..backends.schedules import ScheduleRecord
from ..schedule import CronTiming, Schedule
from .exits import CliUsageError
from .options import app_option, json_option, load


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    """A schedule as `cron list` shows it: from the code, the store, or both."""

    name: str
    declared: Schedule | None
    """None: the store has a record the code no longer declares (removed)."""
    record: ScheduleRecord | None
    """None: declared but never run by a worker yet."""
    next_fire: float | None

    @property
    def queue(self) -> str:
        if self.declared is not None:
            return self.declared.job_queue
        assert self.record is not None
        return self.record.queue

    def as_json(self) -> dict[str, Any]:
        record, declared = self.record, self.declared
        return {
            "name": self.name,
            "task": None if declared is None else declared.task.name,
            "expression": None if declared is None else declared.timing.describe(),
            "zone": None if declared is None else declared.timing.zone,
            "catch_up": None if declared is None else str(declared.catch_up),
            "queue": self.queue,
            "next_fire": self.next_fire,
            "last_tick": None if record is None else record.last_tick,
            "last_job_id": None if record is None else record.last_job_id,
            "last_job_tick": None if record is None else record.last_job_tick,
            "last_fired_at": None if record is None else record.last_fired_at,
            "paused": record is not None and record.paused,
            "removed": declared is None,
        }


def schedule_rows(app: App) -> list[ScheduleRow]:
    """Every schedule of the code and of the store, by name."""
    records = {r.name: r for r in app.backend.list_schedules()}
    now = app.clock.now()
    rows = []
    for name in sorted(records.keys() | app.schedules.keys()):
        declared, record = app.schedules.get(name), records.get(name)
        next_fire = None
        if declared is not None and not (record is not None and record.paused):
            next_fire = declared.next_fire(None if record is None else record.last_tick, now)
        rows.append(ScheduleRow(name, declared, record, next_fire))
    return rows


def _find(app: App, name: str) -> ScheduleRow:
    for row in schedule_rows(app):
        if row.name == name:
            return row
    known = ", ".join(sorted(app.schedules)) or "none"
    raise CliUsageError(f"no schedule named {name!r} in the app or the store (declared: {known})")


def _local(ts: float | None, row: ScheduleRow) -> str:
    """A time in the schedule's own zone (UTC for every= and removed schedules)."""
    if ts is None:
        return "-"
    timing = None if row.declared is None else row.declared.timing
    zone = timing.tz if isinstance(timing, CronTiming) else UTC
    return datetime.fromtimestamp(ts, zone).strftime("%Y-%m-%d %H:%M:%S %Z")


@click.group()
def cron() -> None:
    """The app's periodic schedules (app.periodic, app.schedule) and their state in the store."""


@cron.command("list")
@app_option
@json_option
def list_schedules(*, app_ref: str | None, as_json: bool) -> None:
    """Each schedule: expression, zone, next fire, last fire and its job, paused, removed."""
    from rich.table import Table

    from .output import console, print_json

    app = load(app_ref, code=True, creates=True)
    rows = schedule_rows(app)
    if as_json:
        print_json([row.as_json() for row in rows])
        return
    out = console()
    if not rows:
        out.print("no schedules in the app or the store")
        return
    table = Table(title="schedules", title_justify="left", header_style="bold")
    for column in ("name", "task", "expression", "zone", "next fire", "last fire", "job", "state"):
        table.add_column(column)
    for row in rows:
        record, declared = row.record, row.declared
        state = "removed" if declared is None else "active"
        if record is not None and record.paused:
            state = "paused" if declared is not None else "removed, paused"
        table.add_row(
            row.name,
            "-" if declared is None else declared.task.name,
            "-" if declared is None else declared.timing.describe(),
            "-" if declared is None else declared.timing.zone,
            _local(row.next_fire, row),
            _local(None if record is None else record.last_job_tick, row),
            "-" if record is None or record.last_job_id is None else str(record.last_job_id),
            state,
        )
    out.print(table)
    if any(row.declared is None for row in rows):
        out.print("removed: in the store but no longer in the code; it does not fire", style="dim")


@cron.command()
@click.argument("name")
@app_option
def pause(*, name: str, app_ref: str | None) -> None:
    """Stop NAME from firing on every worker until `cron resume`."""
    app = load(app_ref, code=True, creates=True)
    app.backend.pause_schedule(name, _find(app, name).queue)
    click.echo(f"schedule {name} paused")


@cron.command()
@click.argument("name")
@app_option
def resume(*, name: str, app_ref: str | None) -> None:
    """Let NAME fire again from its next tick (the ticks of the pause are skipped)."""
    app = load(app_ref, code=True, creates=True)
    app.backend.resume_schedule(name, _find(app, name).queue)
    click.echo(f"schedule {name} resumed")


@cron.command()
@click.argument("name")
@app_option
def run(*, name: str, app_ref: str | None) -> None:
    """Enqueue one job of NAME now, with its arguments; its ticks are left as they are."""
    app = load(app_ref, code=True, creates=True)
    declared = _find(app, name).declared
    if declared is None:
        raise CliUsageError(f"schedule {name!r} is no longer in the app's code: nothing to run")
    options: dict[str, Any] = {"queue": declared.job_queue}
    if declared.priority is not None:
        options["priority"] = declared.priority
    handle = declared.task.options(**options).enqueue(*declared.args, **declared.kwargs)
    click.echo(f"enqueued job {handle.id} of schedule {name}")
