"""Chaos scenarios: real worker processes killed, paused and stopped while a ledger keeps score.

`run_scenario(name, ChaosOptions(url=...))` runs one scenario from `SCENARIOS`
against any store and returns an `AuditReport`; `stagecrew chaos` is its
command line. See docs/chaos.md.
"""

from .fleet import ChaosError
from .harness import ChaosOptions
from .scenarios import SCENARIOS, run_scenario

__all__ = ["SCENARIOS", "ChaosError", "ChaosOptions", "run_scenario"]
