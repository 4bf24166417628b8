"""The backend conformance suite, run unchanged against every engine of the registry.

The two model-based tests are sized per engine (`Engine.state_machine_examples`,
`Engine.interleaving_examples`); on Redis the interleaving model also checks the key
layout after every step (`redis_indexes.RedisIndexes`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.backends.redis_indexes import RedisIndexes

from stagecrew.testing.conformance import BackendConformance
from stagecrew.testing.conformance.interleaving import LayoutCheck
from stagecrew.testing.engines import Engine


class TestBackendConformance(BackendConformance):
    """Each test runs once per engine (`[memory]`, `[sqlite]`, `[postgres]`, ...)."""

    @pytest.fixture
    def state_machine_examples(self, engine: Engine) -> int:
        return engine.state_machine_examples

    @pytest.fixture
    def interleaving_examples(self, engine: Engine) -> int:
        return engine.interleaving_examples

    @pytest.fixture
    def interleaving_layout_check(self, engine: Engine) -> Iterator[LayoutCheck | None]:
        if (engine.variant_of or engine.name) != "redis":
            yield None
            return
        indexes = RedisIndexes()
        try:
            yield indexes
        finally:
            indexes.close()
