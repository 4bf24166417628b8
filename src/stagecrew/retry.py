"""Retry policy: exponential backoff with full jitter.

The delay before retry number `attempt` (1 after the first failure) is drawn
uniformly from [0, min(cap, base * factor ** attempt)]. Full jitter spreads a
burst of failures (a dependency that went down for everyone) over the whole
window instead of retrying them all in lockstep.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .clock import checked_seconds
from .errors import ConfigurationError, InvalidTimeError


@dataclass(frozen=True, slots=True)
class Backoff:
    base: float = 2.0
    factor: float = 2.0
    cap: float = 6 * 3600.0

    def __post_init__(self) -> None:
        checked_seconds(self.base, "backoff base")
        checked_seconds(self.cap, "backoff cap")
        if not (1 <= self.factor < math.inf):  # false for NaN
            raise InvalidTimeError(
                f"backoff factor must be a finite number, 1 or more; got {self.factor!r}"
            )

    def ceiling(self, attempt: int) -> float:
        """The largest delay the attempt can draw (before jitter)."""
        try:
            return min(self.cap, self.base * self.factor ** max(attempt, 0))
        except OverflowError:
            return self.cap

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        return (rng or random).uniform(0.0, self.ceiling(attempt))

    @classmethod
    def coerce(cls, value: Backoff | Mapping[str, Any] | None) -> Backoff:
        if value is None:
            return cls()
        if isinstance(value, Backoff):
            return value
        unknown = set(value) - {"base", "factor", "cap"}
        if unknown:
            raise ConfigurationError(
                f"unknown backoff option(s) {sorted(unknown)}; use base, factor and cap"
            )
        return cls(**{k: float(v) for k, v in value.items()})
