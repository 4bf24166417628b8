"""The test kit: an in-memory app with a fake clock, a ledger, and the engine conformance suite."""

from ..clock import FakeClock
from .audit import AuditReport, Check, Interruptions, audit
from .kit import TestKit
from .ledger import Execution, Ledger, LedgerReport, check

__all__ = [
    "AuditReport",
    "Check",
    "Execution",
    "FakeClock",
    "Interruptions",
    "Ledger",
    "LedgerReport",
    "TestKit",
    "audit",
    "check",
]
