"""Fault injection for crash tests: a worker process that SIGKILLs itself at an exact point.

A testing facility, off unless asked for. Set `STAGECREW_FAULT` before a worker
starts (it is read once, when the `Worker` is built), for example
`STAGECREW_FAULT=before_ack:0.05` or `after_claim:0.1,during_ack:0.2`; each time
the worker passes a named point it kills itself with that probability:

- `after_claim`: a batch of jobs was claimed and none of them started;
- `before_ack`: a job's function returned and its outcome is not yet written;
- `during_ack`: a batch of outcomes is being written; the kill lands a random
  few milliseconds after the write began (before, while or just after the store
  applies it).

Before dying the process writes one line to stderr,
`stagecrew fault: SIGKILL at <point> (pid <pid>)`. A worker without faults pays
one `is None` test per point.
"""

from __future__ import annotations

import os
import random
import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from ..errors import ConfigurationError

ENV_VAR = "STAGECREW_FAULT"
DURING_WINDOW = 0.005
"""Longest delay, in seconds, between the start of an ack write and a `during_ack` kill."""


class FaultPoint(StrEnum):
    AFTER_CLAIM = "after_claim"
    BEFORE_ACK = "before_ack"
    DURING_ACK = "during_ack"


def kill_this_process(point: FaultPoint) -> None:
    os.write(2, f"stagecrew fault: SIGKILL at {point} (pid {os.getpid()})\n".encode())
    os.kill(os.getpid(), signal.SIGKILL)


@dataclass(slots=True)
class Faults:
    """The chance of dying at each point; `kill` is what dying means (a test may swap it)."""

    chances: Mapping[FaultPoint, float]
    rng: random.Random = field(default_factory=random.Random)
    kill: Callable[[FaultPoint], None] = kill_this_process

    @classmethod
    def parse(cls, text: str) -> Faults:
        """`point:probability[,point:probability...]`, e.g. `after_claim:0.05`."""
        chances: dict[FaultPoint, float] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, _, value = item.partition(":")
            try:
                point = FaultPoint(name.strip())
                chance = float(value) if value.strip() else 1.0
            except ValueError:
                raise ConfigurationError(
                    f"{ENV_VAR}={text!r}: expected point:probability with a point among "
                    f"{', '.join(p.value for p in FaultPoint)}, e.g. after_claim:0.05"
                ) from None
            if not 0.0 <= chance <= 1.0:
                raise ConfigurationError(f"{ENV_VAR}={text!r}: a probability is from 0 to 1")
            chances[point] = chance
        return cls(chances)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Faults | None:
        text = environ.get(ENV_VAR, "").strip()
        return cls.parse(text) if text else None

    def _due(self, point: FaultPoint) -> bool:
        chance = self.chances.get(point, 0.0)
        return chance > 0.0 and self.rng.random() < chance

    def at(self, point: FaultPoint) -> None:
        """Die here, with this point's probability."""
        if self._due(point):
            self.kill(point)

    def soon(self, point: FaultPoint) -> None:
        """With this point's probability, die from another thread a few milliseconds from now."""
        if self._due(point):
            timer = threading.Timer(self.rng.uniform(0.0, DURING_WINDOW), self.kill, (point,))
            timer.daemon = True
            timer.start()
