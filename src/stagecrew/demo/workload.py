"""Run the demo: a fresh SQLite store, a burst of mixed jobs, real worker processes.

The workers run as `python -m stagecrew worker stagecrew.demo.tasks:app` in a
subprocess, exactly as a user would start them, so the demo exercises the same
supervisor, signals and shutdown path as production. Everything the summary
reports is read back from the store afterwards.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..app import App
from ..backends.sqlite.backend import URL_PREFIX
from ..errors import StagecrewError
from ..job import FINAL_STATES, JobState, NewJob
from ..serialization import encode_payload
from .tasks import create_app

DEMO_APP_REF = "stagecrew.demo.tasks:app"
DEFAULT_URL = "sqlite:///stagecrew-demo.db"
MIN_JOBS = 10
UNKNOWN_TASK = "resize_legacy"
"""A task name the demo app does not register, as if left over from an older deploy."""
DEMO_TASKS = frozenset({"thumbnail", "webhook", "report", "import_contact", UNKNOWN_TASK})
ROUNDS = 10
"""The workload is written in this many interleaved batches, so every queue has work at once."""
READY_LINE = " started: queues="
"""What a worker process logs once it is about to claim (see `stagecrew.worker.runner`)."""
WORKER_LEASE_SECONDS = 10.0
WORKER_GRACE_SECONDS = 5.0
WORKER_POLL_SECONDS = 0.1


class DemoError(StagecrewError):
    """The demo could not run; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class DemoOptions:
    url: str = DEFAULT_URL
    jobs: int = 300
    processes: int = 2
    concurrency: int = 16
    output_dir: Path = field(
        default_factory=lambda: Path(tempfile.mkdtemp(prefix="stagecrew-demo-"))
    )
    """Where the thumbnails and the workers' log go."""
    timeout: float = 120.0
    """Seconds to wait for every job to finish before stopping the workers anyway."""


@dataclass(frozen=True, slots=True)
class Enqueued:
    """What the producer wrote: every job's id, and which jobs were meant to fail."""

    ids: tuple[int, ...]
    poison_ids: tuple[int, ...]
    unrunnable_ids: tuple[int, ...]
    delayed_ids: tuple[int, ...]

    @property
    def total(self) -> int:
        return len(self.ids)


@dataclass(frozen=True, slots=True)
class Progress:
    """Counts across every queue, read from `app.jobs.stats()`."""

    total: int
    counts: dict[JobState, int]
    elapsed: float

    @property
    def finished(self) -> int:
        return sum(self.counts.get(state, 0) for state in FINAL_STATES)

    def count(self, state: JobState) -> int:
        return self.counts.get(state, 0)


@dataclass(frozen=True, slots=True)
class DemoRun:
    """Everything a summary needs besides the store itself."""

    app: App
    options: DemoOptions
    enqueued: Enqueued
    elapsed: float
    worker_exit_code: int | None
    log_path: Path
    timed_out: bool


# -- the store -------------------------------------------------------------
def sqlite_path(url: str) -> Path:
    """The database file of a `sqlite:///` URL; the demo runs on SQLite only."""
    if not url.startswith(URL_PREFIX):
        raise DemoError(f"the demo runs on SQLite, got {url!r}: pass --url sqlite:///path/demo.db")
    path = url[len(URL_PREFIX) :].partition("?")[0]
    if not path or path == ":memory:" or path.startswith("file:"):
        raise DemoError(f"{url!r} does not name a database file")
    return Path(path).absolute()


def absolute_url(url: str) -> str:
    """The same URL with an absolute path, so every process opens the same file."""
    query = url.partition("?")[2]
    return f"{URL_PREFIX}{sqlite_path(url)}" + (f"?{query}" if query else "")


