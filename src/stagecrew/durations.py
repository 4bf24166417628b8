"""Durations as people write them: `90`, `30s`, `15m`, `12h`, `7d`, `2w`, `1h30m`."""

from __future__ import annotations

import math
import re

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str) -> float:
    """Seconds in `90`, `30s`, `15m`, `12h`, `7d`, `2w` or a sum such as `1h30m`."""
    value = text.strip().lower()
    try:
        seconds = float(value)
    except ValueError:
        parts = _DURATION.findall(value)
        if not parts or "".join(n + u for n, u in parts) != value.replace(" ", ""):
            raise ValueError(
                f"{text!r} is not a duration; use seconds or a number with a unit: "
                "30s, 15m, 12h, 7d, 2w (or 1h30m)"
            ) from None
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{text!r}: a duration must be a finite number of seconds, 0 or more")
    return seconds
