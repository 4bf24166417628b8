"""Exponential backoff with full jitter: bounds and spread."""

from __future__ import annotations

import random
import statistics

import pytest

from stagecrew import Backoff, ConfigurationError


@pytest.mark.parametrize("attempt", [0, 1, 2, 5, 10, 40, 5000])
def test_delay_stays_within_zero_and_the_capped_exponential(attempt: int) -> None:
    backoff = Backoff(base=1.0, factor=2.0, cap=300.0)
    rng = random.Random(attempt)
    ceiling = min(300.0, 1.0 * 2.0**attempt) if attempt < 1000 else 300.0
    delays = [backoff.delay(attempt, rng) for _ in range(2000)]
    assert all(0.0 <= d <= ceiling for d in delays)


def test_full_jitter_spreads_uniformly_over_the_window() -> None:
    backoff = Backoff(base=1.0, factor=2.0, cap=300.0)
    rng = random.Random(42)
    delays = [backoff.delay(4, rng) for _ in range(20_000)]  # window [0, 16]
    assert statistics.fmean(delays) == pytest.approx(8.0, abs=0.25)
    # each quarter of the window gets about a quarter of the draws
    quarters = [sum(1 for d in delays if q * 4 <= d < (q + 1) * 4) for q in range(4)]
    assert all(abs(count - 5000) < 400 for count in quarters), quarters
    assert len({round(d, 3) for d in delays}) > 10_000


def test_ceiling_grows_exponentially_until_the_cap() -> None:
    backoff = Backoff(base=2.0, factor=3.0, cap=100.0)
    assert [backoff.ceiling(a) for a in range(5)] == [2.0, 6.0, 18.0, 54.0, 100.0]


def test_backoff_accepts_a_dict_and_rejects_unknown_keys() -> None:
    assert Backoff.coerce({"base": 1, "factor": 2, "cap": 300}) == Backoff(1.0, 2.0, 300.0)
    with pytest.raises(ConfigurationError, match="unknown backoff"):
        Backoff.coerce({"bsae": 1})
    with pytest.raises(ConfigurationError):
        Backoff(base=1.0, factor=0.5)
