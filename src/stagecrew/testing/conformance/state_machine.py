"""Random sequences of store operations against a reference model: the state-machine test.

The model is a few lines of plain Python per operation: the job's state,
attempt, claims (the fencing token), losses, snoozes, lease and cancel request,
and which queues are paused. After
every step each stored job must agree with it, and every state change the
store made must be one that `transitions.ALLOWED` lists.

`StateMachineConformance` runs it against the store of a `backend_factory`
fixture, a fresh store per example; `run_state_machine(factory)` runs it alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from ... import transitions
from ...backends.base import Ack, AckKind, JobFilter, RescueReport
from ...clock import FakeClock
from ...job import FINAL_STATES, WAITING_STATES, AttemptError, ErrorKind, JobRef, JobState, NewJob
from ...serialization import encode_payload
from .helpers import BackendFactory

__all__ = ["BackendMachine", "StateMachineConformance", "machine_settings", "run_state_machine"]

S = JobState

QUEUES = ("a", "b")
WORKERS = ("w1", "w2")
# Advances are whole seconds and leases and delays end in a fraction, so no
# lease ever expires exactly "now": the model does not depend on that edge.
LEASE = 10.25
UNKNOWN_ID = 1_000_000

Held = tuple[JobRef, str]  # one claim and the worker that made it


@dataclass
class ModelJob:
    queue: str
    priority: int
    run_at: float
    max_attempts: int
    state: JobState
    attempt: int = 0
    claims: int = 0
    lost: int = 0
    snoozes: int = 0
    owner: str | None = None
    lease_until: float | None = None
    cancel_requested: bool = False

    def holds(self, ref: JobRef) -> bool:
        return self.state is S.RUNNING and self.claims == ref.token

    def leave_running(self, state: JobState) -> None:
        self.state = state
        self.owner = None
        self.lease_until = None


class BackendMachine(RuleBasedStateMachine):
    held = Bundle("held")
    make_backend: BackendFactory
    """Set by a subclass per engine."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.backend = self.make_backend(self.clock)
        self.model: dict[int, ModelJob] = {}
        self.seen: dict[int, JobState] = {}
        self.claims: list[Held] = []
        self.paused: set[str] = set()

    def teardown(self) -> None:
        self.backend.close()

    def error(self, ref: JobRef, message: str) -> AttemptError:
        job = self.model.get(ref.id)
        attempt = job.attempt if job is not None else 0
        return AttemptError(attempt, self.clock.now(), ErrorKind.ERROR, "Boom", message)

    # Rules whose precondition finds nothing to act on are skipped, so steps
    # go to operations that change something; each still meets stale refs.
    def has(self, states: frozenset[JobState]) -> bool:
        return any(job.state in states for job in self.model.values())

    # -- producer ------------------------------------------------------------
    new_jobs = st.lists(
        st.tuples(
            st.sampled_from(QUEUES),
            st.integers(0, 2),
            st.sampled_from([0.0, 2.5, 12.5]),
            st.integers(1, 3),
        ),
        min_size=1,
        max_size=4,
    )

    @initialize(jobs=new_jobs)
    def start_with_jobs(self, jobs: list[tuple[str, int, float, int]]) -> None:
        self.enqueue(jobs)

    @rule(jobs=new_jobs)
    def enqueue(self, jobs: list[tuple[str, int, float, int]]) -> None:
        payload = encode_payload([], {})
        batch = [
            NewJob("machine.task", payload, queue=q, priority=p, delay=d, max_attempts=m)
            for q, p, d, m in jobs
        ]
        entries = self.backend.enqueue(batch)
        assert all(e.created for e in entries)
        now = self.clock.now()
        for entry, (queue, priority, delay, max_attempts) in zip(entries, jobs, strict=True):
            assert entry.id not in self.model
            run_at = now + delay
            self.model[entry.id] = ModelJob(
                queue, priority, run_at, max_attempts, transitions.initial_state(run_at, now)
            )

    # -- worker --------------------------------------------------------------
    @precondition(lambda self: self.has(WAITING_STATES))
    @rule(
        target=held,
        worker=st.sampled_from(WORKERS),
        limit=st.integers(1, 3),
        queues=st.sampled_from([("a",), ("b",), QUEUES]),
    )
    def claim(self, worker: str, limit: int, queues: tuple[str, ...]) -> object:
        now = self.clock.now()
        due = sorted(
            (
                (job.priority, job.run_at, job_id)
                for job_id, job in self.model.items()
                if job.state in WAITING_STATES
                and job.queue in queues
                and job.queue not in self.paused
                and job.run_at <= now
            )
        )[:limit]
        claimed = self.backend.claim(queues, worker, limit, LEASE)
        assert sorted(c.id for c in claimed) == sorted(job_id for *_, job_id in due)
        for c in claimed:
            job = self.model[c.id]
            job.state = S.RUNNING
            job.attempt += 1
            job.claims += 1
            job.owner = worker
            job.lease_until = now + LEASE
            assert (c.attempt, c.token) == (job.attempt, job.claims)
        self.claims.extend((c.ref, worker) for c in claimed)
        return multiple(*[(c.ref, worker) for c in claimed])

    def expected_ack(self, ack: Ack) -> bool:
        job = self.model.get(ack.ref.id)
        if job is None or not job.holds(ack.ref):
            return False
        target = {
            AckKind.COMPLETE: S.SUCCEEDED,
            AckKind.RETRY: S.SCHEDULED,
            AckKind.DEAD_LETTER: S.DEAD,
            AckKind.CANCEL: S.CANCELLED,
            AckKind.RELEASE: S.AVAILABLE,
            AckKind.SNOOZE: S.SCHEDULED,
        }[ack.kind]
        if job.cancel_requested and target in (S.SCHEDULED, S.AVAILABLE):
            target = S.CANCELLED  # a pending cancel wins over going back to the queue
        if ack.kind in (AckKind.RETRY, AckKind.SNOOZE) and target is S.SCHEDULED:
            assert ack.delay is not None
            job.run_at = self.clock.now() + ack.delay
        if ack.kind in (AckKind.RELEASE, AckKind.SNOOZE):
            job.attempt -= 1  # given back, even when a pending cancel ends the job
        if ack.kind is AckKind.SNOOZE:
            job.snoozes += 1
        job.leave_running(target)
        return True

    def make_ack(self, ref: JobRef, outcome: str, retry_in: float) -> Ack:
        if outcome == "complete":
            return Ack(ref, AckKind.COMPLETE, result="1")
        if outcome == "release":
            return Ack(ref, AckKind.RELEASE)
        if outcome == "snooze":
            return Ack.snooze(ref, retry_in)
        if outcome == "cancel":
            return Ack(ref, AckKind.CANCEL, error=self.error(ref, "cancelled"))
        job = self.model.get(ref.id)
        max_attempts = job.max_attempts if job is not None else 1
        retryable = outcome == "fail"
        attempt = job.attempt if job is not None else 1
        if transitions.after_failure(attempt, max_attempts, retryable=retryable) is S.DEAD:
            return Ack(ref, AckKind.DEAD_LETTER, error=self.error(ref, "gave up"))
        return Ack(ref, AckKind.RETRY, error=self.error(ref, "again"), delay=retry_in)

    outcomes = st.sampled_from(["complete", "fail", "dead-letter", "cancel", "release", "snooze"])

    @rule(
        items=st.lists(
            st.tuples(held, outcomes), min_size=1, max_size=3, unique_by=lambda t: t[0][0].id
        ),
        retry_in=st.sampled_from([0.0, 3.5, 20.5]),
    )
    def ack(self, items: list[tuple[Held, str]], retry_in: float) -> None:
        self.check_acks([(ref, outcome) for (ref, _), outcome in items], retry_in)

    @precondition(lambda self: self.has(frozenset({S.RUNNING})))
    @rule(data=st.data(), retry_in=st.sampled_from([0.0, 3.5, 20.5]))
    def ack_a_running_attempt(self, data: st.DataObject, retry_in: float) -> None:
        running = sorted(i for i, job in self.model.items() if job.state is S.RUNNING)
        job_id = data.draw(st.sampled_from(running), label="job id")
        outcome = data.draw(self.outcomes, label="outcome")
        self.check_acks([(JobRef(job_id, self.model[job_id].claims), outcome)], retry_in)

    def superseded(self) -> list[JobRef]:
        """Claims whose job has since been claimed again (perhaps with the same attempt)."""
        return [
            ref
            for ref, _ in self.claims
            if (job := self.model.get(ref.id)) is not None
            and job.state is S.RUNNING
            and job.claims != ref.token
        ]

    @precondition(lambda self: bool(self.superseded()))
    @rule(data=st.data())
    def ack_a_superseded_attempt(self, data: st.DataObject) -> None:
        ref = data.draw(st.sampled_from(self.superseded()), label="stale ref")
        self.check_acks([(ref, data.draw(self.outcomes, label="outcome"))], 0.0)

    def check_acks(self, items: list[tuple[JobRef, str]], retry_in: float) -> None:
        acks = [self.make_ack(ref, outcome, retry_in) for ref, outcome in items]
        applied = self.backend.ack(acks)
        assert applied == [self.expected_ack(a) for a in acks]

    @rule(
        worker=st.sampled_from(WORKERS),
        refs=st.lists(held, max_size=3, unique_by=lambda h: h[0].id),
        stranger=st.booleans(),
    )
    def heartbeat(self, worker: str, refs: list[Held], stranger: bool) -> None:
        sent = [ref for ref, _ in refs]
        if stranger:
            sent.append(JobRef(UNKNOWN_ID, 1))
        self.check_heartbeat(worker, sent)

    @rule(claimed=held)
    def heartbeat_by_the_claiming_worker(self, claimed: Held) -> None:
        ref, worker = claimed
        self.check_heartbeat(worker, [ref])

    def check_heartbeat(self, worker: str, sent: list[JobRef]) -> None:
        reply = self.backend.heartbeat(worker, sent, LEASE)
        now = self.clock.now()
        lost: set[int] = set()
        cancel: set[int] = set()
        for ref in sent:
            job = self.model.get(ref.id)
            if job is None or not job.holds(ref) or job.owner != worker:
                lost.add(ref.id)
                continue
            job.lease_until = now + LEASE
            if job.cancel_requested:
                cancel.add(ref.id)
        assert reply.lost == lost
        assert reply.cancel_requested == cancel

    # -- maintenance and admin -----------------------------------------------
    @precondition(lambda self: self.has(frozenset({S.RUNNING})))
    @rule(max_lost=st.integers(1, 3), after=st.sampled_from([0.0, 11.0, 31.0]))
    def rescue(self, max_lost: int, after: float) -> None:
        now = self.clock.advance(after)
        counts = {S.AVAILABLE: 0, S.DEAD: 0, S.CANCELLED: 0}
        for job in self.model.values():
            if job.state is not S.RUNNING or job.lease_until is None or job.lease_until >= now:
                continue
            job.lost += 1
            target = transitions.after_lease_expired(
                job.attempt,
                job.max_attempts,
                job.lost,
                max_lost,
                cancel_requested=job.cancel_requested,
            )
            job.leave_running(target)
            counts[target] += 1
        report = self.backend.rescue(max_lost=max_lost)
        assert report == RescueReport(counts[S.AVAILABLE], counts[S.DEAD], counts[S.CANCELLED])

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from([*sorted(self.model), UNKNOWN_ID]), label="job id")
        if job_id == UNKNOWN_ID:
            assert self.backend.cancel(job_id) is None
            return
        job = self.model[job_id]
        target = transitions.on_cancel(job.state)
        if target is not None:
            job.state = target
        elif job.state is S.RUNNING:
            job.cancel_requested = True
        returned = self.backend.cancel(job_id)
        assert returned is not None
        assert returned.state is job.state

    @precondition(lambda self: self.has(transitions.REQUEUEABLE))
    @rule(queue=st.sampled_from([None, *QUEUES]))
    def requeue(self, queue: str | None) -> None:
        now = self.clock.now()
        count = 0
        for job in self.model.values():
            if job.state in transitions.REQUEUEABLE and queue in (None, job.queue):
                job.state = S.AVAILABLE
                job.attempt = 0
                job.lost = 0
                job.snoozes = 0
                job.cancel_requested = False
                job.run_at = now
                count += 1
        job_filter = JobFilter() if queue is None else JobFilter(queues=frozenset({queue}))
        assert self.backend.requeue(job_filter) == count

    @precondition(lambda self: self.has(FINAL_STATES))
    @rule()
    def purge(self) -> None:
        doomed = [i for i, job in self.model.items() if job.state in FINAL_STATES]
        assert self.backend.purge(JobFilter()) == len(doomed)
        for job_id in doomed:
            del self.model[job_id]
            self.seen.pop(job_id, None)

    @rule(queue=st.sampled_from(QUEUES))
    def pause_queue(self, queue: str) -> None:
        assert self.backend.pause_queue(queue) is (queue not in self.paused)
        self.paused.add(queue)

    @precondition(lambda self: bool(self.paused))
    @rule(queue=st.sampled_from(QUEUES))
    def resume_queue(self, queue: str) -> None:
        assert self.backend.resume_queue(queue) is (queue in self.paused)
        self.paused.discard(queue)

    @rule(seconds=st.sampled_from([1.0, 5.0, 11.0, 31.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    # -- what must hold after every step ---------------------------------------
    @invariant()
    def every_job_matches_the_model(self) -> None:
        for job_id, expected in self.model.items():
            job = self.backend.get(job_id)
            assert job is not None, f"job {job_id} vanished"
            assert (job.state, job.attempt, job.claims, job.lost, job.snoozes) == (
                expected.state,
                expected.attempt,
                expected.claims,
                expected.lost,
                expected.snoozes,
            ), f"job {job_id}"
            if job.state is S.RUNNING:
                assert job.lease_owner == expected.owner
                assert job.cancel_requested == expected.cancel_requested
            else:
                assert job.lease_owner is None

    @invariant()
    def every_state_change_is_allowed(self) -> None:
        for job in self.backend.list_jobs(JobFilter()):
            before = self.seen.get(job.id)
            if before is not None and before is not job.state:
                assert job.state in transitions.ALLOWED[before], f"{before} -> {job.state}"
            self.seen[job.id] = job.state

    @invariant()
    def the_paused_queues_are_the_models(self) -> None:
        assert self.backend.paused_queues() == sorted(self.paused)

    @invariant()
    def stats_count_what_the_model_holds(self) -> None:
        stats = {s.queue: s for s in self.backend.stats()}
        assert {q for q, s in stats.items() if s.paused} == self.paused
        for queue in QUEUES:
            for state in JobState:
                expected = sum(
                    1 for j in self.model.values() if j.queue == queue and j.state is state
                )
                actual = stats[queue].count(state) if queue in stats else 0
                assert actual == expected, f"{queue}/{state}"


def machine_settings(max_examples: int = 100, steps: int = 40) -> settings:
    """Settings for `run_state_machine`: no deadline (servers vary), `steps` steps an example."""
    return settings(
        max_examples=max_examples,
        stateful_step_count=steps,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


def run_state_machine(
    factory: BackendFactory, *, name: str = "engine", settings: settings | None = None
) -> None:
    """Run the reference model against the engine `factory` makes; raises on a failure.

    `name` keys the failures hypothesis saves in its example database, so each
    engine replays its own first.
    """
    machine = type(
        f"StateMachine[{name}]", (BackendMachine,), {"make_backend": staticmethod(factory)}
    )
    run_state_machine_as_test(machine, settings=settings or machine_settings())


class StateMachineConformance:
    """The reference model, run against a fresh store of `backend_factory` per example."""

    @pytest.fixture
    def state_machine_examples(self) -> int:
        """How many random sequences run; a test class overrides it to size a slow store's run."""
        return 100

    def test_backend_follows_the_reference_model(
        self,
        backend_factory: BackendFactory,
        state_machine_examples: int,
        request: pytest.FixtureRequest,
    ) -> None:
        run_state_machine(
            backend_factory,
            name=request.node.nodeid,
            settings=machine_settings(max_examples=state_machine_examples),
        )
