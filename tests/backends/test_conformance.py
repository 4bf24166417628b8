"""The backend conformance suite, run unchanged against every engine in conftest.py."""

from __future__ import annotations

from stagecrew.testing.conformance import BackendConformance


class TestBackendConformance(BackendConformance):
    """Each test runs once per engine (`[memory]`, `[sqlite]`, ...)."""
