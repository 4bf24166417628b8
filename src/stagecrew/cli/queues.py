"""`stagecrew queues`: pause a queue, resume it, and list every queue with its state."""

from __future__ import annotations

import click

from ..backends.base import QueueStats
from ..job import JobState
from .exits import CliUsageError
from .options import app_option, json_option, load, store_name
from .output import STATE_STYLES, console, print_json


@click.group()
def queues() -> None:
    """Queue control: a paused queue keeps taking jobs, and no worker claims from it."""


def _queue_name(name: str) -> str:
    if not name:
        raise CliUsageError("a queue name cannot be empty")
    return name


@queues.command()
@click.argument("name")
@app_option
@json_option
def pause(name: str, app_ref: str | None, as_json: bool) -> None:
    """Stop every worker claiming from queue NAME, from its next claim on.

    Jobs keep being enqueued into it and wait; jobs already running finish as usual.
    """
    changed = _change(name, app_ref, pausing=True)
    if as_json:
        print_json({"queue": name, "paused": True, "changed": changed})
        return
    if changed:
        _say(f"queue {name!r} paused: no worker claims from it until it is resumed")
    else:
        _say(f"queue {name!r} was paused already")


@queues.command()
@click.argument("name")
@app_option
@json_option
def resume(name: str, app_ref: str | None, as_json: bool) -> None:
    """Let workers claim from queue NAME again (waiting workers are woken at once)."""
    changed = _change(name, app_ref, pausing=False)
    if as_json:
        print_json({"queue": name, "paused": False, "changed": changed})
        return
    if changed:
        _say(f"queue {name!r} resumed")
    else:
        _say(f"queue {name!r} was not paused")


def _say(message: str) -> None:
    console().print(message, markup=False, highlight=False)


def _change(name: str, app_ref: str | None, *, pausing: bool) -> bool:
    backend = load(app_ref).backend
    queue = _queue_name(name)
    try:
        return backend.pause_queue(queue) if pausing else backend.resume_queue(queue)
    except ValueError as exc:  # a name no store can hold
        raise CliUsageError(str(exc)) from None


@queues.command("list")
@app_option
@json_option
def list_queues(app_ref: str | None, as_json: bool) -> None:
    """Every queue: paused or not, and how many jobs wait, run, and finished in each state."""
    app = load(app_ref)
    found = app.backend.stats()
    if as_json:
        print_json([_queue_json(q) for q in found])
        return
    out = console()
    if not found:
        out.print(f"no queues in {store_name(app.url)}")
        return
    out.print(queues_table(found, title=f"queues in {store_name(app.url)}"))


def _queue_json(q: QueueStats) -> dict[str, object]:
    return {
        "queue": q.queue,
        "paused": q.paused,
        "counts": {str(state): q.count(state) for state in JobState},
    }


def queues_table(found: list[QueueStats], *, title: str) -> object:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("queue")
    table.add_column("paused")
    for state in JobState:
        table.add_column(str(state), justify="right", header_style=f"bold {STATE_STYLES[state]}")
    for q in found:
        table.add_row(
            Text(q.queue),
            Text("paused", style="bold yellow") if q.paused else Text("-"),
            *[str(q.count(state)) for state in JobState],
        )
    return table
