"""Several workers against one store, in every order: a model-based interleaving test.

The conformance suite checks each operation alone; this checks what only their
interleavings reveal. A hypothesis state machine drives simulated workers (plain
objects holding the claims they believe they hold) against a store on a
`FakeClock`, through the public `Backend` API only: producers enqueue; workers
claim, heartbeat, hand jobs back at shutdown (RELEASE) and send outcomes of every
kind, some of whose replies are lost so that the outcome is sent again later; a
worker's event loop stalls past its lease while the rescuer takes its jobs back
and resumes later; a worker process dies and its supervisor releases its jobs at
once (`release_worker`); a worker process frozen long ago wakes up and sends what
it had for any claim ever made; an operator retries the dead-letter queue, cancels,
prunes and purges.

The model keeps which claim currently holds each job. After every step:

- an outcome or a heartbeat took effect (the store answered True, or renewed the
  lease) exactly when the claim that sent it is the one holding the job; a stale
  claim is refused and changes nothing in the stored job;
- no job disappears, except finished jobs that prune or purge deleted;
- every stored job's state, attempt, losses, lease and cancel request match the
  model, and every change of state is one `transitions.ALLOWED` lists;
- an engine-specific check, when given, holds (the Redis engine's indexes, say).

A claim is told apart from every other claim of its job only by its
`ClaimedJob.ref`: that is the fence this test holds every engine to.

`InterleavingConformance` runs it against the store of a `backend_factory`
fixture; `run_interleavings(factory)` runs it alone::

    from stagecrew.testing.conformance.interleaving import run_interleavings

    def test_my_engine_fences_every_interleaving(tmp_path):
        run_interleavings(lambda clock: MyBackend(f"my://{tmp_path}", clock))

The factory is called once per example and must return a fresh, migrated, empty
store whose clock is the given `FakeClock` (see `conformance.BackendFactory`);
the machine closes it when the example ends. No step sleeps or reads the real
clock, so a failure replays exactly from the example hypothesis prints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from ... import transitions
from ...backends.base import ACK_TARGET, Ack, AckKind, Backend, JobFilter, RescueReport, Retention
from ...clock import FakeClock
from ...job import (
    FINAL_STATES,
    WAITING_STATES,
    AttemptError,
    ClaimedJob,
    ErrorKind,
    Job,
    JobRef,
    JobState,
    NewJob,
)
from ...serialization import encode, encode_payload
from .helpers import BackendFactory

__all__ = [
    "LEASE",
    "Claim",
    "ExpectedJob",
    "InterleavingConformance",
    "InterleavingMachine",
    "LayoutCheck",
    "SimulatedWorker",
    "interleaving_settings",
    "run_interleavings",
]

S = JobState

QUEUES = ("a", "b")
WORKERS = ("w1", "w2", "w3")
LEASE = 10.25
"""The lease every claim and heartbeat asks for.

The clock moves in whole seconds and leases, delays and retention horizons end in
a fraction, so no lease expires, no retry falls due and no job ages past its
retention exactly "now": the model never depends on how an engine breaks a tie.
"""
STALL_STEP = 6.0
"""A stall moves the clock twice by this much (past one lease, within the next)."""
RETRY_DELAYS = (0.0, 3.5, 20.5)
HORIZONS = (None, 0.5, 8.5, 30.5)
MAX_JOBS = 6
"""Enough jobs for workers to collide on, few enough to keep examples fast."""
RESULT = encode("done", what="result").decode()


# -- what the model keeps ----------------------------------------------------------------
@dataclass
class ExpectedJob:
    """What the store must hold for one job, according to the model."""

    queue: str
    priority: int
    run_at: float
    max_attempts: int
    state: JobState
    attempt: int = 0
    """The attempt users see: +1 per claim, -1 per RELEASE, 0 after a requeue."""
    claims: int = 0
    """How many times the job was claimed: never decreases, so it names one claim."""
    lost: int = 0
    owner: str | None = None
    lease_until: float | None = None
    cancel_requested: bool = False
    finished_at: float | None = None

    def held_by(self, claim: Claim) -> bool:
        """True while `claim` is the claim the job is running under."""
        return self.state is S.RUNNING and self.claims == claim.number

    def leave_running(self, state: JobState, now: float) -> None:
        self.state = state
        self.owner = None
        self.lease_until = None
        if state in FINAL_STATES:
            self.finished_at = now


@dataclass(frozen=True)
class Claim:
    """One claim of one job, as the worker that made it sees it."""

    job: ClaimedJob
    number: int
    """Which claim of the job this is (1 for its first), counted by the model."""
    worker: str

    @property
    def ref(self) -> JobRef:
        return self.job.ref

    def describe(self) -> str:
        return f"claim #{self.number} of job {self.job.id} (by {self.worker}, ref {self.ref})"


@dataclass(frozen=True)
class Outcome:
    """An outcome a worker sent, or will send, for one of its claims."""

    claim: Claim
    kind: AckKind
    error: AttemptError | None = None
    delay: float | None = None
    """How long a RETRY, a SNOOZE, or a RELEASE that is not a plain hand-back, waits: seconds
    from when the store writes it, by the store's clock."""

    def ack(self) -> Ack:
        result = RESULT if self.kind is AckKind.COMPLETE else None
        return Ack(self.claim.ref, self.kind, result=result, error=self.error, delay=self.delay)


