"""The workload benchmark's definitions: what each job costs, the ideal rates, its options.

No timing is asserted here beyond what a job must at least cost (a lower bound the job itself
guarantees); how fast the drains run is the benchmark's business, not a test's.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import socket
import time
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """`benchmarks/bench_workloads.py`, imported the way the script imports its siblings."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("bench_workloads")


@pytest.fixture
def bench_app(bench: ModuleType) -> ModuleType:
    return importlib.import_module("bench_app")


def test_a_cpu_bound_job_burns_its_cpu_seconds_on_its_own_thread(bench_app: ModuleType) -> None:
    """CPU time, not wall time: a job that slept instead would use almost none."""
    before = time.thread_time()
    bench_app.app.tasks["burn_2ms"].fn(0)
    assert time.thread_time() - before >= bench_app.BURN_CPU_SECONDS


def test_the_async_cpu_bound_job_burns_them_on_the_event_loop(bench_app: ModuleType) -> None:
    task = bench_app.app.tasks["burn_2ms_async"]
    assert inspect.iscoroutinefunction(task.fn)
    before = time.thread_time()
    asyncio.run(task.fn(0))  # the loop runs on this thread
    assert time.thread_time() - before >= bench_app.BURN_CPU_SECONDS


def test_the_io_bound_jobs_wait_their_seconds_sync_and_async(bench_app: ModuleType) -> None:
    sync, on_loop = bench_app.app.tasks["sleep_10ms"], bench_app.app.tasks["sleep_10ms_async"]
    assert not inspect.iscoroutinefunction(sync.fn)
    assert inspect.iscoroutinefunction(on_loop.fn)
    for run in (lambda: sync.fn(0), lambda: asyncio.run(on_loop.fn(0))):
        before = time.monotonic()
        run()
        assert time.monotonic() - before >= bench_app.SLEEP_SECONDS


def test_the_io_bound_ideal_is_every_slot_of_every_process_busy(bench: ModuleType) -> None:
    io = bench.WORKLOADS["sleep_10ms"]
    assert io.ideal(processes=2, concurrency=10, cores=2) == pytest.approx(2 * 10 / 0.010)
    assert io.ideal(processes=2, concurrency=10, cores=1) == pytest.approx(2_000)
    assert bench.WORKLOADS["sleep_10ms_async"].ideal(
        processes=3, concurrency=5, cores=2
    ) == pytest.approx(1_500)


def test_the_cpu_bound_ideal_is_capped_by_the_cores(bench: ModuleType) -> None:
    cpu = bench.WORKLOADS["burn_2ms"]
    assert cpu.ideal(processes=2, concurrency=10, cores=2) == pytest.approx(2 / 0.002)
    assert cpu.ideal(processes=4, concurrency=10, cores=2) == pytest.approx(1_000)
    assert cpu.ideal(processes=1, concurrency=50, cores=2) == pytest.approx(500)
    assert bench.WORKLOADS["burn_2ms_async"].ideal(
        processes=4, concurrency=1, cores=3
    ) == pytest.approx(1_500)


def test_every_workload_runs_a_task_of_the_bench_app(
    bench: ModuleType, bench_app: ModuleType
) -> None:
    assert set(bench.WORKLOADS) <= set(bench_app.app.tasks)


def test_the_workers_run_with_the_cli_default_concurrency(bench: ModuleType) -> None:
    from stagecrew.cli.worker import worker

    (option,) = [p for p in worker.params if p.name == "concurrency"]
    assert bench.default_concurrency() == option.default


def test_engines_default_to_all_three_and_one_can_be_picked(bench: ModuleType) -> None:
    assert bench.parse_args([]).engines == ["sqlite", "postgres", "redis"]
    assert bench.parse_args(["--engines", "redis"]).engines == ["redis"]
    assert bench.parse_args(["--engines", "sqlite,postgres"]).engines == ["sqlite", "postgres"]


def test_an_unknown_engine_is_refused(bench: ModuleType) -> None:
    with pytest.raises(SystemExit):
        bench.parse_args(["--engines", "sqlite,mongo"])


def test_workloads_default_to_all_and_some_can_be_picked(bench: ModuleType) -> None:
    assert bench.parse_args([]).workloads == list(bench.WORKLOADS)
    assert bench.parse_args(["--workloads", "burn_2ms"]).workloads == ["burn_2ms"]
    with pytest.raises(SystemExit):
        bench.parse_args(["--workloads", "burn_2ms,noop"])  # a task, but not a workload


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_server_that_does_not_answer_stops_the_run_naming_it(bench: ModuleType) -> None:
    url = f"postgresql://postgres@127.0.0.1:{closed_port()}/test"
    with pytest.raises(SystemExit, match=r"PostgreSQL is not reachable at .*127\.0\.0\.1"):
        bench.require_servers({"postgres": url})


def test_servers_that_answer_and_sqlite_pass(bench: ModuleType) -> None:
    bench.harness.servers.POSTGRES_SERVER.require()
    bench.harness.servers.REDIS_SERVER.require()
    bench.require_servers(bench.server_urls(["sqlite", "postgres", "redis"]))
