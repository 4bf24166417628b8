"""The pure state machine in `stagecrew.transitions`: every rule, checked without a store."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stagecrew import transitions
from stagecrew.backends.base import ACK_TARGET, AckKind
from stagecrew.job import FINAL_STATES, WAITING_STATES, JobState

S = JobState

attempts = st.integers(min_value=0, max_value=50)
positive = st.integers(min_value=1, max_value=50)


def test_every_state_has_its_allowed_transitions_listed() -> None:
    assert set(transitions.ALLOWED) == set(JobState)
    for targets in transitions.ALLOWED.values():
        assert targets <= set(JobState)


def test_no_state_moves_to_itself() -> None:
    for state, targets in transitions.ALLOWED.items():
        assert state not in targets


def test_succeeded_is_the_only_state_with_no_way_out() -> None:
    assert [s for s, targets in transitions.ALLOWED.items() if not targets] == [S.SUCCEEDED]


def test_only_a_claim_leads_to_running() -> None:
    assert {s for s, targets in transitions.ALLOWED.items() if S.RUNNING in targets} == set(
        WAITING_STATES
    )


def test_every_ack_kind_leads_somewhere_a_running_job_may_go() -> None:
    assert set(ACK_TARGET) == set(AckKind)
    assert set(ACK_TARGET.values()) <= transitions.ALLOWED[S.RUNNING]


def test_requeueable_jobs_are_final_and_may_become_available() -> None:
    assert transitions.REQUEUEABLE <= FINAL_STATES
    for state in transitions.REQUEUEABLE:
        assert S.AVAILABLE in transitions.ALLOWED[state]
    assert S.SUCCEEDED not in transitions.REQUEUEABLE


@pytest.mark.parametrize(
    ("current", "target"),
    [(c, t) for c in JobState for t in JobState if t in transitions.ALLOWED[c]],
)
def test_check_lets_allowed_transitions_through(current: JobState, target: JobState) -> None:
    transitions.check(current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [(c, t) for c in JobState for t in JobState if t not in transitions.ALLOWED[c]],
)
def test_check_refuses_any_other_transition_naming_both_states(
    current: JobState, target: JobState
) -> None:
    with pytest.raises(transitions.TransitionError) as raised:
        transitions.check(current, target)
    assert str(current) in str(raised.value)
    assert str(target) in str(raised.value)


def test_transition_error_is_a_value_error() -> None:
    assert issubclass(transitions.TransitionError, ValueError)


# -- after_failure ---------------------------------------------------------------
@given(attempt=attempts, max_attempts=positive)
def test_a_retryable_failure_retries_while_attempts_are_left(
    attempt: int, max_attempts: int
) -> None:
    expected = S.SCHEDULED if attempt < max_attempts else S.DEAD
    assert transitions.after_failure(attempt, max_attempts, retryable=True) is expected


@given(attempt=attempts, max_attempts=positive)
def test_a_non_retryable_failure_is_always_dead(attempt: int, max_attempts: int) -> None:
    assert transitions.after_failure(attempt, max_attempts, retryable=False) is S.DEAD


def test_the_last_attempt_failing_is_dead() -> None:
    assert transitions.after_failure(2, 3, retryable=True) is S.SCHEDULED
    assert transitions.after_failure(3, 3, retryable=True) is S.DEAD
    assert transitions.after_failure(1, 1, retryable=True) is S.DEAD


# -- after_lease_expired ---------------------------------------------------------
@given(attempt=attempts, max_attempts=positive, lost=positive, max_lost=positive)
def test_an_expired_lease_with_a_cancel_pending_is_cancelled(
    attempt: int, max_attempts: int, lost: int, max_lost: int
) -> None:
    target = transitions.after_lease_expired(
        attempt, max_attempts, lost, max_lost, cancel_requested=True
    )
    assert target is S.CANCELLED


@given(attempt=attempts, max_attempts=positive, lost=positive, max_lost=positive)
def test_an_expired_lease_is_retried_only_with_attempts_and_losses_left(
    attempt: int, max_attempts: int, lost: int, max_lost: int
) -> None:
    target = transitions.after_lease_expired(
        attempt, max_attempts, lost, max_lost, cancel_requested=False
    )
    if attempt < max_attempts and lost < max_lost:
        assert target is S.AVAILABLE
    else:
        assert target is S.DEAD
    assert target in transitions.ALLOWED[S.RUNNING]


def test_a_job_that_keeps_killing_its_worker_goes_dead_with_attempts_left() -> None:
    assert transitions.after_lease_expired(1, 20, 2, 3, cancel_requested=False) is S.AVAILABLE
    assert transitions.after_lease_expired(3, 20, 3, 3, cancel_requested=False) is S.DEAD


# -- on_cancel and initial_state ---------------------------------------------------
@pytest.mark.parametrize("state", sorted(WAITING_STATES))
def test_cancelling_a_waiting_job_cancels_it_now(state: JobState) -> None:
    target = transitions.on_cancel(state)
    assert target is S.CANCELLED
    transitions.check(state, target)


@pytest.mark.parametrize("state", [S.RUNNING, *sorted(FINAL_STATES)])
def test_cancelling_a_running_or_finished_job_changes_no_state(state: JobState) -> None:
    assert transitions.on_cancel(state) is None


@given(now=st.floats(min_value=0, max_value=4e9), offset=st.floats(min_value=-1e6, max_value=1e6))
def test_a_job_is_scheduled_only_when_its_run_at_is_in_the_future(
    now: float, offset: float
) -> None:
    run_at = now + offset
    expected = S.SCHEDULED if run_at > now else S.AVAILABLE
    assert transitions.initial_state(run_at, now) is expected


def test_a_job_due_exactly_now_is_available() -> None:
    assert transitions.initial_state(100.0, 100.0) is S.AVAILABLE
    assert transitions.initial_state(100.5, 100.0) is S.SCHEDULED