@dataclass(frozen=True)
class ClaimCall:
    """One `Backend.claim` call of a simulated worker."""

    worker: str
    limit: int
    queues: tuple[str, ...]


@dataclass
class SimulatedWorker:
    """A worker as the store sees it: claims it believes it holds, and unconfirmed outcomes.

    An outcome whose reply never came (the request or the reply was lost) stays
    unconfirmed: the worker keeps heartbeating its claim and sends it again, as
    the completer does, until a reply comes or a heartbeat reports the lease lost
    (then it drops the outcome, as `Completer.drop` does).
    """

    name: str
    claims: list[Claim] = field(default_factory=list)
    unconfirmed: list[Outcome] = field(default_factory=list)
    stalled: bool = False
    """Its event loop is blocked: it claims and sends nothing until it resumes."""

    def in_flight(self) -> list[Claim]:
        return [*self.claims, *(o.claim for o in self.unconfirmed)]

    def forget(self, claim: Claim) -> None:
        """Abandon a claim whose lease was lost, and drop its outcome still waiting."""
        self.claims = [c for c in self.claims if c is not claim]
        self.unconfirmed = [o for o in self.unconfirmed if o.claim is not claim]


LayoutCheck = Callable[[Backend, Mapping[int, ExpectedJob], Mapping[int, ExpectedJob]], None]
"""An engine's own consistency check, run after every step.

Called with the store, the jobs the model holds (by id) and the jobs prune or
purge deleted (by id, as they were last). It raises AssertionError on a mismatch.
"""


def by_job(claims: Iterable[Claim]) -> list[list[Claim]]:
    """Split claims into groups in which each job appears at most once, keeping order."""
    groups: list[list[Claim]] = []
    for claim in claims:
        for group in groups:
            if all(c.job.id != claim.job.id for c in group):
                group.append(claim)
                break
        else:
            groups.append([claim])
    return groups


