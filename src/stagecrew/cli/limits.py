"""`stagecrew limits`: the fleet-wide rate limits, their tokens and the jobs they hold back."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from ..app import App
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


@click.command()
@app_option
@json_option
def limits(app_ref: str | None, as_json: bool) -> None:
    """Rate limits: tokens left now, how far ahead jobs are booked, and slow-downs.

    Each bucket is one task's limit (`rate:TASK`), or one key's (`rate:TASK:KEY`, or
    `rate:NAME:KEY` for tasks sharing a name). "booked for" is how long until the last job
    handed back for want of a token is due: a backlog the rate holds back. "slowed for" is
    what is left of a slow-down after a task raised RateLimited.
    """
    app = load(app_ref)
    rows = rate_limits(app)
    if as_json:
        print_json(rows)
        return
    out = console()
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
