"""`stagecrew worker --metrics-port`: one endpoint per supervisor sums its worker processes'
metrics, scraped over HTTP, with exact counts of a known workload on every engine."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from stagecrew import App, JobHandle, JobState
from stagecrew.testing.engines import ENGINES, Engine, engine_params
from tests.support.processes import start_worker, stop, wait_for, workers_of, write_app
from tests.support.scrape import Samples, endpoint_in, scrape, value

pytestmark = pytest.mark.slow

APP = """
from stagecrew import App, Context, Retry

app = App()

@app.task
def ok(i: int) -> int:
    return i

@app.task(max_attempts=1)
def broken(i: int) -> None:
    raise ValueError("broken for good")

@app.task
def flaky(i: int, ctx: Context) -> int:
    if ctx.attempt == 1:
        raise Retry(in_=0)
    return i
"""

SUCCEEDED, DEAD, RETRIED = 6, 3, 2
"""The workload: jobs that succeed, that fail straight to the DLQ, that retry once then succeed."""
Counts = dict[tuple[str, str], float]
"""`stagecrew_jobs_total` of the default queue by (task, outcome)."""
CONCURRENCY = 4


def _producer(url: str) -> App:
    app = App(url)

    @app.task(name="ok")
    def ok(i: int) -> None: ...

    @app.task(name="broken", max_attempts=1)  # the producer's options are the job's
    def broken(i: int) -> None: ...

    @app.task(name="flaky")
    def flaky(i: int) -> None: ...

    return app


def _enqueue(
    app: App, succeeded: int = SUCCEEDED, dead: int = DEAD, retried: int = RETRIED
) -> list[JobHandle]:
    return [
        *app.tasks["ok"].enqueue_many([(i,) for i in range(succeeded)]),
        *app.tasks["broken"].enqueue_many([(i,) for i in range(dead)]),
        *app.tasks["flaky"].enqueue_many([(i,) for i in range(retried)]),
    ]


def _jobs(samples: Samples, task: str, outcome: str) -> float:
    return value(samples, "stagecrew_jobs_total", queue="default", task=task, outcome=outcome) or 0


def _expected(succeeded: int = SUCCEEDED, dead: int = DEAD, retried: int = RETRIED) -> Counts:
    return {
        ("ok", "succeeded"): succeeded,
        ("broken", "dead"): dead,
        ("flaky", "retried"): retried,
        ("flaky", "succeeded"): retried,
    }


def _counted(samples: Samples) -> Counts:
    """Every nonzero `stagecrew_jobs_total` of the default queue, by (task, outcome)."""
    return {
        (labels["task"], labels["outcome"]): v
        for (name, frozen), v in samples.items()
        if name == "stagecrew_jobs_total" and v and (labels := dict(frozen))["queue"] == "default"
    }


@contextmanager
def _supervisor(
    tmp_path: Path, url: str, name: str = "worker", *args: str
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`stagecrew worker --metrics-port 0` on `url`; its process and its metrics URL."""
    tmp_path.mkdir(exist_ok=True)
    log = tmp_path / f"{name}.log"
    ref = write_app(tmp_path, "metrics_app", APP)
    process = start_worker(
        tmp_path,
        ref,
        {"STAGECREW_URL": url},
        *("--metrics-port", "0", "--metrics-host", "127.0.0.1"),
        *("--concurrency", str(CONCURRENCY), "--poll-interval", "0.1", *args),
        log_file=log,
    )
    try:
        assert wait_for(lambda: endpoint_in(log) is not None or process.poll() is not None, 60)
        endpoint = endpoint_in(log)
        assert endpoint is not None, log.read_text()
        yield process, endpoint
    finally:
        code, _ = stop(process)
        assert code == 0, log.read_text()


def _scraped_when(endpoint: str, expected: Counts) -> Samples:
    """A scrape once the counts reach `expected` (polled: each process flushes its counts
    about once a second)."""
    seen: list[Samples] = [{}]

    def reached() -> bool:
        seen[0] = scrape(endpoint)
        counted = _counted(seen[0])
        return all(counted.get(key, 0) >= n for key, n in expected.items())

    assert wait_for(reached, 60, interval=0.1), _counted(seen[0])
    return seen[0]


def _all_finished(handles: list[JobHandle]) -> bool:
    return all(h.get().state in (JobState.SUCCEEDED, JobState.DEAD) for h in handles)


