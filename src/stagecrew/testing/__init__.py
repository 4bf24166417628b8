"""The test kit: an in-memory app with a fake clock, a ledger, and the engine conformance suite."""

from ..clock import FakeClock
from .kit import TestKit
from .ledger import Ledger, LedgerReport, check

__all__ = ["FakeClock", "Ledger", "LedgerReport", "TestKit", "check"]
