"""The peer benchmark harness (`benchmarks/peers/`): what it reads, computes and cleans up.

The measurements themselves need the peers' venvs and real servers and are run by
`make bench-peers`; these tests hold the parts every figure depends on.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

PEERS = Path(__file__).resolve().parents[2] / "benchmarks" / "peers"
sys.path.insert(0, str(PEERS / "adapters"))
sys.path.insert(0, str(PEERS))

import bench_client  # noqa: E402
import catalog  # noqa: E402
import measure  # noqa: E402
import processes  # noqa: E402
import report  # noqa: E402
import stores  # noqa: E402


# -- the adapters ------------------------------------------------------------------------------
def test_every_adapter_is_read_without_importing_its_library() -> None:
    libraries = {lib.key: lib for lib in catalog.libraries()}
    assert set(libraries) == {
        *("huey", "pgqueuer", "procrastinate", "dramatiq", "taskiq", "rq", "celery"),
        "stagecrew",
    }
    for lib in libraries.values():
        assert lib.engines and set(lib.engines) <= set(catalog.ENGINE_ORDER)
        assert lib.worker and lib.worker_copies >= 1
        assert "default" in lib.defaults, f"{lib.key} does not write its defaults down"
        if not lib.is_stagecrew:
            assert "==" in lib.packages[0], f"{lib.key}'s library is not pinned"
    assert catalog.libraries()[-1].is_stagecrew


def test_an_adapter_missing_a_field_is_refused(tmp_path: Path) -> None:
    adapter = tmp_path / "peer_broken.py"
    adapter.write_text('"""Defaults: none."""\nNAME = "x"\nPACKAGES = ("x==1.*",)\n')
    with pytest.raises(ValueError, match="ENGINES"):
        catalog.read_library(adapter)


def test_the_label_names_the_main_package_major_minor() -> None:
    huey = next(lib for lib in catalog.libraries() if lib.key == "huey")
    assert huey.label("", {"huey": "3.5.4", "redis": "8.1.0"}) == "Huey 3.5"
    stagecrew = next(lib for lib in catalog.libraries() if lib.is_stagecrew)
    assert stagecrew.label("sync task", {}) == "stagecrew, sync task"


# -- the producer's timing -----------------------------------------------------------------------
def test_the_enqueue_clock_starts_after_the_warm_up_call() -> None:
    timed = bench_client.Timed([0, 1, 2], -1)
    seen = []
    for i in timed:
        if i == -1:
            time.sleep(0.2)  # a slow first call (connecting) is not timed
        seen.append(i)
    assert seen == [-1, 0, 1, 2]
    assert timed.finished - timed.started < 0.1


# -- records and figures -----------------------------------------------------------------------
def test_records_are_read_incrementally_and_a_job_run_twice_keeps_its_first_start(
    tmp_path: Path,
) -> None:
    path = tmp_path / "records"
    records = measure.Records(path)
    assert records.read() == {}
    path.write_text("0 10.0\n1 11.")
    assert records.read() == {0: 10.0}  # the second line is not finished yet
    with path.open("a") as out:
        out.write("5\n0 12.0\n")
    assert records.read() == {0: 10.0, 1: 11.5}


def test_drain_counts_start_up_and_steady_does_not() -> None:
    drain = measure.drain_figures(launched=100.0, starts=[102.0, 103.0, 104.0, 106.0])
    assert drain.rate == pytest.approx(4 / 6)
    assert drain.steady == pytest.approx(3 / 4)


def test_pickup_is_each_job_start_minus_its_enqueue() -> None:
    enqueued = {i: float(i) for i in range(100)}
    starts = {i: i + (0.001 if i < 98 else 0.5) for i in range(100)}
    p50, p99 = measure.pickup_figures(enqueued, starts)
    assert p50 == pytest.approx(0.001)
    assert p99 == pytest.approx(0.5)


def test_a_drain_whose_workers_exit_fails_with_their_reason(tmp_path: Path) -> None:
    with pytest.raises(processes.RunFailed, match="drain: exited 1"):
        records = measure.Records(tmp_path / "records")
        measure.wait_for_jobs(records, range(3), lambda: "exited 1", "drain")


# -- the table -------------------------------------------------------------------------------
def row(key: str, engine: str, error: str | None = None, **figures: float) -> report.Row:
    library = next(lib for lib in catalog.libraries() if lib.key == key)
    variant = library.variants[0]
    runs = [] if error else [report.Figures(**figures)]
    return report.Row(engine, library, variant, library.label(variant, {}), runs, error)


def result(rows: list[report.Row]) -> report.Result:
    return report.Result(datetime.now(UTC), rows, 10, 1, 5, 0.05, {}, {}, 1.0)


def test_stagecrew_is_a_ratio_to_the_best_peer_of_its_engine_highest_rate_lowest_latency() -> None:
    rows = [
        row("huey", "redis", enqueue=100.0, drain=50.0, steady=60.0, pickup_p50=0.004),
        row("rq", "redis", enqueue=200.0, drain=10.0, steady=20.0, pickup_p50=0.001),
        row("huey", "sqlite", enqueue=1e6, drain=1e6, steady=1e6, pickup_p50=1e-6),
        row("stagecrew", "redis", enqueue=400.0, drain=100.0, steady=60.0, pickup_p50=0.002),
    ]
    line = report.table(result(rows))[-1]
    assert "| 400; 2.00x |" in line  # against RQ's 200: not Huey's 100, nor a SQLite peer's
    assert "| 100 (60); 2.00x (1.00x) |" in line
    assert "2.0 / \u2013; 2.00x / \u2013 |" in line  # against RQ's 1 ms, the lowest


def test_a_peer_that_could_not_be_installed_stays_in_the_table() -> None:
    rows = [row("celery", "redis", error="install failed: no such version")]
    line = report.table(result(rows))[-1]
    assert "Celery" in line and "install failed: no such version" in line


# -- stores ---------------------------------------------------------------------------------------
def test_the_tests_redis_database_is_never_used() -> None:
    with pytest.raises(stores.StoreError, match="1-15"):
        stores.check_redis("redis://127.0.0.1:6379/0")
    with pytest.raises(stores.StoreError):
        stores.check_redis("redis://127.0.0.1:6379")


# -- no orphans ----------------------------------------------------------------------------
def gone(pid: int) -> bool:
    """True once `pid` has exited (a zombie waiting for init to reap it counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def wait_gone(pid: int, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


STUBBORN_CHILD = """
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", sys.argv[2], sys.argv[1]])
time.sleep(120)
"""
"""A worker process that starts a child which ignores SIGTERM (as a forked work horse or a
pool child may), then waits."""
IGNORING_SIGTERM = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
open(sys.argv[1], "w").write(str(os.getpid()))
time.sleep(120)
"""
"""The child: writes its pid only once SIGTERM is ignored."""


@contextmanager
def stubborn_group(tmp_path: Path) -> Iterator[int]:
    """A worker group whose process has started a child that ignores SIGTERM: its pid."""
    pid_file = tmp_path / "child.pid"
    command = [sys.executable, "-c", STUBBORN_CHILD, str(pid_file), IGNORING_SIGTERM]
    with processes.workers([command], dict(os.environ), tmp_path, tmp_path / "log") as group:
        deadline = time.monotonic() + 10
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the worker did not start its child"
            time.sleep(0.02)
        assert group.exited() is None
        yield int(pid_file.read_text())


def test_stopping_workers_kills_a_child_that_ignores_sigterm(tmp_path: Path) -> None:
    with stubborn_group(tmp_path) as child:
        assert not gone(child)
    assert wait_gone(child), "a worker's child outlived the stop"
    assert not processes._running


def test_a_failure_inside_a_measurement_still_stops_its_workers(tmp_path: Path) -> None:
    started: list[int] = []
    with pytest.raises(KeyboardInterrupt), stubborn_group(tmp_path) as child:
        started.append(child)
        raise KeyboardInterrupt
    assert started and wait_gone(started[0])


def test_stop_all_kills_every_group_left_running(tmp_path: Path) -> None:
    with stubborn_group(tmp_path) as child:
        processes.stop_all()  # what the driver runs on its way out
        assert wait_gone(child)
        assert not processes._running
