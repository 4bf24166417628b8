"""Unique jobs by state: at most one job per unique key holds it, while in its unique states.

A job enqueued with a unique key holds that key while its state is one of its unique
states. An enqueue whose key a stored job holds stores nothing: it answers the holder's id
with `created=False`, as an idempotency key does. The unique states always include the
live ones (scheduled, available, running), so a job never enters a held state from one that
did not hold except by a re-run from the dead-letter queue, which leaves a job whose key
another job holds where it is (see docs/uniqueness.md).

Engines store the states as text, the names in lifecycle order joined by commas
(`states_text`); no state's name is part of another's, so "the job holds its key" is
`unique_key IS NOT NULL AND instr(unique_states, state) > 0` in SQL.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..job import JobState
from .key_text import check_key_text

MAX_UNIQUE_KEY_BYTES = 200
"""The longest unique key, in bytes of UTF-8."""

LIVE_STATES = frozenset({JobState.SCHEDULED, JobState.AVAILABLE, JobState.RUNNING})
"""The states every job's unique states include: a job moves among them without a write
that could meet another holder (a retry, a hand-back, a rescue)."""

DEFAULT_UNIQUE_STATES = LIVE_STATES

_ORDER = tuple(JobState)


def check_unique_key(key: object, where: str = "unique_key") -> str | None:
    """`key` if it is a usable unique key (or None); raise `ValueError` saying why not."""
    return check_key_text(key, where, MAX_UNIQUE_KEY_BYTES, "unique key")


def check_unique_states(states: object, where: str = "unique states") -> frozenset[JobState]:
    """The states as a frozenset of `JobState`; `ValueError` for an unknown name, or a set
    that leaves out a live state (scheduled, available, running)."""
    if isinstance(states, str) or not isinstance(states, Iterable):
        raise ValueError(f"{where} must be a sequence of state names, not {states!r}")
    found = set()
    for state in states:
        try:
            found.add(JobState(state))
        except ValueError:
            names = ", ".join(s.value for s in JobState)
            raise ValueError(f"{where}: {state!r} is not a job state ({names})") from None
    missing = LIVE_STATES - found
    if missing:
        names = ", ".join(s.value for s in _ORDER if s in missing)
        raise ValueError(
            f"{where} must include scheduled, available and running (missing: {names}): a "
            "job moves among those on retries and hand-backs, and a key it stopped holding "
            "there could be taken by another job meanwhile"
        )
    return frozenset(found)


def states_text(states: Iterable[JobState]) -> str:
    """The states as engines store them: names in lifecycle order, joined by commas."""
    wanted = set(states)
    return ",".join(s.value for s in _ORDER if s in wanted)


def states_from_text(text: object) -> frozenset[JobState]:
    """The states of a stored text (empty for None, '' or names that are not states)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if not isinstance(text, str) or not text:
        return frozenset()
    known = {s.value: s for s in JobState}
    return frozenset(known[name] for name in text.split(",") if name in known)


def holds(state: JobState, unique_key: str | None, unique_states: frozenset[JobState]) -> bool:
    """Whether a job in `state` holds its unique key."""
    return unique_key is not None and state in unique_states