@pytest.mark.parametrize("engine", engine_params(cross_process=True, variants=False))
def test_one_endpoint_counts_every_attempt_of_two_processes_exactly(
    tmp_path: Path, engine: Engine
) -> None:
    with engine.stores(tmp_path) as stores:
        url = stores.url()
        producer = _producer(url)
        try:
            handles = _enqueue(producer)
            with _supervisor(tmp_path, url, "worker", "--processes", "2") as (_, endpoint):
                samples = _scraped_when(endpoint, _expected())
                assert wait_for(lambda: _all_finished(handles), 30)
                assert _counted(scrape(endpoint)) == _expected()
                # both processes' slots, summed: the endpoint is the host's, not one process's
                assert value(samples, "stagecrew_worker_slots") == 2 * CONCURRENCY
                attempts = SUCCEEDED + DEAD + 2 * RETRIED
                waits = [
                    value(samples, "stagecrew_job_wait_seconds_count", queue="default", task=t)
                    for t in ("ok", "broken", "flaky")
                ]
                assert sum(w or 0 for w in waits) == attempts
                runs = value(samples, "stagecrew_job_run_seconds_count", queue="default", task="ok")
                assert runs == SUCCEEDED
        finally:
            producer.close()


def test_one_process_serves_its_metrics_too_and_its_directory_goes_with_it(
    tmp_path: Path,
) -> None:
    with ENGINES["sqlite"].stores(tmp_path) as stores:
        url = stores.url()
        producer = _producer(url)
        try:
            _enqueue(producer)
            with _supervisor(tmp_path, url, "worker", "--processes", "1") as (process, endpoint):
                samples = _scraped_when(endpoint, _expected())
                assert value(samples, "stagecrew_worker_slots") == CONCURRENCY
                directories = _metrics_directories(process.pid)
                assert len(directories) == 1
                assert oct(directories[0].stat().st_mode & 0o777) == "0o700"
            assert _metrics_directories(process.pid) == []
        finally:
            producer.close()


def _metrics_directories(supervisor: int) -> list[Path]:
    return sorted(Path(tempfile.gettempdir()).glob(f"stagecrew-metrics-{supervisor}-*"))


def test_two_supervisors_on_one_host_count_apart(tmp_path: Path) -> None:
    with ENGINES["sqlite"].stores(tmp_path) as stores:
        first_url, second_url = stores.url(), stores.url()
        first, second = _producer(first_url), _producer(second_url)
        try:
            _enqueue(first, 2, 1, 1)
            _enqueue(second, 5, 2, 1)
            with (
                _supervisor(tmp_path / "a", first_url, "a") as (_, first_endpoint),
                _supervisor(tmp_path / "b", second_url, "b") as (_, second_endpoint),
            ):
                _scraped_when(first_endpoint, _expected(2, 1, 1))
                _scraped_when(second_endpoint, _expected(5, 2, 1))
                assert _counted(scrape(first_endpoint)) == _expected(2, 1, 1)
                assert _counted(scrape(second_endpoint)) == _expected(5, 2, 1)
        finally:
            first.close()
            second.close()


def test_a_killed_worker_process_keeps_its_counts_and_stops_counting_its_slots(
    tmp_path: Path,
) -> None:
    with ENGINES["sqlite"].stores(tmp_path) as stores:
        url = stores.url()
        producer = _producer(url)
        try:
            _enqueue(producer)
            with _supervisor(tmp_path, url, "worker", "--processes", "2") as (process, endpoint):
                _scraped_when(endpoint, _expected())
                [victim, _] = workers_of(process.pid)
                os.kill(victim, signal.SIGKILL)
                assert wait_for(lambda: victim not in workers_of(process.pid), 30)
                assert wait_for(lambda: len(workers_of(process.pid)) == 2, 30)
                # the restarted process's slots replace the dead one's; no count is lost
                assert wait_for(
                    lambda: value(scrape(endpoint), "stagecrew_worker_slots") == 2 * CONCURRENCY,
                    30,
                )
                assert _counted(scrape(endpoint)) == _expected()
        finally:
            producer.close()


def test_a_metrics_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as taken, ENGINES["sqlite"].stores(tmp_path) as stores:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ref = write_app(tmp_path, "metrics_app", APP)
        process = start_worker(
            tmp_path,
            ref,
            {"STAGECREW_URL": stores.url()},
            *("--metrics-port", str(port), "--metrics-host", "127.0.0.1"),
        )
        try:
            out, _ = process.communicate(timeout=60)
        finally:
            stop(process)
    assert process.returncode == 2
    assert out.decode().strip().splitlines() == [
        f"Error: --metrics-port: cannot serve metrics on 127.0.0.1:{port}: the port is in use; "
        "choose another port"
    ]
