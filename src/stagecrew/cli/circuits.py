"""`stagecrew circuits`: circuit breakers' states, and opening or closing one by hand."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from ..app import App
from ..backends.limit_states import MAX_LIMIT_TTL, SWAP_TRIES, LimitSwap
from ..limits.circuit import (
    OPEN,
    Circuit,
    CircuitState,
    closed_by_hand,
    current,
    opened_by_hand,
)
from .exits import CliError
from .options import app_option, json_option, load
from .output import console, format_duration, print_json


def _declared(app: App) -> dict[str, Circuit]:
    return {t.circuit.name: t.circuit for t in app.tasks.values() if t.circuit is not None}


def circuit_rows(app: App) -> list[dict[str, Any]]:
    """Every circuit the code declares or the store holds a record of, as it is now."""
    declared = _declared(app)
    records = {r.name: r for r in app.backend.list_limits("circuit:")}
    names = sorted({c.record_name for c in declared.values()} | set(records))
    read = app.backend.read_limits(names) if names else None
    rows = []
    for record_name in names:
        name = record_name.removeprefix("circuit:")
        stored = None if read is None else read.states.get(record_name)
        state = CircuitState.from_text(None if stored is None else stored.value)
        circuit = declared.get(name)
        now = read.now if read is not None else 0.0
        if circuit is not None:
            state = current(circuit, state, now)
        calls, failures = (0, 0) if circuit is None else state.counts(circuit, now)
        rows.append(
            {
                "name": name,
                "state": state.state,
                "held_open": state.held_open,
                "calls": calls,
                "failure_rate": failures / calls if calls else None,
                "half_open_in": (
                    max(0.0, state.until - now)
                    if state.state == OPEN and not state.held_open
                    else None
                ),
                "opened": state.opened,
                "declared": circuit is not None,
            }
        )
    return rows


@click.group(invoke_without_command=True)
@app_option
@json_option
@click.pass_context
def circuits(ctx: click.Context, app_ref: str | None, as_json: bool) -> None:
    """Circuit breakers: state, failure rate over the window, when an open one half-opens.

    Without a subcommand, lists every circuit the code declares or the store holds.
    """
    if ctx.invoked_subcommand is not None:
        return
    rows = circuit_rows(load(app_ref))
    if as_json:
        print_json(rows)
        return
    out = console()
    if not rows:
        out.print("no circuit is declared or stored")
        return
    table = Table(title="circuits", title_justify="left", header_style="bold")
    for column in ("circuit", "state", "calls", "failure rate", "half-opens in", "opened"):
        table.add_column(column, justify="left" if column in ("circuit", "state") else "right")
    for row in rows:
        rate = row["failure_rate"]
        table.add_row(
            row["name"] + ("" if row["declared"] else " (not declared here)"),
            row["state"].replace("_", "-") + (" (by hand)" if row["held_open"] else ""),
            str(row["calls"]),
            "-" if rate is None else f"{rate:.0%}",
            "-" if row["half_open_in"] is None else format_duration(row["half_open_in"]),
            str(row["opened"]),
        )
    out.print(table)


def _set(app_ref: str | None, name: str, *, opening: bool) -> None:
    app = load(app_ref)
    circuit = _declared(app).get(name)
    if circuit is None:
        raise CliError(f"no task of this app declares a circuit named {name!r}")
    backend = app.backend
    for _ in range(SWAP_TRIES):
        read = backend.read_limits([circuit.record_name])
        stored = read.states.get(circuit.record_name)
        state = CircuitState.from_text(None if stored is None else stored.value)
        changed = (opened_by_hand if opening else closed_by_hand)(state, read.now)
        swap = LimitSwap(
            circuit.record_name,
            None if stored is None else stored.version,
            changed.to_text(),
            min(MAX_LIMIT_TTL, changed.ttl(read.now)),
        )
        if backend.swap_limits([swap]).applied:
            return
    raise CliError(f"circuit {name!r} kept changing under this command; try again")


@circuits.command("open")
@click.argument("name")
@app_option
def open_(name: str, app_ref: str | None) -> None:
    """Open circuit NAME by hand: its jobs wait until it is closed by hand."""
    _set(app_ref, name, opening=True)
    click.echo(f"circuit {name!r} opened: its jobs wait until `stagecrew circuits close {name}`")


@circuits.command("close")
@click.argument("name")
@app_option
def close(name: str, app_ref: str | None) -> None:
    """Close circuit NAME by hand: its jobs run again, and failures may open it again."""
    _set(app_ref, name, opening=False)
    click.echo(f"circuit {name!r} closed")
