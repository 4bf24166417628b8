"""Run a maintenance step every interval, with jitter, until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable

log = logging.getLogger("stagecrew.maintenance")


async def every(
    interval: float,
    step: Callable[[], Awaitable[object]],
    stop: asyncio.Event,
    *,
    name: str,
    rng: random.Random | None = None,
) -> None:
    """Call `step` every `interval` seconds (±20% jitter so a fleet does not sync up)."""
    rng = rng or random.Random()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval * rng.uniform(0.8, 1.2))
        if stop.is_set():
            return
        try:
            await step()
        except Exception as exc:
            log.warning("%s failed: %s (will try again)", name, exc)