# -- the machine -------------------------------------------------------------------------
class InterleavingMachine(RuleBasedStateMachine):
    """The state machine; `run_interleavings` runs it against one engine."""

    make_backend: BackendFactory
    """Set by a subclass (see `run_interleavings`)."""
    layout_checks: tuple[LayoutCheck, ...] = ()
    """Engine-specific checks run after every step (a tuple, so they stay plain functions)."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.backend = self.make_backend(self.clock)
        self.model: dict[int, ExpectedJob] = {}
        self.removed: dict[int, ExpectedJob] = {}
        self.seen: dict[int, JobState] = {}
        self.workers = {name: SimulatedWorker(name) for name in WORKERS}
        self.every_claim: list[Claim] = []

    def teardown(self) -> None:
        self.backend.close()

    # -- helpers -----------------------------------------------------------------------
    def holding(self, claim: Claim) -> bool:
        job = self.model.get(claim.job.id)
        return job is not None and job.held_by(claim) and job.owner == claim.worker

    def workers_with(self, what: Callable[[SimulatedWorker], Sequence[object]]) -> list[str]:
        """Workers that are not stalled and have `what` (claims, say)."""
        return [name for name, w in self.workers.items() if not w.stalled and what(w)]

    def stalled(self) -> list[str]:
        return [name for name, worker in self.workers.items() if worker.stalled]

    def nth(
        self, busy: int, what: Callable[[SimulatedWorker], Sequence[object]]
    ) -> SimulatedWorker:
        names = self.workers_with(what)
        return self.workers[names[busy % len(names)]]

    def has(self, states: frozenset[JobState]) -> bool:
        return any(job.state in states for job in self.model.values())

    def snapshots(self, job_ids: Iterable[int]) -> dict[int, Job | None]:
        return {job_id: self.backend.get(job_id) for job_id in job_ids}

    def assert_unchanged(self, before: dict[int, Job | None], what: str) -> None:
        for job_id, job in before.items():
            assert self.backend.get(job_id) == job, f"{what} changed job {job_id}"

    def error(self, claim: Claim, kind: ErrorKind, message: str) -> AttemptError:
        return AttemptError(claim.job.attempt, self.clock.now(), kind, "Boom", message)

    # -- producer ----------------------------------------------------------------------
    new_jobs = st.lists(
        st.tuples(
            st.sampled_from(QUEUES),
            st.integers(0, 1),
            st.sampled_from([0.0, 2.5]),
            st.integers(1, 3),
        ),
        min_size=1,
        max_size=3,
    )

    @initialize(jobs=new_jobs)
    def start_with_jobs(self, jobs: list[tuple[str, int, float, int]]) -> None:
        self.enqueue(jobs)

    @precondition(lambda self: len(self.model) < MAX_JOBS)
    @rule(jobs=new_jobs)
    def enqueue(self, jobs: list[tuple[str, int, float, int]]) -> None:
        payload = encode_payload([], {})
        entries = self.backend.enqueue(
            [
                NewJob("interleaving.task", payload, queue=q, priority=p, delay=d, max_attempts=m)
                for q, p, d, m in jobs
            ]
        )
        now = self.clock.now()
        for entry, (queue, priority, delay, max_attempts) in zip(entries, jobs, strict=True):
            assert entry.created
            assert entry.id not in self.model and entry.id not in self.removed
            run_at = now + delay
            self.model[entry.id] = ExpectedJob(
                queue, priority, run_at, max_attempts, transitions.initial_state(run_at, now)
            )

    # -- workers -----------------------------------------------------------------------
    # `claim` takes its arguments as one value so that it sorts right after
    # `dlq_retry` (see the operator's rules): claims are what collide.
    @precondition(lambda self: self.has(WAITING_STATES))
    @rule(
        call=st.builds(
            ClaimCall,
            worker=st.sampled_from(WORKERS),
            limit=st.integers(1, 3),
            queues=st.sampled_from([QUEUES, ("a",), ("b",)]),
        )
    )
    def claim(self, call: ClaimCall) -> None:
        worker, limit, queues = call.worker, call.limit, call.queues
        if self.workers[worker].stalled:
            return  # its event loop is blocked: it claims nothing
        now = self.clock.now()
        due = {
            job_id: job
            for job_id, job in self.model.items()
            if job.queue in queues
            and (job.state is S.AVAILABLE or (job.state is S.SCHEDULED and job.run_at <= now))
        }
        claimed = self.backend.claim(queues, worker, limit, LEASE)
        ids = [c.id for c in claimed]
        assert len(set(ids)) == len(ids), f"one claim claimed a job twice: {ids}"
        assert set(ids) <= set(due), f"claimed jobs that are not due: {set(ids) - set(due)}"
        assert len(ids) == min(limit, len(due)), f"claimed {ids} of the due {sorted(due)}"
        if ids:
            passed_over = [job.priority for job_id, job in due.items() if job_id not in ids]
            assert min(passed_over, default=2) >= max(due[i].priority for i in ids)
        made = []
        for c in claimed:
            job = self.model[c.id]
            job.state = S.RUNNING
            job.attempt += 1
            job.claims += 1
            job.owner = worker
            job.lease_until = now + LEASE
            assert c.attempt == job.attempt, f"job {c.id} claimed as attempt {c.attempt}"
            made.append(Claim(c, job.claims, worker))
        self.workers[worker].claims.extend(made)
        self.every_claim.extend(made)

    def send_heartbeat(self, worker: SimulatedWorker) -> None:
        """Renew every lease the worker believes it holds; abandon the ones reported lost."""
        for group in by_job(worker.in_flight()):
            for claim in self.check_heartbeat(worker.name, group):
                worker.forget(claim)

    def check_heartbeat(self, worker: str, group: list[Claim]) -> list[Claim]:
        """One heartbeat (each job at most once); returns the claims it reported lost."""
        now = self.clock.now()
        held = [c for c in group if self.holding(c)]
        stale = [c for c in group if c not in held]
        before = self.snapshots(c.job.id for c in stale)
        reply = self.backend.heartbeat(worker, [c.ref for c in group], LEASE)
        for claim in stale:
            assert claim.job.id in reply.lost, (
                f"a heartbeat of stale {claim.describe()} renewed the lease of the "
                f"claim that holds the job"
            )
        for claim in held:
            assert claim.job.id not in reply.lost, f"heartbeat of {claim.describe()} refused"
        assert reply.lost <= {c.job.id for c in group}, f"lost jobs never sent: {reply.lost}"
        self.assert_unchanged(before, "a refused heartbeat")
        if stale:
            event("heartbeat of a stale claim refused")
        cancel = set()
        for claim in held:
            job = self.model[claim.job.id]
            job.lease_until = now + LEASE
            if job.cancel_requested:
                cancel.add(claim.job.id)
        assert reply.cancel_requested == cancel
        return stale

    # A rule that acts for one worker draws `busy`: which of the workers with
    # something to do (in name order, modulo their number) acts. A plain integer
    # shrinks well, unlike a value drawn from a list that changes step by step.
    # A stalled worker does nothing until `stalled_worker_resumes` picks it.
    @precondition(lambda self: self.workers_with(SimulatedWorker.in_flight))
    @rule(busy=st.integers(0, len(WORKERS) - 1))
    def heartbeat(self, busy: int) -> None:
        self.send_heartbeat(self.nth(busy, SimulatedWorker.in_flight))

    def outcome(self, claim: Claim, kind: str, delay: float) -> Outcome:
        if kind == "complete":
            return Outcome(claim, AckKind.COMPLETE)
        if kind == "release":
            return Outcome(claim, AckKind.RELEASE)
        if kind == "release later":  # an unknown task is left for another worker, say
            return Outcome(claim, AckKind.RELEASE, delay=delay)
        if kind == "snooze":  # the task is not ready yet: later, its attempt given back
            return Outcome(claim, AckKind.SNOOZE, delay=delay)
        if kind == "cancel":
            error = self.error(claim, ErrorKind.CANCELLED, "cancelled at a checkpoint")
            return Outcome(claim, AckKind.CANCEL, error)
        job = claim.job
        retryable = kind == "fail"
        if transitions.after_failure(job.attempt, job.max_attempts, retryable=retryable) is S.DEAD:
            return Outcome(
                claim, AckKind.DEAD_LETTER, self.error(claim, ErrorKind.ERROR, "gave up")
            )
        error = self.error(claim, ErrorKind.ERROR, "try again")
        return Outcome(claim, AckKind.RETRY, error, delay)

    def send(self, outcomes: list[Outcome]) -> None:
        """One ack batch (each job at most once); checks which outcomes the fence let through."""
        now = self.clock.now()
        expected = [self.holding(o.claim) for o in outcomes]
        refused = [o.claim.job.id for o, ok in zip(outcomes, expected, strict=True) if not ok]
        before = self.snapshots(refused)
        applied = self.backend.ack([o.ack() for o in outcomes])
        for o, ok, got in zip(outcomes, expected, applied, strict=True):
            if ok:
                assert got, f"{o.kind} of {o.claim.describe()}, which holds the job, refused"
            else:
                holder = self.model.get(o.claim.job.id)
                assert not got, (
                    f"{o.kind} of stale {o.claim.describe()} was applied; the job is "
                    + (
                        "gone"
                        if holder is None
                        else f"{holder.state}, last claimed by claim #{holder.claims}"
                    )
                )
        self.assert_unchanged(before, "a refused outcome")
        for o, ok in zip(outcomes, expected, strict=True):
            event(f"{o.kind} {'applied' if ok else 'refused'}")  # --hypothesis-show-statistics
        for o, ok in zip(outcomes, expected, strict=True):
            if ok:
                self.apply(o, now)

    def apply(self, outcome: Outcome, now: float) -> None:
        job = self.model[outcome.claim.job.id]
        kind = outcome.kind
        if kind is AckKind.RELEASE and outcome.delay is not None:
            target = S.SCHEDULED  # handed back to run later: scheduled, not available
        else:
            target = ACK_TARGET[kind]
        target = transitions.after_ack(target, cancel_requested=job.cancel_requested)
        if target is S.SCHEDULED:
            job.run_at = now + (outcome.delay or 0.0)
        if kind is AckKind.RELEASE or kind is AckKind.SNOOZE:
            job.attempt -= 1
        job.leave_running(target, now)

    outcome_kinds = st.sampled_from(
        ["complete", "fail", "dead-letter", "cancel", "release", "release later", "snooze"]
    )

    @precondition(lambda self: self.workers_with(lambda w: w.claims))
    @rule(
        busy=st.integers(0, len(WORKERS) - 1),
        items=st.lists(st.tuples(st.integers(0, 3), outcome_kinds), min_size=1, max_size=3),
        delivery=st.sampled_from(["delivered", "reply lost", "request lost"]),
        delay=st.sampled_from(RETRY_DELAYS),
    )
    def finish(self, busy: int, items: list[tuple[int, str]], delivery: str, delay: float) -> None:
        """A worker's completer sends outcomes of its claims in one batch."""
        self.complete(self.nth(busy, lambda w: w.claims), items, delivery, delay)

    def complete(
        self, sim: SimulatedWorker, items: list[tuple[int, str]], delivery: str, delay: float
    ) -> None:
        """`items` pairs a position in the worker's claims (modulo their number) with an
        outcome; a second outcome for the same job waits for another batch."""
        outcomes: list[Outcome] = []
        for position, kind in items:
            claim = sim.claims[position % len(sim.claims)]
            if all(o.claim.job.id != claim.job.id for o in outcomes):
                outcomes.append(self.outcome(claim, kind, delay))
        sim.claims = [c for c in sim.claims if all(o.claim is not c for o in outcomes)]
        if delivery != "request lost":
            self.send(outcomes)
        if delivery != "delivered":
            sim.unconfirmed.extend(outcomes)

    @precondition(lambda self: self.workers_with(lambda w: w.unconfirmed))
    @rule(busy=st.integers(0, len(WORKERS) - 1))
    def send_again(self, busy: int) -> None:
        """The completer sends outcomes whose reply never came once more; this time it comes."""
        sim = self.nth(busy, lambda w: w.unconfirmed)
        [first, *_] = by_job(o.claim for o in sim.unconfirmed)
        outcomes = [o for o in sim.unconfirmed if o.claim in first]
        sim.unconfirmed = [o for o in sim.unconfirmed if o not in outcomes]
        self.send(outcomes)

    @precondition(lambda self: self.every_claim)
    @rule(
        which=st.integers(0, 4 * MAX_JOBS),
        action=st.sampled_from(
            ["heartbeat", "complete", "fail", "dead-letter", "cancel", "release", "release later"]
        ),
        delay=st.sampled_from(RETRY_DELAYS),
    )
    def a_frozen_worker_wakes_up(self, which: int, action: str, delay: float) -> None:
        """A worker process frozen long ago (SIGSTOP, a paused VM, a swap storm) resumes
        and sends what it had for one of its claims: a heartbeat or the claim's outcome.

        Any claim ever made may be it (`which`, counted from the first claim, modulo
        their number), stale or not: the store alone must tell.
        """
        claim = self.every_claim[which % len(self.every_claim)]
        if action == "heartbeat":
            self.check_heartbeat(claim.worker, [claim])
        else:
            self.send([self.outcome(claim, action, delay)])

    # -- the rescuer and time ----------------------------------------------------------
    def settle_lost(self, lost_jobs: list[ExpectedJob], max_lost: int) -> RescueReport:
        """What the store must do with running jobs whose worker is lost, as the model does it."""
        now = self.clock.now()
        counts = {S.AVAILABLE: 0, S.DEAD: 0, S.CANCELLED: 0}
        for job in lost_jobs:
            job.lost += 1
            target = transitions.after_lease_expired(
                job.attempt,
                job.max_attempts,
                job.lost,
                max_lost,
                cancel_requested=job.cancel_requested,
            )
            job.leave_running(target, now)
            counts[target] += 1
        return RescueReport(counts[S.AVAILABLE], counts[S.DEAD], counts[S.CANCELLED])

    def run_rescue(self, max_lost: int) -> None:
        now = self.clock.now()
        expired = [
            job
            for job in self.model.values()
            if job.state is S.RUNNING and job.lease_until is not None and job.lease_until < now
        ]
        expected = self.settle_lost(expired, max_lost)
        assert self.backend.rescue(max_lost=max_lost) == expected

    @precondition(lambda self: self.workers_with(lambda w: w.claims))
    @rule(busy=st.integers(0, len(WORKERS) - 1), max_lost=st.integers(1, 3))
    def stall_past_the_lease_then_rescue(self, busy: int, max_lost: int) -> None:
        """A worker's event loop blocks past its lease while the others keep heartbeating.

        It stays blocked, claiming and sending nothing, until it resumes: by then its
        jobs may have been rescued, requeued and claimed by others.
        """
        self.nth(busy, lambda w: w.claims).stalled = True
        for _ in range(2):
            self.clock.advance(STALL_STEP)
            for other in self.workers.values():
                if not other.stalled and other.in_flight():
                    self.send_heartbeat(other)
        self.run_rescue(max_lost)

    @precondition(lambda self: self.stalled())
    @rule(
        busy=st.integers(0, len(WORKERS) - 1),
        items=st.lists(st.tuples(st.integers(0, 3), outcome_kinds), min_size=1, max_size=3),
        delivery=st.sampled_from(["delivered", "reply lost", "request lost"]),
        delay=st.sampled_from(RETRY_DELAYS),
    )
    def stalled_worker_resumes(
        self, busy: int, items: list[tuple[int, str]], delivery: str, delay: float
    ) -> None:
        """The task that blocked the loop returns: its outcome goes out before any heartbeat."""
        names = self.stalled()
        sim = self.workers[names[busy % len(names)]]
        sim.stalled = False
        if sim.claims:
            self.complete(sim, items, delivery, delay)

    @precondition(lambda self: any(w.in_flight() for w in self.workers.values()))
    @rule(busy=st.integers(0, len(WORKERS) - 1), max_lost=st.integers(1, 3))
    def a_worker_dies_and_its_supervisor_releases_its_jobs(self, busy: int, max_lost: int) -> None:
        """A worker process is killed; its supervisor settles its claims at once, leases unexpired.

        The supervisor's next worker takes the same name here (a harder case than the
        fresh id a real supervisor gives it): only the fencing token tells its claims
        from the dead one's, which `a_frozen_worker_wakes_up` may still send.
        """
        names = [name for name, w in self.workers.items() if w.in_flight()]
        name = names[busy % len(names)]
        held = [job for job in self.model.values() if job.state is S.RUNNING and job.owner == name]
        expected = self.settle_lost(held, max_lost)
        assert self.backend.release_worker(name, max_lost) == expected
        self.workers[name] = SimulatedWorker(name)

    @rule(
        seconds=st.sampled_from([1.0, 5.0, 11.0]),
        rescue_with_max_lost=st.sampled_from([1, 2, 3, None]),
    )
    def time_passes(self, seconds: float, rescue_with_max_lost: int | None) -> None:
        """The clock moves; then the rescuer runs, unless it does not get to run this time."""
        self.clock.advance(seconds)
        if rescue_with_max_lost is not None:
            self.run_rescue(rescue_with_max_lost)

    # -- the operator ------------------------------------------------------------------
    # When hypothesis retries drawing a rule (the one it drew has a false
    # precondition, or is disabled in this example), it favours the rule it sorts
    # first: the one with the fewest arguments. That is `dlq_retry`, on purpose:
    # dead jobs get retried soon, while claims of their last attempt are about.
    # The other commands share one rule, so no single one of them runs too often
    # (a cancel every third step would leave the workers nothing to claim).
    @precondition(lambda self: self.has(transitions.REQUEUEABLE))
    @rule()
    def dlq_retry(self) -> None:
        """`stagecrew dlq requeue --all`."""
        self.requeue(None)

    @precondition(lambda self: bool(self.model))
    @rule(
        command=st.sampled_from(["dlq requeue", "cancel", "purge"]),
        job_id=st.integers(1, MAX_JOBS + 1),
        queue=st.sampled_from([None, *QUEUES]),
    )
    def operator_runs(self, command: str, job_id: int, queue: str | None) -> None:
        """`stagecrew dlq requeue [--queue]`, `stagecrew cancel <id>` or a purge of
        finished jobs (of one queue, or all)."""
        if command == "dlq requeue":
            self.requeue(queue)
        elif command == "cancel":
            self.cancel(job_id)
        else:
            self.purge(queue)

    def cancel(self, job_id: int) -> None:
        """Cancel by id (engines number jobs from 1); an id no job has returns None."""
        if job_id not in self.model:
            assert self.backend.cancel(job_id) is None
            return
        job = self.model[job_id]
        target = transitions.on_cancel(job.state)
        if target is not None:
            job.leave_running(target, self.clock.now())
        elif job.state is S.RUNNING:
            job.cancel_requested = True
        returned = self.backend.cancel(job_id)
        assert returned is not None
        assert returned.state is job.state

    def requeue(self, queue: str | None) -> None:
        """`dlq requeue`: dead and cancelled jobs start again from attempt 0."""
        now = self.clock.now()
        count = 0
        for job in self.model.values():
            if job.state in transitions.REQUEUEABLE and queue in (None, job.queue):
                job.state = S.AVAILABLE
                job.attempt = 0
                job.lost = 0
                job.cancel_requested = False
                job.run_at = now
                job.finished_at = None
                count += 1
        job_filter = JobFilter() if queue is None else JobFilter(queues=frozenset({queue}))
        assert self.backend.requeue(job_filter) == count

    def forget_deleted(self) -> set[int]:
        """Jobs the store no longer has, moved from the model to `removed`."""
        stored = {job.id for job in self.backend.list_jobs(JobFilter())}
        gone = set(self.model) - stored
        for job_id in gone:
            self.removed[job_id] = self.model.pop(job_id)
            self.seen.pop(job_id, None)
        return gone

    @precondition(lambda self: self.has(FINAL_STATES))
    @rule(
        succeeded=st.sampled_from(HORIZONS),
        cancelled=st.sampled_from(HORIZONS),
        dead=st.sampled_from([None, HORIZONS[-1]]),  # the dead-letter queue is kept
        limit=st.sampled_from([1, 2, 1000]),
    )
    def prune(
        self, succeeded: float | None, cancelled: float | None, dead: float | None, limit: int
    ) -> None:
        retention = Retention(succeeded=succeeded, cancelled=cancelled, dead=dead)
        now = self.clock.now()
        doomed = set()
        for job_id, job in self.model.items():
            horizon = retention.horizon(job.state)
            finished = job.finished_at
            if horizon is not None and finished is not None and finished < now - horizon:
                doomed.add(job_id)
        deleted = self.backend.prune(retention, limit)
        assert deleted == min(limit, len(doomed)), f"pruned {deleted} of {sorted(doomed)}"
        gone = self.forget_deleted()
        assert gone <= doomed, f"prune deleted jobs it must keep: {sorted(gone - doomed)}"
        assert len(gone) == deleted
        event(f"prune deleted {min(deleted, 2)}{'+' if deleted > 1 else ''} jobs")

    def purge(self, queue: str | None) -> None:
        doomed = {
            job_id
            for job_id, job in self.model.items()
            if job.state in FINAL_STATES and queue in (None, job.queue)
        }
        job_filter = JobFilter() if queue is None else JobFilter(queues=frozenset({queue}))
        assert self.backend.purge(job_filter) == len(doomed)
        assert self.forget_deleted() == doomed

    # -- what must hold after every step -------------------------------------------------
    @invariant()
    def every_job_is_stored_as_the_model_says(self) -> None:
        stored = {job.id: job for job in self.backend.list_jobs(JobFilter())}
        missing = sorted(set(self.model) - set(stored))
        assert not missing, f"jobs {missing} disappeared"
        unexpected = sorted(set(stored) - set(self.model))
        assert not unexpected, f"jobs {unexpected} are stored but were deleted or never enqueued"
        for job_id, expected in self.model.items():
            job = stored[job_id]
            assert (job.state, job.attempt, job.lost, job.claims) == (
                expected.state,
                expected.attempt,
                expected.lost,
                expected.claims,
            ), f"job {job_id}: (state, attempt, lost, claims)"
            if job.state is S.RUNNING:
                assert job.lease_owner == expected.owner, f"job {job_id}: lease owner"
                assert job.cancel_requested == expected.cancel_requested, f"job {job_id}"
                assert expected.lease_until is not None and job.lease_expires_at is not None
                assert abs(job.lease_expires_at - expected.lease_until) < 1e-3, (
                    f"job {job_id}: lease expires at {job.lease_expires_at}, "
                    f"expected {expected.lease_until}"
                )
            else:
                assert job.lease_owner is None, f"job {job_id}: {job.state} with a lease owner"
            before = self.seen.get(job_id)
            if before is not None and before is not job.state:
                assert job.state in transitions.ALLOWED[before], f"{before} -> {job.state}"
            self.seen[job_id] = job.state

    @invariant()
    def the_engine_layout_is_consistent(self) -> None:
        for check in self.layout_checks:
            check(self.backend, self.model, self.removed)


