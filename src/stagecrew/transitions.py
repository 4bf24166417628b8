"""The job state machine: every allowed transition and every decision between states.

This module is pure (no I/O, no clock). The memory engine calls it directly;
the SQL and script engines encode the same rules in their statements, and the
conformance suite holds them to it.
"""

from __future__ import annotations

from collections.abc import Mapping

from .errors import TransitionError
from .job import JobState

S = JobState

ALLOWED: Mapping[JobState, frozenset[JobState]] = {
    # due (promoted, or claimed directly once run_at has passed), or cancelled while waiting
    S.SCHEDULED: frozenset({S.AVAILABLE, S.RUNNING, S.CANCELLED}),
    S.AVAILABLE: frozenset({S.RUNNING, S.CANCELLED}),
    S.RUNNING: frozenset(
        {
            S.SUCCEEDED,  # the function returned
            S.SCHEDULED,  # failed attempt with attempts left: retry after backoff; or snoozed
            S.DEAD,  # attempts exhausted, non-retryable, unrunnable, lost or snoozed too often
            S.CANCELLED,  # cancelled at a checkpoint, or its lease expired with a cancel pending
            S.AVAILABLE,  # handed back at shutdown, or rescued after its lease expired
        }
    ),
    S.SUCCEEDED: frozenset(),
    S.DEAD: frozenset({S.AVAILABLE}),  # requeued from the dead-letter queue
    S.CANCELLED: frozenset({S.AVAILABLE}),  # requeued on request
}

REQUEUEABLE = frozenset({S.DEAD, S.CANCELLED})


def check(current: JobState, target: JobState) -> None:
    if target not in ALLOWED[current]:
        raise TransitionError(f"a job cannot move from {current} to {target}")


def after_failure(attempt: int, max_attempts: int, *, retryable: bool) -> JobState:
    """State after a failed attempt: retry while attempts are left, else the DLQ."""
    if retryable and attempt < max_attempts:
        return S.SCHEDULED
    return S.DEAD


def after_snooze(snoozes: int, max_snoozes: int) -> JobState:
    """State after a task snoozed its job (`Snooze`); `snoozes` counts the earlier snoozes.

    The attempt is given back, so only `max_snoozes` bounds a job that keeps snoozing:
    the snooze past it sends the job to the dead-letter queue instead.
    """
    if snoozes < max_snoozes:
        return S.SCHEDULED
    return S.DEAD


def after_lease_expired(
    attempt: int, max_attempts: int, lost: int, max_lost: int, *, cancel_requested: bool
) -> JobState:
    """State of a running job whose worker stopped renewing its lease.

    `lost` counts this loss too. A job that keeps killing its worker goes dead
    after `max_lost` losses, even with attempts left, so one poison job cannot
    crash-loop the fleet.
    """
    if cancel_requested:
        return S.CANCELLED
    if attempt >= max_attempts or lost >= max_lost:
        return S.DEAD
    return S.AVAILABLE


def after_ack(target: JobState, *, cancel_requested: bool) -> JobState:
    """The state an attempt's outcome leads to, given a pending cancellation.

    A job whose cancellation was requested while it ran never goes back to
    the queue: a retry or a shutdown hand-back ends it cancelled instead.
    """
    if cancel_requested and target in (S.SCHEDULED, S.AVAILABLE):
        return S.CANCELLED
    return target


def on_cancel(current: JobState) -> JobState | None:
    """Cancelling: waiting jobs are cancelled now; running ones get a cancel request (None)."""
    if current in (S.SCHEDULED, S.AVAILABLE):
        return S.CANCELLED
    return None


def initial_state(run_at: float, now: float) -> JobState:
    return S.SCHEDULED if run_at > now else S.AVAILABLE