def _check_disposable(path: Path) -> None:
    """Refuse to delete a file that is not an earlier demo's store."""
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise DemoError(f"cannot open {path} to check it is a demo store: {exc}") from None
    try:
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        foreign = {t for t in tables if not t.startswith(("stagecrew_", "sqlite_"))}
        tasks: set[str] = set()
        if "stagecrew_jobs" in tables:
            tasks = {row[0] for row in conn.execute("SELECT DISTINCT task FROM stagecrew_jobs")}
    except sqlite3.DatabaseError as exc:
        raise DemoError(
            f"{path} exists and is not a SQLite database ({exc}); "
            "pass another --url or remove the file yourself"
        ) from None
    finally:
        conn.close()
    if foreign or not tasks <= DEMO_TASKS:
        raise DemoError(
            f"{path} holds data that is not from the demo (tables {sorted(foreign)}, "
            f"tasks {sorted(tasks - DEMO_TASKS)}); the demo starts from a fresh file and "
            "will not delete it: pass another --url"
        )


def reset_store(path: Path) -> None:
    """Delete an earlier demo store with its WAL and shared-memory files."""
    if path.exists():
        _check_disposable(path)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


# -- the workload ----------------------------------------------------------
def plan(total: int) -> dict[str, int]:
    """How many jobs of each kind make up `total`, besides the fixed bad-input jobs."""
    rest = total - 5  # 2 poison records, 1 unknown task, 1 bad arguments, 1 delayed report
    counts = {
        "thumbnail": rest * 45 // 100,
        "webhook": rest * 30 // 100,
        "report": rest * 15 // 100,
    }
    counts["import_contact"] = rest - sum(counts.values())
    return counts