def interleaving_settings(max_examples: int = 100, steps: int = 50) -> settings:
    """Settings for `run_interleavings`: no deadline (servers vary), `steps` steps an example.

    The explain phase is left out: it traces every line of every replay, which
    costs minutes on a failure and adds nothing the failing example does not show.
    """
    return settings(
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
        max_examples=max_examples,
        stateful_step_count=steps,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def run_interleavings(
    factory: BackendFactory,
    *,
    name: str = "engine",
    check_layout: LayoutCheck | None = None,
    settings: settings | None = None,
) -> None:
    """Run the interleaving machine against the engine `factory` makes; raises on a failure.

    `name` keys the failures hypothesis saves in its example database, so each
    engine replays its own first.
    """
    machine = type(
        f"Interleavings[{name}]",
        (InterleavingMachine,),
        {
            "make_backend": staticmethod(factory),
            "layout_checks": () if check_layout is None else (check_layout,),
        },
    )
    run_state_machine_as_test(machine, settings=settings or interleaving_settings())


class InterleavingConformance:
    """The interleaving model, run against a fresh store of `backend_factory` per example."""

    @pytest.fixture
    def interleaving_examples(self) -> int:
        """How many interleavings run; a test class overrides it to size a slow store's run."""
        return 100

    @pytest.fixture
    def interleaving_layout_check(self) -> LayoutCheck | None:
        """An engine's own check of its structures after every step; none by default."""
        return None

    def test_only_the_claim_holding_a_job_changes_it_under_any_interleaving(
        self,
        backend_factory: BackendFactory,
        interleaving_examples: int,
        interleaving_layout_check: LayoutCheck | None,
        request: pytest.FixtureRequest,
    ) -> None:
        """Stale claims (stalled, rescued, handed back, requeued, re-sent) are always refused."""
        run_interleavings(
            backend_factory,
            name=request.node.nodeid,
            check_layout=interleaving_layout_check,
            settings=interleaving_settings(max_examples=interleaving_examples),
        )
