"""`stagecrew alerts`: each alert's state as the workers last evaluated it."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table
from rich.text import Text

from ..app import App
from ..observability.alerts import FIRING, OK, PENDING, AlertState
from .options import app_option, json_option, load, store_name
from .output import console, format_duration, print_json

STATE_STYLES = {OK: "green", PENDING: "yellow", FIRING: "bold red"}


def alert_rows(app: App) -> list[dict[str, Any]]:
    """Every alert the store holds a state of, and (with the app) those declared but not
    evaluated yet, by name."""
    records = app.backend.list_limits("alert:")
    now = app.backend.read_limits([]).now
    rows: dict[str, dict[str, Any]] = {}
    for record in records:
        state = AlertState.from_text(record.value)
        name = record.name.removeprefix("alert:")
        rows[name] = {
            "name": name,
            "state": state.state,
            "rule": state.rule,
            "queue": state.queue,
            "value": state.value,
            "since": state.since,
            "fired_at": state.fired_at,
            "resolved_at": state.resolved_at,
            "evaluated_ago": None if state.evaluated_at is None else now - state.evaluated_at,
            "stale": state.stale(now),
            "undelivered": len(state.outbox),
        }
    for rule in app.alerts.values():
        rows.setdefault(
            rule.name,
            {
                "name": rule.name,
                "state": None,
                "rule": rule.rule,
                "queue": rule.queue,
                "value": None,
                "since": None,
                "fired_at": None,
                "resolved_at": None,
                "evaluated_ago": None,
                "stale": True,
                "undelivered": 0,
            },
        )
    return [rows[name] for name in sorted(rows)]


@click.command()
@app_option
@json_option
def alerts(app_ref: str | None, as_json: bool) -> None:
    """Alerts: ok, pending (its condition holds, not yet for long enough) or firing.

    The workers of an app with alert rules evaluate them once per interval fleet-wide and
    keep each alert's state in the store; this shows it, with the value last measured.
    """
    app = load(app_ref)
    rows = alert_rows(app)
    if as_json:
        print_json(rows)
        return
    out = console()
    if not rows:
        out.print(f"no alert has been evaluated in {store_name(app.url)}")
        return
    table = Table(title=f"alerts of {store_name(app.url)}", title_justify="left")
    for column in ("alert", "state", "rule", "queue", "value", "for", "evaluated"):
        table.add_column(column, justify="right" if column in ("value", "for") else "left")
    now = app.backend.read_limits([]).now
    for row in rows:
        state = row["state"]
        held = now - row["since"] if row["since"] is not None else None
        shown = Text(state or "not evaluated yet", style=STATE_STYLES.get(state or "", "dim"))
        if state and row["stale"]:
            shown.append(" (stale: not evaluated lately)", "dim")
        if row["undelivered"]:
            shown.append(f" ({row['undelivered']} not yet taken by its webhook)", "yellow")
        table.add_row(
            row["name"],
            shown,
            row["rule"],
            row["queue"] or "all",
            "-" if row["value"] is None else f"{row['value']:g}",
            format_duration(held),
            "-" if row["evaluated_ago"] is None else f"{format_duration(row['evaluated_ago'])} ago",
        )
    out.print(table)
