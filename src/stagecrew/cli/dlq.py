"""`stagecrew dlq`: the dead-letter queue: list, requeue (re-run) and purge dead jobs."""

from __future__ import annotations

import copy
import sys

import click

from ..job import JobState
from .exits import CliError, CliUsageError
from .options import app_option, duration, json_option, load
from .output import console, format_duration, job_json, jobs_table, print_json


@click.group()
def dlq() -> None:
    """The dead-letter queue: jobs that exhausted their attempts or cannot run."""


@dlq.command("list")
@click.option("--queue", help="Only dead jobs from this queue.")
@click.option("--task", help="Only dead jobs of this task.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@app_option
@json_option
def list_dead(
    *, queue: str | None, task: str | None, limit: int, app_ref: str | None, as_json: bool
) -> None:
    """List dead jobs, newest first, with the error that killed each."""
    found = load(app_ref).jobs.list(state=JobState.DEAD, queue=queue, task=task, limit=limit)
    if as_json:
        print_json([job_json(job) for job in found])
        return
    out = console()
    if not found:
        out.print("the dead-letter queue is empty")
        return
    out.print(jobs_table(found, reasons=True))
    out.print("stagecrew jobs show ID prints every attempt's traceback", style="dim")


@dlq.command()
@click.argument("job_ids", metavar="[ID]...", nargs=-1, type=int)
@click.option(
    "--all", "all_dead", is_flag=True, help="Every dead job (narrow with --task, --queue)."
)
@click.option("--task", help="Only jobs of this task.")
@click.option("--queue", help="Only jobs in this queue.")
@app_option
@json_option
def requeue(
    *,
    job_ids: tuple[int, ...],
    all_dead: bool,
    task: str | None,
    queue: str | None,
    app_ref: str | None,
    as_json: bool,
) -> None:
    """Run dead jobs again, from a fresh attempt count (their past errors are kept).

    \b
      stagecrew dlq requeue 42 43
      stagecrew dlq requeue --all --task resize

    Named jobs may also be cancelled ones; --all takes only dead jobs.
    """
    if not job_ids and not all_dead:
        raise CliUsageError("name the jobs to requeue (stagecrew dlq requeue 42 43) or pass --all")
    count = load(app_ref).jobs.requeue(job_ids, all_dead=all_dead, task=task, queue=queue)
    if as_json:
        print_json({"requeued": count})
    else:
        click.echo(f"requeued {count} job{'s' if count != 1 else ''}")
    if job_ids and count < len(job_ids):
        # exit 1: a script that asked for these jobs must not read "done" for ones left dead
        raise CliError(
            f"{len(job_ids) - count} of the named jobs were not requeued: they do not exist "
            "or are not dead or cancelled"
        )


_retry = copy.copy(requeue)
_retry.hidden = True
dlq.add_command(_retry, "retry")  # the command's former name, kept working


@dlq.command()
@click.option(
    "--older-than",
    metavar="DURATION",
    callback=duration,
    help="Only jobs dead for longer than this: 30s, 15m, 12h, 7d.",
)
@click.option(
    "--all", "all_dead", is_flag=True, help="Every dead job (narrow with --task, --queue)."
)
@click.option("--task", help="Only jobs of this task.")
@click.option("--queue", help="Only jobs in this queue.")
@click.option("--dry-run", is_flag=True, help="Say how many would be deleted; delete nothing.")
@click.option("--yes", "-y", "assume_yes", is_flag=True, help="Do not ask on a terminal.")
@app_option
@json_option
def purge(
    *,
    older_than: float | None,
    all_dead: bool,
    task: str | None,
    queue: str | None,
    dry_run: bool,
    assume_yes: bool,
    app_ref: str | None,
    as_json: bool,
) -> None:
    """Delete dead jobs for good: those older than --older-than, or --all of them.

    On a terminal it asks first, saying how many (--yes does not ask); --dry-run only says.
    """
    if older_than is None and not all_dead:
        raise CliUsageError(
            "say which dead jobs to delete: --older-than DURATION (such as 7d) or --all"
        )
    if older_than is not None and all_dead:
        raise CliUsageError("give --older-than or --all, not both")
    jobs = load(app_ref).jobs
    age = "" if older_than is None else f" dead for over {format_duration(older_than)}"
    if dry_run or (not assume_yes and not as_json and interactive()):
        found = len(
            jobs.purgeable(older_than=older_than, task=task, queue=queue, limit=PREVIEW_LIMIT)
        )
        many = f"{found}{'+' if found >= PREVIEW_LIMIT else ''} job{'s' if found != 1 else ''}"
        if dry_run:
            if as_json:
                print_json({"would_purge": found, "at_least": found >= PREVIEW_LIMIT})
            else:
                click.echo(f"would purge {many}{age} (dry run: nothing deleted)")
            return
        if not found:
            click.echo(f"no dead job{age} to purge")
            return
        click.confirm(f"delete {many}{age} for good?", abort=True, err=True)
    count = jobs.purge(state=JobState.DEAD, older_than=older_than, task=task, queue=queue)
    if as_json:
        print_json({"purged": count})
        return
    click.echo(f"purged {count} job{'s' if count != 1 else ''}{age}")


PREVIEW_LIMIT = 100_000
"""Dead jobs a dry run or a question counts at most ("100000+ jobs")."""


def interactive() -> bool:
    """Someone at a terminal can answer a question (stdin and stderr are terminals)."""
    return sys.stdin.isatty() and sys.stderr.isatty()
