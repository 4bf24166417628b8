"""The records of the limit-state operations, and what the front layer checks in them.

Fleet-wide limits that are not counts of running jobs (rate limits, circuit breakers) keep
their state in the store as one small record per name (`rate:send_email`,
`rate:send_email:customer-7`, `circuit:payments`): JSON text only the limit's own code reads,
a version, and a time after which the record reads as absent. Alerts keep theirs the same way
(`alert:<name>`, and the evaluation tick `alerts:tick`, see `maintenance/alert_evaluation.py`):
soft shared state decided by compare-and-set. The store knows nothing of tokens or windows;
it offers two operations on these records, so the algorithm is written once, in Python
(`stagecrew.limits.rate`), and every engine stores it the same way:

- `read_limits(names)`: the live records of those names and the store's now;
- `swap_limits(swaps)`: an all-or-nothing compare-and-set. Each swap names the version its
  writer read (None: no live record) and the new version, which the *writer* draws at random
  (62 bits), so a record that expired and was written again never shows a version a slow
  writer still holds (no ABA). If every record still has its expected version, all are
  written at once; otherwise none is, and the caller gets the records as they are, to
  compute again from.

Times are the store's (`LimitStates.now`), so a worker whose clock is off computes from
the same now as the rest of the fleet. `prune_limits` deletes the expired records.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .steps import check_stored_text

SWAP_TRIES = 8
"""Compare-and-set rounds a limit's writer tries, each computed again from the records the
store sent back, before it gives up for now."""
MAX_LIMIT_NAME = 200
MAX_LIMIT_TTL = 30 * 86_400.0
"""A limit record lives at most this long after its last write (30 days)."""


def new_version() -> int:
    """A fresh random record version (62 bits: fits every engine's signed 64-bit integer)."""
    return secrets.randbits(62) + 1


@dataclass(frozen=True, slots=True)
class LimitState:
    """One limit's stored record."""

    name: str
    version: int
    value: str
    """JSON text, written and read by the limit's own code only."""
    expires_at: float
    """By the store's clock: from then on the record reads as absent."""


@dataclass(frozen=True, slots=True)
class LimitSwap:
    """One record's compare-and-set: "if `name` is still at `expected`, store `value`"."""

    name: str
    expected: int | None
    """The version read (None: no live record was read)."""
    value: str
    ttl: float
    """Seconds from the store's now until the new record expires."""
    version: int = field(default_factory=new_version)
    """The new record's version; drawn at random unless given."""


@dataclass(frozen=True, slots=True)
class LimitStates:
    """What `read_limits` and `swap_limits` return."""

    applied: bool
    """A swap: every expected version held and every record was written. A read: True."""
    now: float
    """The store's now, at which the records were read or written."""
    states: Mapping[str, LimitState]
    """The live records of the names asked for, after the call (absent names left out)."""


def check_limit_name(name: object, operation: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{operation} needs limit names (non-empty str), got {name!r}")
    if len(name) > MAX_LIMIT_NAME or any(ord(c) < 32 for c in name):
        raise ValueError(
            f"{operation}: a limit name is at most {MAX_LIMIT_NAME} characters without "
            f"control characters, got {name!r}"
        )
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{operation}: limit name {name!r} is not valid UTF-8") from None
    return name


def check_limit_names(names: Sequence[str], operation: str) -> tuple[str, ...]:
    if isinstance(names, str):
        raise TypeError(f"{operation} takes a sequence of names, not the str {names!r}")
    checked = tuple(dict.fromkeys(check_limit_name(name, operation) for name in names))
    return checked


def check_version(version: object, operation: str, what: str) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or not 0 < version < 2**63:
        raise ValueError(f"{operation}: {what} must be an int in [1, 2**63), not {version!r}")
    return version


def check_swaps(swaps: Sequence[LimitSwap]) -> tuple[LimitSwap, ...]:
    """Refuse, before anything is written, a swap the store could not keep as given."""
    operation = "swap_limits"
    checked: dict[str, LimitSwap] = {}
    for swap in swaps:
        if not isinstance(swap, LimitSwap):
            raise TypeError(f"{operation} takes LimitSwap records, not {swap!r}")
        name = check_limit_name(swap.name, operation)
        if name in checked:
            raise ValueError(f"{operation}: limit {name!r} is swapped twice in one call")
        if swap.expected is not None:
            check_version(swap.expected, operation, "an expected version")
        check_version(swap.version, operation, "a new version")
        if swap.version == swap.expected:
            raise ValueError(f"{operation}: limit {name!r} keeps its version; draw a new one")
        check_stored_text(swap.value, operation, f"limit {name!r}'s value")
        ttl = swap.ttl
        if (
            isinstance(ttl, bool)
            or not isinstance(ttl, int | float)
            or not math.isfinite(ttl)
            or not 0 < ttl <= MAX_LIMIT_TTL
        ):
            raise ValueError(
                f"{operation}: limit {name!r}'s ttl must be seconds in (0, {MAX_LIMIT_TTL:g}], "
                f"not {ttl!r}"
            )
        checked[name] = swap
    return tuple(checked.values())


def swap_holds(stored: Mapping[str, LimitState], swaps: Sequence[LimitSwap]) -> bool:
    """The compare-and-set every engine applies to the live records it read."""
    return all((stored[s.name].version if s.name in stored else None) == s.expected for s in swaps)


def live(states: Sequence[LimitState], now: float) -> dict[str, LimitState]:
    """The records not expired at `now`, by name."""
    return {s.name: s for s in states if s.expires_at > now}
