"""`stagecrew jobs`: list, show and cancel jobs."""

from __future__ import annotations

import click

from ..job import JobState
from .options import app_option, json_option, load
from .output import console, job_json, jobs_table, print_job, print_json

STATES = [str(state) for state in JobState]


@click.group()
def jobs() -> None:
    """Inspect and cancel jobs."""


@jobs.command("list")
@click.option("--state", type=click.Choice(STATES), help="Only jobs in this state.")
@click.option("--queue", help="Only jobs in this queue.")
@click.option("--task", help="Only jobs of this task.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option(
    "--before-id", type=int, metavar="ID", help="Only jobs older than ID (the next page)."
)
@app_option
@json_option
def list_jobs(
    *,
    state: str | None,
    queue: str | None,
    task: str | None,
    limit: int,
    before_id: int | None,
    app_ref: str | None,
    as_json: bool,
) -> None:
    """List jobs, newest first."""
    app = load(app_ref)
    found = app.jobs.list(state=state, queue=queue, task=task, limit=limit, before_id=before_id)
    if as_json:
        print_json([job_json(job) for job in found])
        return
    out = console()
    if not found:
        out.print("no jobs match")
        return
    out.print(jobs_table(found, reasons=state == JobState.DEAD))
    if len(found) == limit:
        out.print(f"more may exist: add --before-id {found[-1].id} for the next page", style="dim")


@jobs.command()
@click.argument("job_id", metavar="ID", type=int)
@app_option
@json_option
def show(job_id: int, app_ref: str | None, as_json: bool) -> None:
    """Show every field of job ID: arguments, result, its unique key and unique states, its
    fairness and concurrency keys, progress, its stored steps and checkpoint, and each
    attempt's error and traceback."""
    app = load(app_ref)
    job = app.jobs.get(job_id)
    steps = app.jobs.steps(job_id)
    if as_json:
        print_json(job_json(job, steps))
    else:
        print_job(console(), job, steps)


@jobs.command()
@click.argument("job_id", metavar="ID", type=int)
@app_option
@json_option
def cancel(job_id: int, app_ref: str | None, as_json: bool) -> None:
    """Cancel job ID.

    A waiting job is cancelled at once and never runs. A running job is asked
    to stop; its worker sees the request at its next heartbeat. A finished job
    is left as it is.
    """
    job = load(app_ref).jobs.cancel(job_id)
    if as_json:
        print_json(job_json(job))
        return
    if job.state is JobState.CANCELLED:
        message = f"job {job.id} ({job.task}) is cancelled"
    elif job.state is JobState.RUNNING:
        message = (
            f"job {job.id} ({job.task}) is running: cancellation requested; "
            "its worker stops it at the next heartbeat"
        )
    else:
        message = f"job {job.id} ({job.task}) had already finished as {job.state}; left as it is"
    click.echo(message)
