"""SQLite connections are per thread; a thread that finished must not keep one open.

A thread-per-request web server enqueues from a new thread for every request. Each connection
holds three file descriptors (the database, its WAL and its shared-memory file), so keeping the
connection of every thread that ever enqueued until `close()` ran the process out of them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from stagecrew.backends.base import JobFilter
from stagecrew.backends.sqlite import SQLiteBackend
from stagecrew.job import NewJob

PAYLOAD = '{"args":[],"kwargs":{}}'


def open_files_under(path: Path) -> int:
    """File descriptors of this process open on the database file or its -wal / -shm."""
    prefix = os.path.realpath(path)
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed since listed
            continue
        if target.startswith(prefix):
            count += 1
    return count


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "jobs.db"


@pytest.fixture
def backend(database: Path) -> Iterator[SQLiteBackend]:
    made = SQLiteBackend(f"sqlite:///{database}")
    made.migrate()
    try:
        yield made
    finally:
        made.close()


def enqueue_in_threads(backend: SQLiteBackend, count: int) -> None:
    """`count` threads, alive at the same time, each enqueueing one job and finishing."""
    ready = threading.Barrier(count)
    errors: list[BaseException] = []

    def request() -> None:
        try:
            ready.wait(timeout=30)
            backend.enqueue([NewJob(task="t", payload=PAYLOAD)])
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=request) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd (Linux)")
def test_short_lived_threads_do_not_each_keep_a_connection_open(
    backend: SQLiteBackend, database: Path
) -> None:
    per_connection = open_files_under(database)  # the main thread's connection, after migrate
    assert per_connection > 0
    for _ in range(200):
        thread = threading.Thread(target=backend.enqueue, args=([NewJob("t", PAYLOAD)],))
        thread.start()
        thread.join(timeout=60)
    assert len(backend.list_jobs(JobFilter())) == 200
    # the main thread's connection, and at most the last thread's, which a new thread takes over
    assert open_files_under(database) <= 2 * per_connection
    assert len(backend._connections) <= 2


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd (Linux)")
def test_open_connections_stay_bounded_by_the_threads_alive_at_once(
    backend: SQLiteBackend, database: Path
) -> None:
    per_connection = open_files_under(database)
    waves, width = 20, 5
    for _ in range(waves):
        enqueue_in_threads(backend, width)
    assert len(backend.list_jobs(JobFilter())) == waves * width
    assert len(backend._connections) <= width + 1
    assert open_files_under(database) <= (width + 1) * per_connection


def test_a_connection_taken_over_from_a_finished_thread_sees_the_latest_writes(
    backend: SQLiteBackend,
) -> None:
    first = threading.Thread(target=backend.enqueue, args=([NewJob("a", PAYLOAD)],))
    first.start()
    first.join(timeout=60)
    backend.enqueue([NewJob("b", PAYLOAD)])  # from the main thread, after the first one ended
    seen: list[list[str]] = []
    second = threading.Thread(
        target=lambda: seen.append([j.task for j in backend.list_jobs(JobFilter())])
    )
    second.start()
    second.join(timeout=60)
    assert seen == [["b", "a"]]


def test_close_still_closes_every_connection(backend: SQLiteBackend, database: Path) -> None:
    enqueue_in_threads(backend, 3)
    backend.close()
    assert backend._connections == []
    if os.path.isdir("/proc/self/fd"):
        assert open_files_under(database) == 0
