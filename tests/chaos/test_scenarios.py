"""Every chaos scenario, short version, on SQLite, PostgreSQL and Redis.

PostgreSQL gets a fresh migrated schema and Redis a fresh key prefix per test;
without a reachable server those skip, except in CI, where they fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stagecrew.chaos import SCENARIOS, ChaosOptions, run_scenario
from tests.support.stores import fresh_store

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


@pytest.fixture(params=["sqlite", "postgres", "redis"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_store(request.param, tmp_path) as url:
        yield url


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
