"""What the benchmark scripts share: the app under test, worker processes, enqueue and drain
measurements, pickup latency, and RESULTS.md.

Importing this module puts `src/` (or the tree named by `STAGECREW_BENCH_SRC`, to measure
another checkout of stagecrew with the same scripts, e.g. before and after a change, in one
session) and `benchmarks/` at the front of `sys.path`; the worker processes get the same path.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SRC = Path(os.environ.get("STAGECREW_BENCH_SRC") or ROOT / "src").resolve()
for _entry in (str(HERE), str(SRC)):
    if _entry in sys.path:
        sys.path.remove(_entry)
sys.path[:0] = [str(SRC), str(HERE)]

from stagecrew import App, JobState  # noqa: E402


def _load_servers() -> Any:
    """This checkout's registry of servers (`stagecrew.testing.servers`), whatever tree is
    measured: it imports nothing of stagecrew, so it is loaded from its file."""
    path = ROOT / "src" / "stagecrew" / "testing" / "servers.py"
    spec = importlib.util.spec_from_file_location("stagecrew_bench_servers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    return module


servers = _load_servers()
"""The servers, PostgreSQL schemas and Redis key prefixes of the engine registry."""

RESULTS = HERE / "RESULTS.md"
RESULTS_HEADER = "# Benchmark results\n\nProduced by `make bench`; newest first.\n\n"


# -- the app under test -----------------------------------------------------------------------
def make_app(url: str, module: str = "bench_app") -> App:
    """`<module>.app` (the tasks the workers also load), pointed at `url`."""
    app: App = importlib.import_module(module).app
    app.close()
    app.url = url
    app._backend = None
    return app


def enqueue_one_by_one(app: App, jobs: int) -> float:
    """Jobs/s of `noop.enqueue(i)` in a loop; the first call (connecting) is not timed."""
    noop = app.tasks["noop"]
    noop.enqueue(-1)
    start = time.perf_counter()
    for i in range(jobs):
        noop.enqueue(i)
    return jobs / (time.perf_counter() - start)


def enqueue_batched(app: App, jobs: int, batch: int) -> float:
    """Jobs/s of `noop.enqueue_many` in batches of `batch`; a first small batch is not timed."""
    noop = app.tasks["noop"]
    noop.enqueue_many([(-1,)])
    start = time.perf_counter()
    for offset in range(0, jobs, batch):
        noop.enqueue_many([(i,) for i in range(offset, min(jobs, offset + batch))])
    return jobs / (time.perf_counter() - start)


def queue_jobs(app: App, task: str, jobs: int, batch: int = 10_000) -> None:
    fn = app.tasks[task]
    for offset in range(0, jobs, batch):
        fn.enqueue_many([(i,) for i in range(offset, min(jobs, offset + batch))])


def count_state(app: App, state: JobState) -> int:
    return sum(q.count(state) for q in app.jobs.stats())


# -- worker processes ----------------------------------------------------------------------
def start_workers(
    url: str,
    processes: int,
    concurrency: int,
    app_ref: str = "bench_app:app",
    extra_args: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """`python -m stagecrew worker <app_ref> *extra_args` against `url`, in a session of its
    own."""
    env = {
        **os.environ,
        "STAGECREW_URL": url,
        "PYTHONPATH": os.pathsep.join([str(HERE), str(SRC)]),
    }
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "stagecrew", "worker", app_ref),
            *("--processes", str(processes), "--concurrency", str(concurrency)),
            *("--log-level", "WARNING"),
            *extra_args,
        ],
        env=env,
        cwd=HERE,
        start_new_session=True,
    )


def stop_workers(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a graceful stop); SIGKILL to the whole session if it takes over 30 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextmanager
def workers(
    url: str,
    processes: int,
    concurrency: int,
    app_ref: str = "bench_app:app",
    extra_args: Sequence[str] = (),
) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_workers(url, processes, concurrency, app_ref, extra_args)
    try:
        yield proc
    finally:
        stop_workers(proc)


# -- drains ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DrainRates:
    """Jobs/s from the first claim to the last completion (store times), overall and over
    the first and the last tenth of the jobs; and, when measured, over the whole drain."""

    rate: float
    first_tenth: float
    last_tenth: float
    whole: float | None = None
    """Jobs/s from launching the workers to seeing the last job succeed (this process's
    clock): the steady rate plus the workers' start-up and the poll's delay."""


def drain_rates(
    times: Sequence[tuple[float, float]], wall_seconds: float | None = None
) -> DrainRates:
    """Rates from each job's (started_at, finished_at), as the store recorded them, and the
    seconds the whole drain took, if given."""
    jobs = len(times)
    first_start = min(started for started, _ in times)
    finished = sorted(done for _, done in times)
    tenth = max(1, jobs // 10)
    return DrainRates(
        rate=jobs / (finished[-1] - first_start),
        first_tenth=tenth / (finished[tenth - 1] - first_start),
        last_tenth=tenth / (finished[-1] - finished[-tenth - 1]),
        whole=None if wall_seconds is None else jobs / wall_seconds,
    )


def run_workers_until(
    url: str,
    processes: int,
    concurrency: int,
    done: Callable[[], bool],
    *,
    poll: float = 0.05,
    progress: bool = False,
    app_ref: str = "bench_app:app",
    extra_args: Sequence[str] = (),
) -> float:
    """Start workers and stop them once `done()` says so (or fail if they exit first).

    Returns the seconds from launching them to `done()`, their graceful stop left out.
    """
    started = reported = time.monotonic()
    with workers(url, processes, concurrency, app_ref, extra_args) as proc:
        while not done():
            if proc.poll() is not None:
                raise RuntimeError("workers exited during the drain")
            time.sleep(poll)
            if progress and time.monotonic() - reported >= 30:
                reported = time.monotonic()
                print(f"  ... {reported - started:.0f}s", flush=True)
        return time.monotonic() - started


def drain(
    app: App,
    url: str,
    jobs: int,
    processes: int,
    concurrency: int,
    task: str,
    app_ref: str = "bench_app:app",
    extra_args: Sequence[str] = (),
) -> DrainRates:
    """Queue `jobs` jobs of `task` in an empty store, run workers (of `app_ref`, given
    `extra_args`) until all succeeded."""
    queue_jobs(app, task, jobs)
    seconds = run_workers_until(
        url,
        processes,
        concurrency,
        lambda: count_state(app, JobState.SUCCEEDED) >= jobs,
        app_ref=app_ref,
        extra_args=extra_args,
    )
    done = app.jobs.list(state=JobState.SUCCEEDED, task=task, limit=jobs)
    if len(done) != jobs:
        raise RuntimeError(f"expected {jobs} succeeded {task} jobs, found {len(done)}")
    return drain_rates([(j.started_at or 0.0, j.finished_at or 0.0) for j in done], seconds)


def drain_beside_hot_key(
    app: App,
    url: str,
    task_name: str,
    jobs: int,
    hot: int,
    *,
    keys: int,
    processes: int,
    concurrency: int,
    app_ref: str,
) -> DrainRates:
    """Drain `jobs` jobs of `task_name` (args: key, i) over `keys` keys, behind `hot` jobs of
    one key ("hot") when `hot`; the rates of the other keys' jobs (the hot key's need not be
    done)."""
    task = app.tasks[task_name]
    if hot:
        task.enqueue_many([("hot", i) for i in range(hot)])
    task.enqueue_many([(f"k{i % keys}", i) for i in range(jobs)])

    def others() -> list[Any]:
        found = app.jobs.list(state=JobState.SUCCEEDED, task=task_name, limit=jobs + hot)
        return [j for j in found if j.args[0] != "hot"]

    run_workers_until(
        url, processes, concurrency, lambda: len(others()) >= jobs, poll=1.0, app_ref=app_ref
    )
    return drain_rates([(j.started_at or 0.0, j.finished_at or 0.0) for j in others()])


# -- pickup latency ------------------------------------------------------------------------------
def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def pickup_latency(
    app: App, url: str, samples: int, processes: int, *, settle: float = 2.0
) -> tuple[float, float]:
    """Seconds from enqueue to claim of single jobs 20 ms apart, idle workers: p50, p99.

    Both times are the store's (`enqueued_at`, `started_at`).
    """
    noop = app.tasks["noop"]
    handles = []
    with workers(url, processes, 10):
        time.sleep(settle)  # let the workers start, listen and go idle
        for i in range(samples):
            handles.append(noop.enqueue(i))
            time.sleep(0.02)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all(h.get().state is JobState.SUCCEEDED for h in handles[-5:]):
                break
            time.sleep(0.05)
    waits = [(j.started_at or 0.0) - j.enqueued_at for j in (h.get() for h in handles)]
    return statistics.median(waits), percentile(waits, 0.99)


# -- reporting ---------------------------------------------------------------------------------
def machine(engine: str) -> str:
    return (
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {engine}; load average at the end "
        f"{os.getloadavg()[0]:.2f}."
    )


def prepend_results(lines: Sequence[str]) -> None:
    """Put a section at the top of RESULTS.md (newest first)."""
    previous = RESULTS.read_text().removeprefix(RESULTS_HEADER) if RESULTS.exists() else ""
    RESULTS.write_text(RESULTS_HEADER + "\n".join(lines) + "\n\n" + previous)
    print(f"wrote {RESULTS}")


def write_json(path: str | None, results: dict[str, Any]) -> None:
    """Write a run's figures as JSON (`--json PATH`), to compare or combine runs."""
    if path is None:
        return

    def plain(value: Any) -> Any:
        if isinstance(value, DrainRates):
            return asdict(value)
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        return value

    Path(path).write_text(json.dumps(plain(results), indent=2) + "\n")
