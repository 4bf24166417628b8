"""Outcomes whose text no engine would take as it is never wedge a worker, on every engine.

An exception message can hold anything: a lone surrogate (a message built from a
non-UTF-8 file name with `os.fsdecode`), a NUL byte. Such a job must still end dead
or retried with a readable error, and the jobs after it in the same worker must
complete. Each test gets its own store: a memory store, a SQLite file, a
PostgreSQL schema or a Redis key prefix.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stagecrew import App, ErrorKind, JobState
from stagecrew.worker.runner import Worker
from tests.support.stores import fresh_store

NON_UTF8_NAME = b"report-\xff.csv"
"""A file name that is not UTF-8: `os.fsdecode` (and `os.listdir`) turn its byte 0xff into the
lone surrogate U+DCFF, which no UTF-8 encoder takes."""


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    """One event loop for the whole test: the store keeps one pool of async connections."""
    with asyncio.Runner() as runner:
        yield runner


@pytest.fixture(params=["memory", "sqlite", "postgres", "redis"])
def app(request: pytest.FixtureRequest, tmp_path: Path, runner: asyncio.Runner) -> Iterator[App]:
    with fresh_store(request.param, tmp_path) as url:
        app = App(url)
        yield app
        app.close()


@pytest.fixture
def drain(app: App, runner: asyncio.Runner) -> Callable[[], int]:
    """Run every due job; a worker that wedges fails the test instead of hanging it."""
    return lambda: runner.run(asyncio.wait_for(Worker(app, concurrency=2).drain(), 30))


@pytest.mark.parametrize(
    ("bad_name", "readable"),
    [
        pytest.param(NON_UTF8_NAME, "report-\\udcff.csv", id="lone-surrogate"),
        pytest.param(b"report\x00.csv", "report\\x00.csv", id="nul"),
    ],
)
def test_a_job_whose_error_text_no_engine_takes_ends_dead_and_the_jobs_after_it_complete(
    app: App, drain: Callable[[], int], bad_name: bytes, readable: str
) -> None:
    @app.task(max_attempts=1)
    def parse(name_hex: str) -> None:
        raise ValueError(f"cannot parse {os.fsdecode(bytes.fromhex(name_hex))}")

    @app.task
    def ok(i: int) -> int:
        return i

    bad = parse.enqueue(bad_name.hex())
    after = [ok.enqueue(i) for i in range(5)]

    drain()

    dead = bad.get()
    assert dead.state is JobState.DEAD
    (error,) = dead.errors
    assert error.kind is ErrorKind.ERROR and error.type == "ValueError"
    assert error.message == f"cannot parse {readable}"
    assert readable in error.traceback
    assert [job.get().result for job in after] == list(range(5))


def test_a_retried_job_with_a_lone_surrogate_in_its_error_is_scheduled_with_a_readable_error(
    app: App, drain: Callable[[], int]
) -> None:
    @app.task(max_attempts=3)
    def parse(name_hex: str) -> None:
        raise OSError(f"cannot open {os.fsdecode(bytes.fromhex(name_hex))}")

    @app.task
    def ok() -> str:
        return "done"

    bad = parse.enqueue(NON_UTF8_NAME.hex())
    after = ok.enqueue()

    drain()

    retried = bad.get()
    assert retried.state is JobState.SCHEDULED
    assert [e.message for e in retried.errors] == ["cannot open report-\\udcff.csv"]
    assert after.get().state is JobState.SUCCEEDED
