"""The engines the conformance suite runs against: one `backend_factory` param each.

Every factory returns a fresh, migrated, empty store on the test's `FakeClock`.
An engine whose module is not importable yet, or whose server is not reachable,
shows up as a named skip instead of silently disappearing from the run.

Adding an engine: write `_<engine>_factory(tmp_path)` and list it in `ENGINES`.
PostgreSQL will read STAGECREW_TEST_POSTGRES_URL and migrate a fresh schema
per test; Redis will read STAGECREW_TEST_REDIS_URL and use a fresh key prefix
per test. Both skip with a clear reason when the variable is unset, except in
CI (the CI variable set), where a missing server is a failure.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

from stagecrew.backends.base import Backend
from stagecrew.backends.memory import MemoryBackend
from stagecrew.clock import FakeClock
from stagecrew.testing.conformance import BackendFactory

try:
    from stagecrew.backends.sqlite import SQLiteBackend
except ImportError as exc:  # the engine is being written in parallel
    SQLiteBackend = None  # type: ignore[assignment,misc]
    _SQLITE_MISSING = f"stagecrew.backends.sqlite does not import: {exc}"
else:
    _SQLITE_MISSING = ""


def _memory_factory(tmp_path: Path) -> BackendFactory:
    def make(clock: FakeClock) -> Backend:
        return MemoryBackend("memory://", clock)

    return make


def _sqlite_factory(tmp_path: Path) -> BackendFactory:
    if SQLiteBackend is None:
        pytest.skip(_SQLITE_MISSING)
    numbers = itertools.count(1)

    def make(clock: FakeClock) -> Backend:
        # A temp file per store: the absolute path gives sqlite://// (four slashes).
        backend = SQLiteBackend(f"sqlite:///{tmp_path}/jobs-{next(numbers)}.db", clock)
        backend.migrate()
        return backend

    return make


ENGINES: dict[str, Callable[[Path], BackendFactory]] = {
    "memory": _memory_factory,
    "sqlite": _sqlite_factory,
    # "postgres": _postgres_factory,  (STAGECREW_TEST_POSTGRES_URL, a schema per test)
    # "redis": _redis_factory,  (STAGECREW_TEST_REDIS_URL, a key prefix per test)
}


@pytest.fixture(params=[pytest.param(name, id=name) for name in ENGINES])
def backend_factory(request: pytest.FixtureRequest, tmp_path: Path) -> BackendFactory:
    engine: str = request.param
    return ENGINES[engine](tmp_path)
