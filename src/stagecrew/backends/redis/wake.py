"""The wake-up behind `wait` and `wait_and_claim`: a blocking pop of each queue's T:wake list.

Scripts that make work due leave a token on T:wake (see keys.py, and `wake` in _lib.lua); an
idle worker blocks in BLPOP on its queues' lists. A token left while no worker waited stays
there, so no wake-up is missed, and nothing needs making again after a Redis restart: the next
wait simply blocks again (after a pause, while Redis is down). One token wakes one worker, not
all of them; a claim that took as many jobs as asked while more wait leaves another token.

`wait_and_claim` sends the BLPOP and the claim in one pipeline: Redis runs a blocked client's
next commands as soon as its block ends, so the claim runs on the wake-up without another
round trip (on a Cluster, where one command names one slot, the claim follows the pop).
"""

from __future__ import annotations

from collections.abc import Sequence

from .records import Arg

WAIT_ERROR_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
"""Pauses after failed waits in a row, so that a worker neither spins nor dies while Redis
restarts."""
SHORTEST_BLOCK = 0.001
"""Seconds: BLPOP's timeout 0 means for ever, so a wait never asks for less than this."""


def pop(wake_keys: Sequence[str], timeout: float) -> tuple[Arg, ...]:
    """BLPOP over the queues' wake lists, for `timeout` seconds (at least `SHORTEST_BLOCK`)."""
    return ("BLPOP", *wake_keys, f"{max(timeout, SHORTEST_BLOCK):.3f}")
