"""The names of attempts' outcomes, as the history of finished attempts and metrics count them.

An outcome is counted once the store decided: the kind of the outcome it applied, or `lost`
when it refused it (the claim was no longer this worker's: the job runs again elsewhere) or
when the attempt ended with no outcome to write (its lease was lost mid-attempt).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from ..backends.base import AckKind

OUTCOMES: Final[dict[AckKind, str]] = {
    AckKind.COMPLETE: "succeeded",
    AckKind.RETRY: "retried",
    AckKind.DEAD_LETTER: "dead",
    AckKind.CANCEL: "cancelled",
    AckKind.SNOOZE: "snoozed",
    AckKind.RELEASE: "released",
}
LOST: Final = "lost"
FAILED: Final = frozenset({"retried", "dead"})
"""The outcomes of attempts that raised: an error rate is their share of the finished ones."""
FINISHED: Final = frozenset({"succeeded", "retried", "dead", "cancelled"})
"""The outcomes of attempts that ran to an end (snoozed, released and lost ones did not)."""


def outcome_of(kind: AckKind, applied: bool) -> str:
    return OUTCOMES[kind] if applied else LOST


def error_rate(totals: Mapping[str, int]) -> float:
    """The share of finished attempts that failed, from counts by outcome (0 if none ended)."""
    finished = sum(n for outcome, n in totals.items() if outcome in FINISHED)
    failed = sum(n for outcome, n in totals.items() if outcome in FAILED)
    return failed / finished if finished else 0.0
