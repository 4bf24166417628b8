"""`stagecrew workflows`: show and cancel workflows (chain, group, chord)."""

from __future__ import annotations

import click
from rich.table import Table
from rich.text import Text

from ..backends.workflows import Workflow
from .options import app_option, json_option, load
from .output import console, format_time, print_json, state_text

STATUS_STYLE = {"running": "cyan", "succeeded": "green", "failed": "red", "cancelled": "yellow"}


@click.group()
def workflows() -> None:
    """Inspect and cancel workflows."""


@workflows.command()
@click.argument("workflow_id", metavar="ID")
@app_option
@json_option
def show(workflow_id: str, app_ref: str | None, as_json: bool) -> None:
    """Show workflow ID as a whole: status, steps, result, and every member with its state."""
    found = load(app_ref).workflows.get(workflow_id)
    if as_json:
        print_json(found.to_json())
    else:
        print_workflow(found)


@workflows.command()
@click.argument("workflow_id", metavar="ID")
@app_option
@json_option
def cancel(workflow_id: str, app_ref: str | None, as_json: bool) -> None:
    """Cancel workflow ID: its waiting members now, its running ones at their next checkpoint."""
    found = load(app_ref).workflows.cancel(workflow_id)
    if as_json:
        print_json(found.to_json())
    else:
        print_workflow(found)


def print_workflow(workflow: Workflow) -> None:
    out = console()
    status = Text(workflow.status.value, style=STATUS_STYLE.get(workflow.status.value, ""))
    out.print(Text.assemble(("workflow ", "bold"), (workflow.id, "bold"), "  ", status))
    steps = ", ".join(f"group of {s.size}" if s.group else "task" for s in workflow.shape)
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold")
    fields.add_column(overflow="fold")
    fields.add_row("steps", steps)
    fields.add_row("current step", f"{workflow.step + 1} of {len(workflow.shape)}")
    fields.add_row("on failure", workflow.on_failure.value)
    fields.add_row("created at", format_time(workflow.created_at))
    fields.add_row("finished at", format_time(workflow.finished_at))
    fields.add_row("result", "-" if workflow.result is None else workflow.result)
    out.print(fields)
    table = Table(show_edge=False)
    for name in ("step", "member", "job", "task", "state", "result / error"):
        table.add_column(name)
    for job in workflow.members:
        state = Text("pending", style="dim") if workflow.pending(job) else state_text(job.state)
        last = job.last_error
        detail = job.result_json or "" if last is None else f"{last.type}: {last.message}"
        table.add_row(
            str(job.workflow_step), str(job.workflow_index), str(job.id), job.task, state, detail
        )
    out.print(table)
