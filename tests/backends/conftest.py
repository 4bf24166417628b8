"""The engines the conformance suite runs against: every engine of the one registry.

`stagecrew.testing.engines.ENGINES` names them: memory, SQLite (a temp file per
store), PostgreSQL (a migrated schema per store, at STAGECREW_TEST_POSTGRES_URL),
Redis (a key prefix per store, at STAGECREW_TEST_REDIS_URL) and Redis with the
Cluster key layout. Each is one `engine` param, so every test of the suite runs
once per engine (`[memory]`, `[sqlite]`, `[postgres]`, ...). An engine whose server
does not answer is a named skip, or a failure in CI (the CI variable set).

Adding an engine: add it to `ENGINES`; nothing here changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stagecrew.testing.conformance import BackendFactory
from stagecrew.testing.engines import Engine, engine_params


@pytest.fixture(params=engine_params())
def engine(request: pytest.FixtureRequest) -> Engine:
    engine: Engine = request.param
    return engine


@pytest.fixture
def backend_factory(engine: Engine, tmp_path: Path) -> Iterator[BackendFactory]:
    with engine.stores(tmp_path) as stores:
        yield stores.factory
