"""Every chaos scenario, short version, on SQLite, PostgreSQL and Redis.

PostgreSQL gets a fresh migrated schema and Redis a fresh key prefix per test;
without a reachable server those skip, except in CI, where they fail.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stagecrew.backends.postgres import PostgresBackend
from stagecrew.chaos import SCENARIOS, ChaosOptions, run_scenario
from tests.backends import test_postgres, test_redis

pytestmark = pytest.mark.slow

SHORT: dict[str, dict[str, object]] = {
    "kill-storm": {"jobs": 300},
    "kill-after-claim": {"jobs": 120},
    "kill-before-ack": {"jobs": 120},
    "kill-during-ack": {"jobs": 120},
    "graceful-shutdown": {},
    "paused-worker": {},
    "future-job": {"jobs": 20, "lease_seconds": 0.5},
    "poison-job": {"jobs": 40},
}
"""The CI sizes: small counts and short leases, so the whole module takes a few minutes."""


def _sqlite(tmp_path: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp_path / 'chaos.db'}"


def _postgres(tmp_path: Path) -> Iterator[str]:
    test_postgres._server_or_skip()
    schemas = test_postgres.Schemas()
    url = test_postgres.with_schema(test_postgres.URL, schemas.new())
    backend = PostgresBackend(url)
    backend.migrate()
    backend.close()
    try:
        yield url
    finally:
        schemas.drop()


def _redis(tmp_path: Path) -> Iterator[str]:
    test_redis._server_or_skip()
    prefixes = test_redis.Prefixes(test_redis.URL)
    try:
        yield prefixes.url_for()
    finally:
        prefixes.delete()


ENGINES: dict[str, Callable[[Path], Iterator[str]]] = {
    "sqlite": _sqlite,
    "postgres": _postgres,
    "redis": _redis,
}


@pytest.fixture(params=list(ENGINES))
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from ENGINES[request.param](tmp_path)


def test_the_short_suite_sizes_every_scenario() -> None:
    assert set(SHORT) == set(SCENARIOS)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_scenario_loses_nothing_and_explains_every_duplicate(
    scenario: str, url: str, tmp_path: Path
) -> None:
    sizes = SHORT[scenario]
    options = ChaosOptions(url=url, workdir=tmp_path / "work", seed=7, **sizes)  # type: ignore[arg-type]
    report = run_scenario(scenario, options)
    text = report.render()
    print(text)
    assert report.ok, text
    assert not report.lost and not report.stuck and not report.unexplained