def _chunks(items: list[Any], rounds: int) -> list[list[Any]]:
    size = -(-len(items) // rounds) if items else 1
    return [items[i * size : (i + 1) * size] for i in range(rounds)]


def enqueue_workload(app: App, total: int, out_dir: Path) -> Enqueued:
    """Write the demo's jobs in interleaved batches; the bad ones go in with the good."""
    if total < MIN_JOBS:
        raise DemoError(f"--jobs must be at least {MIN_JOBS}")
    counts = plan(total)
    work: dict[str, list[tuple[Any, ...]]] = {
        "thumbnail": [(seed, str(out_dir)) for seed in range(1, counts["thumbnail"] + 1)],
        "webhook": [
            (f"https://partner-{i % 3}.example/hooks", 1000 + i) for i in range(counts["webhook"])
        ],
        "report": [(account, 30) for account in range(1, counts["report"] + 1)],
        "import_contact": [
            ({"name": f"Customer {i}", "email": f"Customer{i}@Example.com "},)
            for i in range(counts["import_contact"])
        ],
    }
    batches = {task: _chunks(calls, ROUNDS) for task, calls in work.items()}
    ids: list[int] = []
    for round_ in range(ROUNDS):
        for task, chunks in batches.items():
            if chunks[round_]:
                ids += [h.id for h in app.tasks[task].enqueue_many(chunks[round_])]

    contact = app.tasks["import_contact"]
    poison = [
        contact.enqueue({"name": "No Email"}),
        contact.enqueue({"name": "Bad Email", "email": "not-an-address"}),
    ]
    # written past enqueue's validation, as an older producer or a hand-edited row would be
    unrunnable = app.backend.enqueue(
        [
            NewJob(task=UNKNOWN_TASK, payload=encode_payload(["old.png"], {}), max_attempts=3),
            NewJob(
                task="thumbnail",
                payload=encode_payload([], {"seed": 7, "colour": "red"}),
                queue="images",
                max_attempts=3,
            ),
        ]
    )
    delayed = app.tasks["report"].options(delay=1.0).enqueue(999, 7)

    ids += [h.id for h in poison] + [e.id for e in unrunnable] + [delayed.id]
    return Enqueued(
        ids=tuple(ids),
        poison_ids=tuple(h.id for h in poison),
        unrunnable_ids=tuple(e.id for e in unrunnable),
        delayed_ids=(delayed.id,),
    )


# -- the workers -----------------------------------------------------------
class WorkerProcess:
    """`stagecrew worker` for the demo app, in its own session, logging to a file."""

    def __init__(self, url: str, processes: int, concurrency: int, log_path: Path) -> None:
        self.url = url
        self.processes = processes
        self.concurrency = concurrency
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        package_root = str(Path(__file__).resolve().parents[2])
        python_path = os.pathsep.join(
            p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p
        )
        env = {**os.environ, "STAGECREW_URL": self.url, "PYTHONPATH": python_path}
        self._log = self.log_path.open("wb")
        # a session of its own: a Ctrl-C in the terminal reaches the demo, which stops
        # the workers gracefully, instead of every process at once
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stagecrew",
                "worker",
                DEMO_APP_REF,
                "--processes",
                str(self.processes),
                "--concurrency",
                str(self.concurrency),
                "--lease-seconds",
                str(WORKER_LEASE_SECONDS),
                "--grace",
                str(WORKER_GRACE_SECONDS),
                "--poll-interval",
                str(WORKER_POLL_SECONDS),
                "--log-level",
                "INFO",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def exit_code(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        code = self.exit_code
        if code is not None:
            raise DemoError(
                f"the worker supervisor exited with code {code}; its log "
                f"({self.log_path}) ends with:\n{self.log_tail()}"
            )

    def wait_ready(self, timeout: float) -> bool:
        """Wait until every worker process logged its start; False after `timeout` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                started = self.log_path.read_text(errors="replace").count(READY_LINE)
            except OSError:
                started = 0
            if started >= self.processes:
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> int | None:
        """SIGTERM (graceful: running jobs finish), escalating if the workers hang."""
        process = self._process
        if process is None:
            return None
        try:
            for sig, wait in (
                (signal.SIGTERM, WORKER_GRACE_SECONDS + 10.0),
                (signal.SIGTERM, 5.0),  # a second signal makes the supervisor kill its workers
                (signal.SIGKILL, 5.0),
            ):
                if process.poll() is not None:
                    break
                process.send_signal(sig)
                try:
                    process.wait(wait)
                except subprocess.TimeoutExpired:
                    continue
            return process.poll()
        finally:
            if self._log is not None:
                self._log.close()


# -- the whole run ---------------------------------------------------------
def run_demo(
    options: DemoOptions,
    on_progress: Callable[[Progress], None] = lambda _: None,
    on_ready: Callable[[], None] = lambda: None,
) -> DemoRun:
    """Reset the store, start the workers, enqueue, wait for every job, stop the workers.

    `on_progress` is called a few times a second while jobs run. The workers are
    stopped on the way out whatever happens, including Ctrl-C.
    """
    started = time.monotonic()
    url = absolute_url(options.url)
    reset_store(sqlite_path(url))
    options.output_dir.mkdir(parents=True, exist_ok=True)
    log_path = options.output_dir / "workers.log"
    app = create_app(url)
    app.backend.migrate()  # before the workers start, so they do not race to create the schema
    workers = WorkerProcess(url, options.processes, options.concurrency, log_path)
    workers.start()
    timed_out = False
    exit_code: int | None = None
    try:
        workers.wait_ready(timeout=30.0)
        on_ready()
        enqueued = enqueue_workload(app, options.jobs, options.output_dir / "thumbnails")
        deadline = time.monotonic() + options.timeout
        while True:
            workers.check_alive()
            counts: dict[JobState, int] = {}
            for queue in app.backend.stats():
                for state, count in queue.counts.items():
                    counts[state] = counts.get(state, 0) + count
            progress = Progress(enqueued.total, counts, time.monotonic() - started)
            on_progress(progress)
            if progress.finished >= enqueued.total:
                break
            if time.monotonic() >= deadline:
                timed_out = True
                break
            time.sleep(0.2)
    finally:
        exit_code = workers.stop()
    return DemoRun(
        app=app,
        options=options,
        enqueued=enqueued,
        elapsed=time.monotonic() - started,
        worker_exit_code=exit_code,
        log_path=log_path,
        timed_out=timed_out,
    )
