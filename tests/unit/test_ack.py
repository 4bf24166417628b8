"""`Ack`: an outcome is checked when it is built, before any store sees it."""

from __future__ import annotations

import math

import pytest

from stagecrew.backends.base import Ack, AckKind
from stagecrew.job import JobRef, JobState

REF = JobRef(1, 1)


@pytest.mark.parametrize("delay", [math.nan, math.inf, -math.inf, -0.5, "5", True])
def test_an_ack_delay_must_be_a_finite_number_of_seconds_not_below_zero(delay: object) -> None:
    with pytest.raises(ValueError, match="delay"):
        Ack(REF, AckKind.RETRY, delay=delay)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", [AckKind.COMPLETE, AckKind.DEAD_LETTER, AckKind.CANCEL])
def test_a_delay_is_refused_for_an_outcome_that_does_not_put_the_job_back(kind: AckKind) -> None:
    with pytest.raises(ValueError, match="retry or a release"):
        Ack(REF, kind, delay=1.0)


def test_a_release_with_a_delay_leads_to_scheduled_and_without_one_to_available() -> None:
    assert Ack(REF, AckKind.RELEASE, delay=0.0).target is JobState.SCHEDULED
    assert Ack(REF, AckKind.RELEASE).target is JobState.AVAILABLE
    assert Ack(REF, AckKind.RETRY, delay=3).target is JobState.SCHEDULED
    assert Ack(REF, AckKind.RETRY).target is JobState.SCHEDULED
