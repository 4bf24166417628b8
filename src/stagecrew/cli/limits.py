"""`stagecrew limits`: the fleet-wide concurrency caps and rate limits, and what they hold back."""

from __future__ import annotations

from collections import Counter
from typing import Any

import click
from rich.table import Table

from ..app import App
from ..backends.base import JobFilter
from ..job import Job, JobState
from ..limits.rate import Bucket, RateLimit, view
from .options import app_option, json_option, load
from .output import console, format_duration, print_json


def rate_limits(app: App) -> list[dict[str, Any]]:
    """Every rate-limit bucket the store holds, with the limit this code declares for it."""
    whole: dict[str, RateLimit] = {}
    keyed: dict[str, RateLimit] = {}
    for task in app.tasks.values():
        limit = task.rate_limit
        if limit is not None:
            if limit.key is None:
                whole[limit.record_name(task.name)] = limit
            else:
                keyed[f"rate:{limit.group(task.name)}:"] = limit
    records = app.backend.list_limits("rate:")
    read = app.backend.read_limits([r.name for r in records])
    rows = []
    for name, record in sorted(read.states.items()):
        limit = whole.get(name) or next(
            (lim for prefix, lim in keyed.items() if name.startswith(prefix)), None
        )
        seen = view(limit, Bucket.from_text(record.value), read.now)
        rows.append(
            {
                "name": name,
                "rate": None if limit is None else limit.text,
                "burst": None if limit is None else limit.burst,
                "tokens": seen.tokens,
                "booked_for": seen.booked_for,
                "slowed_for": seen.slowed_for,
            }
        )
    return rows


SAMPLE = 10_000
"""Jobs read per cap and state: the counts of a cap with more stop there."""


def _jobs(
    app: App, state: JobState, *, tasks: frozenset[str] = frozenset(), queue: str | None = None
) -> list[Job]:
    job_filter = JobFilter(
        states=frozenset({state}),
        tasks=tasks,
        queues=frozenset({queue}) if queue else frozenset(),
        limit=SAMPLE,
    )
    return app.backend.list_jobs(job_filter)


def cap_rows(app: App) -> list[dict[str, Any]]:
    """Each concurrency cap the code declares: jobs running under it, and jobs due that wait
    because it is full (of a per-key cap: those of its full keys)."""
    groups: dict[tuple[str, bool], tuple[int, set[str]]] = {}
    for task in app.tasks.values():
        cap = task.concurrency
        if cap is not None:
            limit, names = groups.setdefault(
                (cap.group(task.name), cap.key is not None), (cap.limit, set())
            )
            names.add(task.name)
    rows = []
    for (group, keyed), (limit, names) in sorted(groups.items()):
        running = _jobs(app, JobState.RUNNING, tasks=frozenset(names))
        waiting = _jobs(app, JobState.AVAILABLE, tasks=frozenset(names))
        if keyed:
            per_key = Counter(j.concurrency_key for j in running if j.concurrency_key)
            full = {key for key, count in per_key.items() if count >= limit}
            held = sum(1 for j in waiting if j.concurrency_key in full)
            rows.append(
                {
                    "cap": f"{group} (per key)",
                    "limit": limit,
                    "running": len(running),
                    "full_keys": len(full),
                    "waiting": held,
                }
            )
        else:
            held = len(waiting) if len(running) >= limit else 0
            rows.append(
                {
                    "cap": group,
                    "limit": limit,
                    "running": len(running),
                    "full_keys": None,
                    "waiting": held,
                }
            )
    for queue, limit in sorted(app.queue_caps.items()):
        running = _jobs(app, JobState.RUNNING, queue=queue)
        held = len(_jobs(app, JobState.AVAILABLE, queue=queue)) if len(running) >= limit else 0
        rows.append(
            {
                "cap": f"queue {queue}",
                "limit": limit,
                "running": len(running),
                "full_keys": None,
                "waiting": held,
            }
        )
    return rows


@click.command()
@app_option
@json_option
def limits(app_ref: str | None, as_json: bool) -> None:
    """Concurrency caps (running, waiting on a full cap) and rate limits (tokens left now, how
    far ahead jobs are booked, slow-downs).

    Each bucket is one task's limit (`rate:TASK`), or one key's (`rate:TASK:KEY`, or
    `rate:NAME:KEY` for tasks sharing a name). "booked for" is how long until the last job
    handed back for want of a token is due: a backlog the rate holds back. "slowed for" is
    what is left of a slow-down after a task raised RateLimited.
    """
    app = load(app_ref)
    rows = rate_limits(app)
    caps = cap_rows(app)
    if as_json:
        print_json({"rate_limits": rows, "caps": caps})
        return
    out = console()
    if caps:
        table = Table(title="concurrency caps", title_justify="left", header_style="bold")
        for column in ("cap", "limit", "running", "full keys", "waiting on it"):
            table.add_column(column, justify="left" if column == "cap" else "right")
        for cap in caps:
            table.add_row(
                cap["cap"],
                str(cap["limit"]),
                str(cap["running"]),
                "-" if cap["full_keys"] is None else str(cap["full_keys"]),
                str(cap["waiting"]),
            )
        out.print(table)
    if not rows:
        out.print("no rate-limit bucket is stored (none used lately, or none declared)")
        return
    table = Table(title="rate limits", title_justify="left", header_style="bold")
    for column in ("bucket", "rate", "burst", "tokens", "booked for", "slowed for"):
        table.add_column(column, justify="left" if column == "bucket" else "right")
    for row in rows:
        table.add_row(
            row["name"],
            row["rate"] or "(not declared here)",
            "-" if row["burst"] is None else str(row["burst"]),
            "-" if row["tokens"] is None else str(row["tokens"]),
            format_duration(row["booked_for"]) if row["booked_for"] else "-",
            format_duration(row["slowed_for"]) if row["slowed_for"] else "-",
        )
    out.print(table)
