"""Retry policy: exponential backoff with full jitter.

The delay before retry number `attempt` (1 after the first failure) is drawn
uniformly from [0, min(cap, base * factor ** attempt)]. Full jitter spreads a
burst of failures (a dependency that went down for everyone) over the whole
window instead of retrying them all in lockstep.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError


@dataclass(frozen=True, slots=True)
class Backoff:
    base: float = 2.0
    factor: float = 2.0
    cap: float = 6 * 3600.0

    def __post_init__(self) -> None:
        if self.base < 0 or self.factor < 1 or self.cap < 0:
            raise ConfigurationError(
                "backoff needs base >= 0, factor >= 1 and cap >= 0, "
                f"got base={self.base}, factor={self.factor}, cap={self.cap}"
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
