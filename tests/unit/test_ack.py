"""`Ack`: an outcome is checked when it is built, before any store sees it."""

from __future__ import annotations

import math

import pytest

from stagecrew.backends.base import Ack, AckKind
from stagecrew.job import AttemptError, ErrorKind, JobRef, JobState

REF = JobRef(1, 1)


@pytest.mark.parametrize("delay", [math.nan, math.inf, -math.inf, -0.5, "5", True])
def test_an_ack_delay_must_be_a_finite_number_of_seconds_not_below_zero(delay: object) -> None:
    with pytest.raises(ValueError, match="delay"):
        Ack(REF, AckKind.RETRY, delay=delay)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", [AckKind.COMPLETE, AckKind.DEAD_LETTER, AckKind.CANCEL])
def test_a_delay_is_refused_for_an_outcome_that_does_not_put_the_job_back(kind: AckKind) -> None:
    with pytest.raises(ValueError, match="meaningful for a retry"):
        Ack(REF, kind, delay=1.0)


def test_a_release_with_a_delay_leads_to_scheduled_and_without_one_to_available() -> None:
    assert Ack(REF, AckKind.RELEASE, delay=0.0).target is JobState.SCHEDULED
    assert Ack(REF, AckKind.RELEASE).target is JobState.AVAILABLE
    assert Ack(REF, AckKind.RETRY, delay=3).target is JobState.SCHEDULED
    assert Ack(REF, AckKind.RETRY).target is JobState.SCHEDULED


ERROR = AttemptError(1, 0.0, ErrorKind.ERROR, "ValueError", "boom")


def test_each_named_constructor_builds_its_outcome_with_the_fields_it_carries() -> None:
    assert Ack.complete(REF) == Ack(REF, AckKind.COMPLETE, result="null")
    assert Ack.complete(REF, '{"a": 1}').result == '{"a": 1}'
    assert Ack.retry(REF, ERROR, 5.0) == Ack(REF, AckKind.RETRY, error=ERROR, delay=5.0)
    assert Ack.dead_letter(REF, ERROR) == Ack(REF, AckKind.DEAD_LETTER, error=ERROR)
    assert Ack.cancel(REF) == Ack(REF, AckKind.CANCEL)
    assert Ack.release(REF) == Ack(REF, AckKind.RELEASE)
    assert Ack.release(REF, delay=2.0, error=ERROR) == Ack(
        REF, AckKind.RELEASE, error=ERROR, delay=2.0
    )


@pytest.mark.parametrize("kind", [k for k in AckKind if k is not AckKind.COMPLETE])
def test_a_result_is_refused_for_any_outcome_but_a_success(kind: AckKind) -> None:
    with pytest.raises(ValueError, match="result belongs to a complete ack"):
        Ack(REF, kind, result="1")


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"kind": "complete"}, "AckKind"),
        ({"kind": AckKind.COMPLETE, "result": b"1"}, "JSON text"),
        ({"kind": AckKind.RETRY, "error": "boom"}, "AttemptError"),
    ],
)
def test_fields_of_the_wrong_type_are_refused_when_the_ack_is_built(
    fields: dict[str, object], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        Ack(REF, **fields)  # type: ignore[arg-type]


def test_run_in_is_the_delay_of_an_outcome_that_schedules_the_job_and_none_otherwise() -> None:
    assert Ack.retry(REF, ERROR).run_in == 0.0
    assert Ack.retry(REF, ERROR, 7).run_in == 7.0
    assert Ack.release(REF, delay=3.0).run_in == 3.0
    assert Ack.release(REF).run_in is None
    assert Ack.complete(REF).run_in is None
    assert Ack.dead_letter(REF, ERROR).run_in is None
