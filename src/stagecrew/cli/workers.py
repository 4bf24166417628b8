"""`stagecrew workers`: the worker processes the registry knows, live and recently gone."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table
from rich.text import Text

from ..backends.worker_registry import WorkerRecord, WorkerRegistry, WorkerStatus
from .options import app_option, duration, json_option, load, store_name
from .output import console, format_duration, format_time, print_json

RECENT = 3600.0
"""Seconds a stopped or lost worker stays in the default listing after it was last seen."""
STATUS_STYLES = {
    WorkerStatus.ALIVE: "green",
    WorkerStatus.STOPPED: "dim",
    WorkerStatus.LOST: "bold red",
}


def worker_row(worker: WorkerRecord, now: float) -> dict[str, Any]:
    info = worker.info
    return {
        "id": worker.id,
        "status": str(worker.status(now)),
        "host": info.host,
        "pid": info.pid,
        "queues": list(info.queues),
        "busy": info.busy,
        "concurrency": info.concurrency,
        "version": info.version,
        "started_at": worker.started_at,
        "seen_at": worker.seen_at,
        "seen_ago": max(0.0, now - worker.seen_at),
        "stopped_at": worker.stopped_at,
    }


def listed(registry: WorkerRegistry, within: float | None) -> list[WorkerRecord]:
    """The live workers, and the others last seen within `within` seconds (None: all)."""
    now = registry.now
    return [
        w
        for w in registry.workers
        if w.status(now) is WorkerStatus.ALIVE or within is None or now - w.seen_at <= within
    ]


@click.command()
@app_option
@click.option(
    "--since",
    metavar="DURATION",
    callback=duration,
    help="Show stopped and lost workers last seen within DURATION (default 1h).",
)
@click.option("--all", "show_all", is_flag=True, help="Every record the store keeps (a day).")
@json_option
def workers(app_ref: str | None, since: float | None, show_all: bool, as_json: bool) -> None:
    """Worker processes: live ones, and those that stopped or were lost lately.

    Each worker process records itself with its heartbeat (host, pid, queues, busy slots,
    version). One that stopped cleanly says so; one silent for three beats without saying
    so is lost (killed, crashed or cut off from the store).
    """
    app = load(app_ref)
    registry = app.backend.list_workers()
    now = registry.now
    shown = listed(registry, None if show_all else (RECENT if since is None else since))
    if as_json:
        print_json([worker_row(w, now) for w in shown])
        return
    out = console()
    alive = registry.alive()
    if not shown:
        out.print(f"no worker has recorded itself in {store_name(app.url)} lately")
        return
    table = Table(
        title=f"workers of {store_name(app.url)}", title_justify="left", header_style="bold"
    )
    for column in ("worker", "status", "host", "pid", "queues", "busy", "version", "started"):
        table.add_column(column, justify="right" if column in ("pid", "busy") else "left")
    table.add_column("last seen", justify="right")
    for worker in shown:
        status = worker.status(now)
        info = worker.info
        table.add_row(
            worker.id,
            Text(str(status), style=STATUS_STYLES[status]),
            info.host,
            str(info.pid),
            ",".join(info.queues),
            f"{info.busy}/{info.concurrency}" if status is WorkerStatus.ALIVE else "-",
            info.version,
            format_time(worker.started_at),
            f"{format_duration(max(0.0, now - worker.seen_at))} ago",
        )
    out.print(table)
    busy = sum(w.info.busy for w in alive)
    slots = sum(w.info.concurrency for w in alive)
    out.print(f"{len(alive)} alive, {busy}/{slots} slots busy", markup=False)
