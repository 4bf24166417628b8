"""How commands talk to people and to scripts: rich tables by default, JSON with `--json`.

How a command fails (one line and an exit code) is in `exits`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import click
import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..backends.steps import JobSteps, StoredValue
from ..errors import SerializationError
from ..job import Job, JobState, Progress

PIPED_WIDTH = 160

STATE_STYLES = {
    JobState.SCHEDULED: "yellow",
    JobState.AVAILABLE: "blue",
    JobState.RUNNING: "cyan",
    JobState.SUCCEEDED: "green",
    JobState.DEAD: "bold red",
    JobState.CANCELLED: "dim",
}


def console(*, stderr: bool = False) -> Console:
    """A console on the current stdout (or stderr); user text is never read as markup.

    Piped output gets a wide page, so tables keep whole values for the program reading them
    instead of being squeezed to 80 columns.
    """
    out = Console(stderr=stderr, highlight=False, markup=False, emoji=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = PIPED_WIDTH
    return out


def print_json(data: Any) -> None:
    click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())


# -- values ------------------------------------------------------------------
def format_time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def format_duration(seconds: float | None) -> str:
    """A short human duration: 850ms, 12.3s, 4m05s, 3h12m, 2d04h."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def state_text(state: JobState) -> Text:
    return Text(str(state), style=STATE_STYLES.get(state, ""))


def one_line(text: str, width: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _decoded(job: Job, what: str) -> Any:
    """A decoded field of the job, or a note when the stored JSON is damaged."""
    try:
        return getattr(job, what)
    except SerializationError as exc:
        return {"undecodable": str(exc)}


def _workflow_place(job: Job) -> str:
    """`<id> step S, member I` for a workflow member (`stagecrew workflows show <id>`), else -."""
    if job.workflow_id is None:
        return "-"
    return f"{job.workflow_id} step {job.workflow_step}, member {job.workflow_index}"


def _unique_states_text(job: Job) -> str:
    """The states in which the job holds its unique key, in lifecycle order, else -."""
    held = [state.value for state in JobState if state in job.unique_states]
    return ", ".join(held) if held else "-"


def job_json(job: Job, steps: JobSteps | None = None) -> dict[str, Any]:
    """The stored record with its arguments and result decoded, for `--json` output: `result`
    is the decoded value, `result_json` the stored text; with `steps`, each stored step (name,
    stored at, size) and the checkpoint (size, stored at)."""
    data = job.to_json()
    data["args"] = _decoded(job, "args")
    data["kwargs"] = _decoded(job, "kwargs")
    data["result"] = _decoded(job, "result")
    if steps is not None:
        data["steps"] = [
            {"name": name, "stored_at": value.stored_at, "size": value.size}
            for name, value in steps.steps.items()
        ]
        state = steps.state
        data["checkpoint"] = (
            None
            if state is None
            else {"stored_at": state.stored_at, "size": state.size, "preview": _preview(state)}
        )
    return data


PREVIEW_CHARS = 80
"""How much of a checkpoint's JSON `jobs show` prints."""


def _preview(value: StoredValue) -> str:
    text = value.text
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def _progress_text(progress: Progress | None) -> str:
    if progress is None:
        return "-"
    done = f"{progress.done:g}"
    if progress.total is not None:
        done += f" of {progress.total:g}"
        if progress.fraction is not None:
            done += f" ({progress.fraction:.0%})"
    if progress.message:
        done += f"  {progress.message}"
    return f"{done}  at {format_time(progress.at)}"


def _compact_json(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return repr(value)


# -- tables ------------------------------------------------------------------
def jobs_table(jobs: Iterable[Job], *, title: str | None = None, reasons: bool = False) -> Table:
    """One row per job; `reasons` adds the last error, as the dead-letter list wants."""
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("id", justify="right")
    table.add_column("task")
    table.add_column("queue")
    table.add_column("state")
    table.add_column("attempt", justify="right")
    table.add_column("enqueued")
    table.add_column("finished" if reasons else "run at")
    if reasons:
        table.add_column("reason", overflow="fold")
    for job in jobs:
        row: list[str | Text] = [
            str(job.id),
            job.task,
            job.queue,
            state_text(job.state),
            f"{job.attempt}/{job.max_attempts}",
            format_time(job.enqueued_at),
            format_time(job.finished_at if reasons else job.run_at),
        ]
        if reasons:
            last = job.last_error
            row.append(one_line(f"{last.kind}: {last.type}: {last.message}") if last else "-")
        table.add_row(*row)
    return table


def print_job(out: Console, job: Job, steps: JobSteps | None = None) -> None:
    """Every field of one job, its arguments and result, its unique key and the states that
    hold it, its progress, steps and checkpoint, and each attempt's error in full."""
    out.print(Text.assemble(("job ", "bold"), (str(job.id), "bold"), "  ", state_text(job.state)))
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold")
    fields.add_column(overflow="fold")
    rows: list[tuple[str, str | Text]] = [
        ("task", job.task),
        ("queue", job.queue),
        ("state", state_text(job.state)),
        ("attempt", f"{job.attempt} of {job.max_attempts}"),
        ("claims", str(job.claims)),
        ("snoozes", str(job.snoozes)),
        ("priority", str(job.priority)),
        ("enqueued at", format_time(job.enqueued_at)),
        ("run at", format_time(job.run_at)),
        ("started at", format_time(job.started_at)),
        ("finished at", format_time(job.finished_at)),
        (
            "lease",
            f"{job.lease_owner} until {format_time(job.lease_expires_at)}"
            if job.lease_owner
            else "-",
        ),
        ("idempotency key", job.idempotency_key or "-"),
        ("unique key", job.unique_key or "-"),
        ("unique states", _unique_states_text(job)),
        ("fairness key", job.fairness_key or "-"),
        ("concurrency key", job.concurrency_key or "-"),
        ("cancel requested", "yes" if job.cancel_requested else "no"),
        ("worker losses", str(job.lost)),
        ("args", _compact_json(_decoded(job, "args"))),
        ("kwargs", _compact_json(_decoded(job, "kwargs"))),
        ("result", "-" if job.result_json is None else _compact_json(_decoded(job, "result"))),
        ("progress", _progress_text(job.progress)),
        ("workflow", _workflow_place(job)),
    ]
    if steps is not None:
        state = steps.state
        rows.append(
            (
                "checkpoint",
                "-"
                if state is None
                else f"{state.size} bytes at {format_time(state.stored_at)}: {_preview(state)}",
            )
        )
    for name, value in rows:
        fields.add_row(name, value)
    out.print(fields)
    if steps is not None and steps.steps:
        out.print()
        table = Table(title=f"steps ({len(steps.steps)})", title_justify="left")
        table.add_column("name", overflow="fold")
        table.add_column("stored at")
        table.add_column("size", justify="right")
        for step, stored in steps.steps.items():
            table.add_row(step, format_time(stored.stored_at), f"{stored.size} B")
        out.print(table)
    if not job.errors:
        return
    out.print()
    out.print(Text(f"errors ({len(job.errors)})", style="bold"))
    for error in job.errors:
        out.print(
            Text.assemble(
                (f"attempt {error.attempt}", "bold"),
                f"  {format_time(error.at)}  {error.kind}  ",
                (f"{error.type}: {error.message}", "red"),
            )
        )
        if error.traceback:
            out.print(Text(error.traceback.rstrip("\n"), style="dim"))
