"""`stagecrew stats`: how many jobs each queue holds in each state, and how late it runs."""

from __future__ import annotations

import click
from rich.table import Table
from rich.text import Text

from ..backends.base import QueueStats
from ..job import JobState
from .circuits import circuit_rows
from .limits import cap_rows, rate_limits
from .options import app_option, json_option, load, store_name
from .output import STATE_STYLES, console, format_duration, print_json


@click.command()
@app_option
@json_option
def stats(app_ref: str | None, as_json: bool) -> None:
    """Jobs per queue and state, the age of each queue's oldest waiting job, and pauses.

    A queue with jobs waiting that no live worker serves is marked: its jobs wait until a
    worker for it starts (a typo in --queues or in a task's queue looks like this).

    The age is how long the longest-waiting due job has been due: a number that
    keeps growing means the workers do not keep up with that queue (or that it is
    paused: `stagecrew queues resume NAME`).
    """
    app = load(app_ref)
    queues = app.backend.stats()
    served = app.backend.list_workers().served_queues()
    unserved = [q.queue for q in queues if q.queue not in served and _waiting(q) and not q.paused]
    if as_json:
        print_json(
            [
                {
                    "queue": q.queue,
                    "counts": {str(state): q.count(state) for state in JobState},
                    "oldest_available_age": q.oldest_available_age,
                    "paused": q.paused,
                    "served": q.queue in served,
                }
                for q in queues
            ]
        )
        return
    out = console()
    if not queues:
        out.print(f"no jobs in {store_name(app.url)}")
        return
    title = f"queues in {store_name(app.url)}"
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("queue")
    for state in JobState:
        table.add_column(str(state), justify="right", header_style=f"bold {STATE_STYLES[state]}")
    table.add_column("oldest waiting", justify="right")
    for q in queues:
        name = Text(q.queue)
        if q.paused:
            name.append(" (paused)", "bold yellow")
        elif q.queue in unserved:
            name.append(" (no live worker)", "bold red")
        table.add_row(
            name,
            *[str(q.count(state)) for state in JobState],
            format_duration(q.oldest_available_age),
        )
    if len(queues) > 1:
        ages = [q.oldest_available_age for q in queues if q.oldest_available_age is not None]
        table.add_section()
        table.add_row(
            "all",
            *[str(sum(q.count(state) for q in queues)) for state in JobState],
            format_duration(max(ages) if ages else None),
        )
    out.print(table)
    for cap in cap_rows(app):
        if cap["waiting"]:
            out.print(
                f"cap {cap['cap']} is full: {cap['waiting']} due job(s) wait on it "
                "(stagecrew limits)",
                style="yellow",
                markup=False,
            )
    holding = [r for r in rate_limits(app) if r["booked_for"] or r["slowed_for"]]
    for row in holding:
        parts = []
        if row["booked_for"]:
            parts.append(f"jobs booked up to {format_duration(row['booked_for'])} ahead")
        if row["slowed_for"]:
            parts.append(f"slowed for {format_duration(row['slowed_for'])} more")
        out.print(f"rate limit {row['name']}: {', '.join(parts)}", style="yellow", markup=False)
    if holding:
        out.print("(stagecrew limits shows every rate limit)", markup=False)
    for row in circuit_rows(app):
        if row["state"] != "closed":
            state = row["state"].replace("_", "-") + (" by hand" if row["held_open"] else "")
            out.print(
                f"circuit {row['name']} is {state}: its jobs wait (stagecrew circuits)",
                style="yellow",
                markup=False,
            )
    if unserved:
        out.print(
            f"no live worker serves: {', '.join(unserved)}: their jobs wait until a worker with "
            "--queues NAME starts (check the names; stagecrew workers)",
            style="bold red",
            markup=False,
        )
    paused = [q.queue for q in queues if q.paused]
    if paused:
        out.print(
            f"paused: {', '.join(paused)} (no worker claims from them; "
            "stagecrew queues resume NAME)",
            style="yellow",
            markup=False,
        )


def _waiting(q: QueueStats) -> bool:
    return bool(q.count(JobState.AVAILABLE) or q.count(JobState.SCHEDULED))
