"""The backend conformance suite: the definition of a correct stagecrew engine.

Every engine (memory, SQLite, PostgreSQL, Redis, or a third party's) runs all
of it unchanged; an engine is done when it passes. To run it, subclass
`BackendConformance` in a test module and provide a `backend_factory` fixture:
a callable that takes a `FakeClock` and returns a fresh, migrated, empty store
that reads its time from that clock::

    import pytest
    from stagecrew.testing.conformance import BackendConformance, BackendFactory

    @pytest.fixture
    def backend_factory(tmp_path) -> BackendFactory:
        return lambda clock: MyBackend(f"my://{tmp_path}", clock)

    class TestMyBackend(BackendConformance):
        pass

Time only moves through `clock.advance(...)`; nothing here sleeps on the
store's behalf, except the `wait` tests, which measure real wake-ups. An
engine with `capabilities.server_clock` must pass the injected fake time to
its server, so due times and lease expiry follow the fake clock here too.

The suite is grouped into mixins, one module per area (`EnqueueConformance`
in `enqueue.py`, `ClaimConformance` in `claim.py`, ...), so a module can run
one group while an engine is being written. Two of them are model-based
(hypothesis): `StateMachineConformance` checks random sequences of operations
against a reference model, and `InterleavingConformance` several workers
interleaved in any order against the fence; a test class sizes their runs by
overriding the `state_machine_examples` and `interleaving_examples` fixtures.
See docs/engines.md.
"""

from __future__ import annotations

from .ack import AckConformance
from .admin import AdminConformance
from .aging import AgingConformance
from .asynchronous import AsyncConformance
from .cancel import CancelConformance
from .claim import ClaimConformance
from .concurrency import ConcurrencyConformance
from .enqueue import EnqueueConformance
from .fairness import FairnessConformance
from .fencing import FencingConformance
from .finished import FinishedWaitConformance
from .helpers import LEASE, BackendFactory
from .inspection import InspectionConformance
from .interleaving import InterleavingConformance
from .job_counts import JobCountConformance
from .lease import LeaseConformance
from .limit_states import LimitStateConformance
from .queue_control import QueueControlConformance
from .release_worker import ReleaseWorkerConformance
from .rescue import RescueConformance
from .schedules import ScheduleConformance
from .snooze import SnoozeConformance
from .state_machine import StateMachineConformance
from .steps import StepsConformance
from .uniqueness import UniquenessConformance
from .wait import WaitConformance
from .worker_registry import WorkerRegistryConformance
from .workflows import WorkflowConformance

__all__ = [
    "LEASE",
    "AckConformance",
    "AdminConformance",
    "AgingConformance",
    "AsyncConformance",
    "BackendConformance",
    "BackendFactory",
    "CancelConformance",
    "ClaimConformance",
    "ConcurrencyConformance",
    "EnqueueConformance",
    "FairnessConformance",
    "FencingConformance",
    "FinishedWaitConformance",
    "InspectionConformance",
    "InterleavingConformance",
    "JobCountConformance",
    "LeaseConformance",
    "LimitStateConformance",
    "QueueControlConformance",
    "ReleaseWorkerConformance",
    "RescueConformance",
    "ScheduleConformance",
    "SnoozeConformance",
    "StateMachineConformance",
    "StepsConformance",
    "UniquenessConformance",
    "WaitConformance",
    "WorkerRegistryConformance",
    "WorkflowConformance",
]


class BackendConformance(
    EnqueueConformance,
    ClaimConformance,
    ConcurrencyConformance,
    FairnessConformance,
    AgingConformance,
    LeaseConformance,
    AckConformance,
    FencingConformance,
    SnoozeConformance,
    QueueControlConformance,
    RescueConformance,
    ReleaseWorkerConformance,
    CancelConformance,
    AdminConformance,
    InspectionConformance,
    AsyncConformance,
    WaitConformance,
    FinishedWaitConformance,
    StateMachineConformance,
    InterleavingConformance,
    ScheduleConformance,
    StepsConformance,
    UniquenessConformance,
    WorkflowConformance,
    LimitStateConformance,
    WorkerRegistryConformance,
    JobCountConformance,
):
    """Every guarantee of the `Backend` contract; requires a `backend_factory` fixture."""
