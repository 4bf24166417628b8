"""`stagecrew demo`: real worker processes on a realistic workload, then a summary of the store."""

from __future__ import annotations

import contextlib
import shlex
import signal
from collections.abc import Iterator
from pathlib import Path

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import Progress as ProgressBar
from rich.table import Table
from rich.text import Text

from ..demo.summary import Percentiles, Summary, summarize
from ..demo.workload import (
    DEFAULT_URL,
    MIN_JOBS,
    DemoError,
    DemoOptions,
    Progress,
    run_demo,
    sqlite_path,
)
from ..job import JobState
from .exits import CliError, CliUsageError
from .options import duration, json_option
from .output import console, format_duration, print_json


@click.command()
@click.option(
    "--jobs",
    "job_count",
    type=click.IntRange(min=MIN_JOBS),
    default=300,
    show_default=True,
    help="Jobs to enqueue.",
)
@click.option("--processes", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--concurrency", type=click.IntRange(min=1), default=16, show_default=True)
@click.option(
    "--url",
    default=DEFAULT_URL,
    show_default=True,
    help="The SQLite file to run on; it is deleted and created afresh.",
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where thumbnails and the workers' log go [default: a new temporary folder].",
)
@click.option(
    "--timeout",
    metavar="DURATION",
    callback=duration,
    default="2m",
    show_default=True,
    help="Stop waiting for unfinished jobs after this long.",
)
@json_option
def demo(
    *,
    job_count: int,
    processes: int,
    concurrency: int,
    url: str,
    output_dir: Path | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Run worker processes on a mixed workload and summarise what happened.

    On a fresh SQLite file: PNG thumbnails rendered in pure Python, webhook
    calls that drop ~30% of first attempts and recover by retrying with
    backoff, async reports, a delayed job, and a few jobs that cannot succeed
    (malformed records, an unknown task, bad arguments) and end in the
    dead-letter queue. The summary is computed from the store.
    """
    try:
        sqlite_path(url)
    except DemoError as exc:
        raise CliUsageError(str(exc)) from None
    options = DemoOptions(
        url=url,
        jobs=job_count,
        processes=processes,
        concurrency=concurrency,
        timeout=timeout,
        **({"output_dir": output_dir} if output_dir is not None else {}),
    )
    with _stop_workers_on_sigterm():
        if as_json:
            run = run_demo(options)
        else:
            with _LiveProgress(console(), options.jobs, processes) as live:
                run = run_demo(options, on_progress=live.update, on_ready=live.ready)
    try:
        summary = summarize(run)
    finally:
        run.app.close()
    if as_json:
        print_json(summary.to_json())
    else:
        _print_summary(console(), summary)
    if run.timed_out:
        raise CliError(
            f"{summary.unfinished} jobs had not finished after {format_duration(timeout)}; "
            f"see the workers' log at {summary.log_path}"
        )
    if run.worker_exit_code != 0:
        raise CliError(
            f"the workers exited with code {run.worker_exit_code}; see {summary.log_path}"
        )
    if not summary.as_expected:
        raise CliError("the outcome differs from what the demo expects; see the summary")


def _exit_now(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _stop_workers_on_sigterm() -> Iterator[None]:
    """SIGTERM or SIGHUP to the demo stops its workers as Ctrl-C does.

    The workers run in a session of their own (so that a Ctrl-C reaches only the demo,
    which stops them gracefully); by default a SIGTERM would end the demo at once and
    leave them running for ever.
    """
    previous = {sig: signal.signal(sig, _exit_now) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _LiveProgress:
    """A progress bar of finished jobs, with the live counts of each state beside it."""

    def __init__(self, out: Console, total: int, processes: int) -> None:
        self._bar = ProgressBar(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=out,
        )
        self._task: TaskID = self._bar.add_task(
            f"starting {processes} worker process{'es' if processes != 1 else ''}",
            total=total,
            detail="",
        )

    def __enter__(self) -> _LiveProgress:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def ready(self) -> None:
        self._bar.update(self._task, description="running jobs")

    def update(self, progress: Progress) -> None:
        detail = (
            f"ok {progress.count(JobState.SUCCEEDED)} · "
            f"dead {progress.count(JobState.DEAD)} · "
            f"running {progress.count(JobState.RUNNING)} · "
            f"queued {progress.count(JobState.AVAILABLE)} · "
            f"retry/delayed {progress.count(JobState.SCHEDULED)}"
        )
        self._bar.update(
            self._task, completed=progress.finished, total=progress.total, detail=detail
        )


def _latency(p: Percentiles) -> str:
    if not p.count:
        return "-"
    return (
        f"p50 {format_duration(p.p50)}   p99 {format_duration(p.p99)}   "
        f"max {format_duration(p.max)}   ({p.count} jobs)"
    )


def _print_summary(out: Console, s: Summary) -> None:
    out.print()
    out.print(
        Text(
            f"stagecrew demo: {s.enqueued} jobs on {s.url}, "
            f"{s.processes} worker process{'es' if s.processes != 1 else ''} x "
            f"{s.concurrency} concurrent jobs",
            style="bold",
        )
    )
    grid = Table.grid(padding=(0, 3))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("processed", f"{s.processed} of {s.enqueued} ({s.unfinished} unfinished)")
    if s.missing:
        grid.add_row("missing", Text(f"not in the store: {list(s.missing)}", style="bold red"))
    grid.add_row("succeeded", Text(str(s.succeeded), style="green"))
    grid.add_row(
        "retried",
        f"{s.retried} jobs ran more than once ({s.failed_attempts} failed attempts in all; "
        f"{s.recovered} of them then succeeded)",
    )
    grid.add_row("dead-lettered", Text(str(s.dead), style="red" if s.dead else ""))
    grid.add_row(
        "throughput",
        f"{s.throughput:.1f} jobs/s ({s.processed} jobs in {format_duration(s.drain_seconds)}, "
        "first enqueue to last finish)",
    )
    grid.add_row("wait latency", _latency(s.wait))
    grid.add_row("run latency", _latency(s.run))
    grid.add_row("end to end", _latency(s.end_to_end))
    grid.add_row("elapsed", f"{format_duration(s.elapsed_seconds)} (with worker start and stop)")
    out.print(grid)

    tasks = Table(title="per task", title_justify="left", header_style="bold")
    for name in ("task", "jobs", "succeeded", "dead", "retried", "failed attempts"):
        tasks.add_column(name, justify="left" if name == "task" else "right")
    for t in s.by_task:
        tasks.add_row(
            t.task,
            str(t.jobs),
            str(t.succeeded),
            str(t.dead),
            str(t.retried),
            str(t.failed_attempts),
        )
    out.print(tasks)

    if s.dead_letters:
        dead = Table(title="dead-letter queue", title_justify="left", header_style="bold")
        dead.add_column("id", justify="right")
        dead.add_column("task")
        dead.add_column("attempts", justify="right")
        dead.add_column("kind")
        dead.add_column("reason", overflow="fold")
        for d in s.dead_letters:
            dead.add_row(str(d.id), d.task, str(d.attempts), d.kind, d.reason)
        out.print(dead)

    out.print(
        f"thumbnails: {s.thumbnails_verified} of {s.thumbnails_succeeded} PNG files match the "
        f"checksum their job returned, in {Path(s.output_dir) / 'thumbnails'}"
    )
    out.print(f"workers' log: {s.log_path}")
    env = f"STAGECREW_APP=stagecrew.demo.tasks:app STAGECREW_URL={shlex.quote(s.url)}"
    out.print(f"look around: {env} stagecrew dlq list   (or: jobs show ID, stats)")
    out.print()
    for note in s.notes:
        out.print(f"note: {note}", style="dim")
