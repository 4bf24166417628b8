"""Circuit breakers: the state machine, and a worker that holds jobs behind an open circuit
(memory engine, fake clock). Worker processes on real engines are
tests/integration/test_circuit_processes.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from stagecrew import App, Circuit, JobState
from stagecrew.errors import ConfigurationError
from stagecrew.limits.circuit import CLOSED, HALF_OPEN, OPEN, CircuitState, gate, record
from stagecrew.testing.kit import TestKit

BREAKER = Circuit("payments", failure_threshold=0.5, min_calls=4, window=60, cooldown=30, probes=2)


def test_a_closed_circuit_opens_when_enough_calls_fail_in_the_window() -> None:
    state = record(BREAKER, CircuitState(), 100.0, ok=1, failed=1)
    assert state.state == CLOSED  # 2 calls: below min_calls
    state = record(BREAKER, state, 101.0, failed=1)
    assert state.state == CLOSED  # 3 calls
    state = record(BREAKER, state, 102.0, ok=1)
    assert state.state == OPEN and state.until == 132.0  # 4 calls, 2 failed: 0.5
    assert gate(BREAKER, state, 120.0, 5).admitted == 0


def test_outcomes_older_than_the_window_no_longer_count() -> None:
    state = record(BREAKER, CircuitState(), 100.0, failed=3)
    state = record(BREAKER, state, 200.0, ok=1)  # the failures are 100 s old
    assert state.state == CLOSED
    assert state.counts(BREAKER, 200.0) == (1, 0)


def test_after_the_cooldown_probes_pass_and_enough_successes_close_it() -> None:
    opened = record(BREAKER, CircuitState(), 100.0, failed=4)
    assert gate(BREAKER, opened, 129.0, 3).admitted == 0
    probing = gate(BREAKER, opened, 130.0, 3)
    assert (probing.state.state, probing.admitted, probing.probes) == (HALF_OPEN, 2, True)
    assert gate(BREAKER, probing.state, 130.5, 3).admitted == 0  # both probes are out
    one = record(BREAKER, probing.state, 131.0, probes_ok=1)
    assert one.state == HALF_OPEN
    closed = record(BREAKER, one, 131.5, probes_ok=1)
    assert closed.state == CLOSED
    assert gate(BREAKER, closed, 132.0, 9).admitted == 9


def test_a_probe_failure_opens_it_again() -> None:
    probing = gate(BREAKER, record(BREAKER, CircuitState(), 100.0, failed=4), 130.0, 1)
    again = record(BREAKER, probing.state, 131.0, probes_failed=1)
    assert (again.state, again.until, again.opened) == (OPEN, 161.0, 2)


def test_probes_never_heard_of_are_written_off() -> None:
    probing = gate(BREAKER, record(BREAKER, CircuitState(), 100.0, failed=4), 130.0, 2)
    assert gate(BREAKER, probing.state, 140.0, 2).admitted == 0
    assert gate(BREAKER, probing.state, 130.0 + BREAKER.probe_timeout, 2).admitted == 2


def test_a_record_that_is_not_a_circuits_reads_as_closed() -> None:
    assert CircuitState.from_text('{"state": 3}') == CircuitState()
    opened = record(BREAKER, CircuitState(), 1.0, failed=4)
    assert CircuitState.from_text(opened.to_text()) == opened


@pytest.mark.parametrize(
    "bad",
    [
        dict(name=""),
        dict(name="x", failure_threshold=0),
        dict(name="x", failure_threshold=1.5),
        dict(name="x", min_calls=0),
        dict(name="x", probes=True),
        dict(name="x", window=float("inf")),
        dict(name="x", cooldown=-1),
        dict(failure_threshold=0.5),
        dict(name="x", colour="red"),
        42,
    ],
)
def test_a_circuit_that_cannot_work_is_refused_when_the_task_is_declared(bad: Any) -> None:
    app = App("memory://")
    with pytest.raises(ConfigurationError):

        @app.task(circuit=bad)
        def pay() -> None: ...


def test_tasks_naming_one_circuit_must_give_it_one_setting() -> None:
    app = App("memory://")

    @app.task(circuit=dict(name="api", min_calls=5))
    def one() -> None: ...

    with pytest.raises(ConfigurationError, match="different settings"):

        @app.task(circuit=dict(name="api", min_calls=6))
        def two() -> None: ...


@pytest.fixture
def app() -> App:
    return App("memory://")


@pytest.fixture
def kit(app: App) -> Iterator[TestKit]:
    with TestKit(app, concurrency=1) as kit:
        yield kit


class Remote:
    """A fake payments API: fails while `down`."""

    def __init__(self) -> None:
        self.down = True
        self.calls = 0

    def pay(self) -> None:
        self.calls += 1
        if self.down:
            raise ConnectionError("payments API down")


def test_a_failing_remote_opens_the_circuit_probes_recover_and_close_it(
    app: App, kit: TestKit
) -> None:
    remote = Remote()

    @app.task(circuit=BREAKER, max_attempts=10)
    def charge(i: int) -> None:
        remote.pay()

    @app.task(circuit=BREAKER, max_attempts=10)
    def refund(i: int) -> None:  # shares the circuit
        remote.pay()

    failing = charge.enqueue_many([(i,) for i in range(4)])
    kit.run_until_idle()  # four failures: the circuit opens
    [stored] = kit.backend.list_limits("circuit:")
    assert CircuitState.from_text(stored.value).state == OPEN
    waiting = refund.enqueue_many([(i,) for i in range(3)])
    calls = remote.calls
    kit.run_until_idle()
    assert remote.calls == calls  # nothing ran behind the open circuit
    held = [h.get() for h in waiting]
    assert {(j.state, j.attempt, j.errors) for j in held} == {(JobState.SCHEDULED, 0, ())}
    assert [j.run_at - kit.clock.now() for j in held] == pytest.approx([30.0] * 3)

    remote.down = False
    kit.clock.advance(30.0)
    kit.run_until_idle(advance_time=True)
    everything = [h.get() for h in [*failing, *waiting]]
    assert {j.state for j in everything} == {JobState.SUCCEEDED}
    assert {h.get().attempt for h in waiting} == {1}  # waiting on the circuit cost no attempt
    [stored] = kit.backend.list_limits("circuit:")
    assert CircuitState.from_text(stored.value).state == CLOSED


def test_a_failing_probe_keeps_it_open_and_the_jobs_waiting(app: App, kit: TestKit) -> None:
    remote = Remote()

    @app.task(circuit=BREAKER, max_attempts=10)
    def charge(i: int) -> None:
        remote.pay()

    charge.enqueue_many([(i,) for i in range(4)])
    kit.run_until_idle()
    kit.clock.advance(30.0)
    calls = remote.calls
    kit.run_until_idle()  # the probes run (and fail), the rest wait
    assert remote.calls - calls <= BREAKER.probes
    [stored] = kit.backend.list_limits("circuit:")
    state = CircuitState.from_text(stored.value)
    assert state.state == OPEN and state.opened == 2


def test_jobs_behind_a_circuit_removed_from_the_code_run_normally(app: App) -> None:
    remote = Remote()
    with TestKit(app, concurrency=1) as kit:

        @app.task(circuit=BREAKER, max_attempts=10)
        def charge(i: int) -> None:
            remote.pay()

        charge.enqueue_many([(i,) for i in range(4)])
        kit.run_until_idle()
        waiting = charge.enqueue_many([(i,) for i in range(3)])
        kit.run_until_idle()
        del app.tasks["charge"]
        remote.down = False

        @app.task(name="charge", max_attempts=10)
        def unguarded(i: int) -> None:
            remote.pay()

        kit.run_until_idle(advance_time=True)
        assert {h.get().state for h in waiting} == {JobState.SUCCEEDED}
