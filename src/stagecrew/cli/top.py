"""`stagecrew top`: a live view of the store: queues, workers, running jobs, recent failures.

Refreshes every second from the store alone (`--url` is enough): queue stats, the worker
registry, the running jobs and the newest dead ones; and every ten seconds the store's
per-minute counts of finished attempts (the last hour: the sparklines and the out rates). The
in rate is the out rate plus how fast the queue's backlog (waiting, scheduled and running
jobs) grows, from this view's own samples (its sparkline: the last 30 refreshes). `q` or
Ctrl-C exits, leaving the terminal as it was; `--once` prints one frame and exits (for
scripts and terminals that cannot redraw).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import termios
import time
import tty
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import click
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..app import App
from ..backends.base import JobFilter, QueueStats
from ..backends.job_counts import BUCKET_SECONDS, CountHistory, bucket_start
from ..backends.worker_registry import WorkerRegistry, WorkerStatus
from ..job import Job, JobState
from ..observability.outcomes import FINISHED, error_rate
from .options import app_option, load, store_name
from .output import console, format_duration, one_line

REFRESH = 1.0
HISTORY_REFRESH = 10.0
SPARK_MINUTES = 30
RATE_SAMPLES = 10
IN_SPARK = 30
"""The in rate is the backlog's growth over this many of this view's samples."""
SPARKS = " ▁▂▃▄▅▆▇█"
BACKLOG = (JobState.AVAILABLE, JobState.SCHEDULED, JobState.RUNNING)


def sparkline(values: Sequence[float]) -> str:
    top = max(values, default=0.0)
    if top <= 0:
        return SPARKS[0] * len(values)
    return "".join(SPARKS[round(v / top * (len(SPARKS) - 1))] for v in values)


def per_minute(history: CountHistory, queue: str | None, outcomes: frozenset[str]) -> list[int]:
    """Counts of `outcomes` in each of the last `SPARK_MINUTES` minutes, oldest first."""
    current = bucket_start(history.now)
    minutes = [current - BUCKET_SECONDS * n for n in range(SPARK_MINUTES - 1, -1, -1)]
    totals = dict.fromkeys(minutes, 0)
    for bucket in history.buckets:
        mine = queue is None or bucket.key.queue == queue
        if mine and bucket.start in totals and bucket.key.outcome in outcomes:
            totals[bucket.start] += bucket.n
    return [totals[m] for m in minutes]


def out_rate(history: CountHistory, queue: str | None) -> float:
    """Finished attempts per second over the last minute (the current bucket and the part of
    the one before it that falls in that minute)."""
    counts = per_minute(history, queue, FINISHED)
    into = (history.now - bucket_start(history.now)) / BUCKET_SECONDS
    return (counts[-1] + counts[-2] * (1 - into)) / BUCKET_SECONDS


@dataclass
class Frame:
    """What one refresh read from the store."""

    stats: list[QueueStats]
    registry: WorkerRegistry
    running: list[Job]
    failures: list[Job]
    at: float = field(default_factory=time.monotonic)


class Sampler:
    def __init__(self, app: App) -> None:
        self.app = app
        self.history: CountHistory | None = None
        self._history_at = 0.0
        self._backlogs: deque[tuple[float, dict[str, int]]] = deque(maxlen=RATE_SAMPLES)
        self.arrivals: dict[str, deque[float]] = {}
        """Per queue, its in rate at each of the last `IN_SPARK` refreshes (the sparkline)."""

    def sample(self) -> Frame:
        backend = self.app.backend
        if self.history is None or time.monotonic() - self._history_at >= HISTORY_REFRESH:
            self.history = backend.read_counts(SPARK_MINUTES * BUCKET_SECONDS + BUCKET_SECONDS)
            self._history_at = time.monotonic()
        frame = Frame(
            stats=backend.stats(),
            registry=backend.list_workers(),
            running=backend.list_jobs(JobFilter(states=frozenset({JobState.RUNNING}), limit=10)),
            failures=backend.list_jobs(JobFilter(states=frozenset({JobState.DEAD}), limit=5)),
        )
        backlog = {q.queue: sum(q.count(s) for s in BACKLOG) for q in frame.stats}
        self._backlogs.append((frame.at, backlog))
        return frame

    def in_rate(self, queue: str, out: float) -> float | None:
        """Jobs per second arriving on `queue`: the out rate plus the backlog's growth (kept
        for the sparkline of the last `IN_SPARK` refreshes)."""
        if len(self._backlogs) < 2:
            return None
        (first_at, first), (last_at, last) = self._backlogs[0], self._backlogs[-1]
        growth = (last.get(queue, 0) - first.get(queue, 0)) / max(last_at - first_at, 1e-9)
        rate = max(0.0, out + growth)
        self.arrivals.setdefault(queue, deque(maxlen=IN_SPARK)).append(rate)
        return rate


def render(sampler: Sampler, frame: Frame) -> RenderableType:
    app, history = sampler.app, sampler.history
    assert history is not None
    now = frame.registry.now
    alive = frame.registry.alive()
    busy, slots = sum(w.info.busy for w in alive), sum(w.info.concurrency for w in alive)
    errors = error_rate(history.totals(bucket_start(history.now) - 4 * BUCKET_SECONDS))
    header = Text.assemble(
        ("stagecrew top ", "bold"),
        f"{store_name(app.url)}   workers {len(alive)} alive, {busy}/{slots} slots busy   "
        f"out {out_rate(history, None):.1f}/s   errors (5 min) "
        f"{errors * 100:.1f}%   (q quits)",
    )
    return Group(
        header,
        _queues(sampler, frame, history),
        _workers(frame.registry, now),
        _running(frame.running, now),
        _failures(frame.failures, now),
    )


def _queues(sampler: Sampler, frame: Frame, history: CountHistory) -> Table:
    table = Table(title="queues", title_justify="left", expand=True)
    for column in ("queue", "waiting", "scheduled", "running", "dead", "oldest wait"):
        table.add_column(column, justify="left" if column == "queue" else "right")
    table.add_column("in/s", justify="right")
    table.add_column(f"in, last {IN_SPARK} s", no_wrap=True)
    table.add_column("out/s", justify="right")
    table.add_column(f"out per minute, last {SPARK_MINUTES} min", no_wrap=True)
    for q in frame.stats:
        out = out_rate(history, q.queue)
        arriving = sampler.in_rate(q.queue, out)
        name = Text(q.queue)
        if q.paused:
            name.append(" (paused)", "yellow")
        table.add_row(
            name,
            str(q.count(JobState.AVAILABLE)),
            str(q.count(JobState.SCHEDULED)),
            str(q.count(JobState.RUNNING)),
            str(q.count(JobState.DEAD)),
            format_duration(q.oldest_available_age),
            "-" if arriving is None else f"{arriving:.1f}",
            Text(sparkline(list(sampler.arrivals.get(q.queue, ()))), style="green"),
            f"{out:.1f}",
            Text(sparkline(per_minute(history, q.queue, FINISHED)), style="cyan"),
        )
    return table


def _workers(registry: WorkerRegistry, now: float) -> Table:
    table = Table(title="workers", title_justify="left", expand=True)
    for column in ("worker", "host", "pid", "queues", "busy", "last seen"):
        table.add_column(column, justify="right" if column in ("pid", "busy") else "left")
    for worker in registry.alive():
        info = worker.info
        table.add_row(
            worker.id,
            info.host,
            str(info.pid),
            ",".join(info.queues),
            f"{info.busy}/{info.concurrency}",
            f"{format_duration(max(0.0, now - worker.seen_at))} ago",
        )
    lost = [w for w in registry.workers if w.status(now) is WorkerStatus.LOST]
    if lost:
        table.caption = f"{len(lost)} lost lately (stagecrew workers)"
    return table


def _running(jobs: list[Job], now: float) -> Table:
    table = Table(title="running", title_justify="left", expand=True)
    for column in ("id", "task", "queue", "attempt", "for", "progress"):
        table.add_column(column, justify="right" if column in ("id", "attempt", "for") else "left")
    for job in jobs:
        progress = job.progress
        shown = "-"
        if progress is not None:
            fraction = progress.fraction
            shown = f"{fraction * 100:.0f}%" if fraction is not None else f"{progress.done:g}"
            if progress.message:
                shown += f" {one_line(progress.message, 40)}"
        started = job.started_at
        table.add_row(
            str(job.id),
            job.task,
            job.queue,
            str(job.attempt),
            format_duration(None if started is None else max(0.0, now - started)),
            shown,
        )
    return table


def _failures(jobs: list[Job], now: float) -> Table:
    table = Table(title="recent failures (dead)", title_justify="left", expand=True)
    for column in ("id", "task", "queue", "error", "ago"):
        table.add_column(column, justify="right" if column in ("id", "ago") else "left")
    for job in jobs:
        error = job.errors[-1] if job.errors else None
        text = "-" if error is None else one_line(f"{error.type}: {error.message}", 70)
        finished = job.finished_at
        table.add_row(
            str(job.id),
            job.task,
            job.queue,
            text,
            format_duration(None if finished is None else max(0.0, now - finished)),
        )
    return table


@contextlib.contextmanager
def keys() -> Iterator[bool]:
    """stdin in cbreak mode while the view runs (restored after); whether keys can be read."""
    if not sys.stdin.isatty():
        yield False
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def quit_pressed(wait: float) -> bool | None:
    """Wait up to `wait` seconds for a key on stdin; whether it was `q` (None: stdin closed)."""
    ready, _, _ = select.select([sys.stdin], [], [], wait)
    if not ready:
        return False
    key = os.read(sys.stdin.fileno(), 1)
    return None if key == b"" else key.lower() == b"q"


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # leaves the view the way Ctrl-C does: the terminal restored


@click.command()
@app_option
@click.option("--once", is_flag=True, help="Print one frame and exit.")
def top(app_ref: str | None, once: bool) -> None:
    """A live view: queues (depth, oldest wait, in and out rates, sparklines), workers,
    running jobs with their progress, recent failures. `q` or Ctrl-C quits."""
    app = load(app_ref)
    sampler = Sampler(app)
    out = console()
    if once:
        out.print(render(sampler, sampler.sample()))
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    first = render(sampler, sampler.sample())
    with (
        contextlib.suppress(KeyboardInterrupt),
        keys() as readable,
        Live(first, console=out, screen=True, auto_refresh=False) as live,
    ):
        listening = readable
        while True:
            pressed = quit_pressed(REFRESH) if listening else None
            if pressed:
                return
            if pressed is None:  # no keys to read (stdin not a terminal, or closed)
                listening = False
                time.sleep(REFRESH)
            live.update(render(sampler, sampler.sample()), refresh=True)
