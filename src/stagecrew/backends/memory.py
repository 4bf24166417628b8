"""The in-process engine (`memory://`): for tests and the test kit.

It follows `stagecrew.transitions` directly and is the reference the other
engines are compared with. Jobs live in this process only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import itertools
import threading
from collections.abc import Sequence
from typing import TypeVar

from .. import transitions
from ..clock import Clock
from ..errors import BackendError
from ..job import (
    FINAL_STATES,
    WAITING_STATES,
    ClaimedJob,
    EnqueuedJob,
    Job,
    JobRef,
    JobState,
    NewJob,
)
from .aging import aged_priority
from .base import (
    Ack,
    AckKind,
    Backend,
    Capabilities,
    HeartbeatReply,
    JobFilter,
    QueueStats,
    RescueReport,
    Retention,
)
from .caps import Candidate, ClaimLimits, Running, select_within_caps
from .fairness import STALE_AFTER, fair_order, heads_wanted, keys_wanted
from .job_counts import CountBucket, CountHistory, CountKey, bucket_start
from .limit_states import LimitState, LimitStates, LimitSwap, live, swap_holds
from .ops import Op, immediate, run
from .records import WORKER_LOST
from .schedules import (
    ScheduleFire,
    ScheduleFired,
    ScheduleRecord,
    cas_holds,
    jobs_of,
    refused,
)
from .steps import JobSteps, StoredValue, progress_from_store
from .worker_registry import WorkerBeat, WorkerRecord, WorkerRegistry, recorded
from .workflows import (
    ADVANCING,
    HELD_AT,
    Member,
    NewWorkflow,
    Verdict,
    Workflow,
    WorkflowStatus,
    decide,
)

T = TypeVar("T")

S = JobState


def matches(job: Job, f: JobFilter) -> bool:
    return (
        (not f.states or job.state in f.states)
        and (not f.queues or job.queue in f.queues)
        and (not f.tasks or job.task in f.tasks)
        and (not f.ids or job.id in f.ids)
        and (f.before_id is None or job.id < f.before_id)
        and (
            f.finished_before is None
            or (job.finished_at is not None and job.finished_at < f.finished_before)
        )
    )


class MemoryBackend(Backend):
    capabilities = Capabilities(cross_process=False, server_clock=False, instant_wakeup=True)

    def __init__(self, url: str = "memory://", clock: Clock | None = None) -> None:
        super().__init__(clock)
        self.url = url
        self._lock = threading.RLock()
        self._jobs: dict[int, Job] = {}
        self._keys: dict[str, int] = {}
        self._unique: dict[str, int] = {}
        """unique key -> the job that took it last; it holds it while in its unique states."""
        self._paused: set[str] = set()
        self._ids = itertools.count(1)
        self._version = 0
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self._finished = threading.Condition(self._lock)
        """Notified whenever a job becomes final or is deleted (the sync `wait_finished`)."""
        self._finish_waiters: dict[int, list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        """Per job id, the async `wait_finished` calls to wake when it is final or deleted."""
        self._schedules: dict[str, ScheduleRecord] = {}
        self._limits: dict[str, LimitState] = {}
        self._workers: dict[str, WorkerRecord] = {}
        self._counts: dict[tuple[float, CountKey], int] = {}
        self._order_at: dict[int, float] = {}
        """The order_at of waiting jobs whose order_at is not their run_at (fair-keyed jobs)."""
        self._fair_lasts: dict[tuple[str, str], float] = {}
        """Per (queue, fairness key), the order_at of the key's latest keyed job."""
        self._steps: dict[int, dict[str, StoredValue]] = {}
        """Per job that stored any, its steps' results by name, in the order stored."""
        self._states: dict[int, StoredValue] = {}
        """Per job that stored one, its checkpoint."""
        self._workflows: dict[str, Workflow] = {}
        """Workflow records, without their members (which are in `_jobs`)."""
        self._member_ids: dict[str, list[int]] = {}
        """Per workflow, its members' ids by (step, index), as enqueued (some may be deleted)."""
        self._workflow_inputs: dict[int, str] = {}
        """The workflow input of released members of a later step (`ClaimedJob.workflow_input`)."""

    def _replace(self, job: Job, **changes: object) -> Job:
        if "state" in changes and changes["state"] != job.state:
            transitions.check(job.state, changes["state"])  # type: ignore[arg-type]
        new = dataclasses.replace(job, **changes)  # type: ignore[arg-type]
        self._jobs[job.id] = new
        if new.state not in WAITING_STATES:
            self._order_at.pop(job.id, None)  # waiting again, it is ordered by its run_at
        if new.state.is_final and not job.state.is_final:
            self._wake_finished(job.id)
        return new

    def _wake_finished(self, job_id: int) -> None:
        """Wake whoever waits for `job_id` to finish: it is final now, or deleted.

        Every change of a job passes through `_replace` or `_delete`, under the lock, so no
        path to a final state (ack, cancel, rescue, release-worker) can forget to wake.
        """
        self._finished.notify_all()
        for loop, event in self._finish_waiters.get(job_id, ()):
            with contextlib.suppress(RuntimeError):  # its loop closed: nobody waits there now
                loop.call_soon_threadsafe(event.set)

    # -- the drivers: every operation runs under the one lock, in this thread ------
    def _drive(self, op: Op[T]) -> T:
        with self._lock:
            return run(op, _no_commands)

    async def _drive_async(self, op: Op[T]) -> T:
        return self._drive(op)  # in-process and short: no thread hand-off

    def _notify(self) -> None:
        self._version += 1
        for loop, event in self._waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)

    # -- producer --------------------------------------------------------
    def _order_of(self, job: Job) -> float:
        return self._order_at.get(job.id, job.run_at)

    def _fair_order(self, jobs: Sequence[NewJob], now: float) -> list[float | None]:
        """Each job's order_at (None: its run_at), recording the keys' new last times."""
        wanted = heads_wanted(jobs)
        if not wanted:
            return [None] * len(jobs)
        heads: dict[tuple[str, int], float | None] = dict.fromkeys(wanted)
        for job in self._jobs.values():
            slot = (job.queue, job.priority)
            if slot in heads and job.state in WAITING_STATES and job.run_at <= now:
                order = self._order_of(job)
                head = heads[slot]
                heads[slot] = order if head is None else min(head, order)
        lasts = {slot: self._fair_lasts.get(slot) for slot in keys_wanted(jobs)}
        fair = fair_order(jobs, now, heads, lasts)
        self._fair_lasts.update(fair.lasts)
        return fair.order_ats

    @immediate
    def _enqueue(self, jobs: Sequence[NewJob]) -> list[EnqueuedJob]:
        now = self.clock.now()
        order_ats = self._fair_order(jobs, now)
        out: list[EnqueuedJob] = []
        batch: dict[int, Job] = {}  # stored only once every job was read: all or nothing
        batch_keys: dict[str, int] = {}  # the keys of this batch's new jobs, in order
        batch_unique: dict[str, int] = {}
        for new, order_at in zip(jobs, order_ats, strict=True):
            key, unique = new.idempotency_key, new.unique_key
            existing = None
            if key is not None:
                existing = batch_keys.get(key)
                if existing is None:
                    existing = self._key_holder(key, new.idempotency_window, now)
            if existing is None and unique is not None:
                existing = batch_unique.get(unique) or self._unique_holder(unique)
            if existing is not None:
                out.append(EnqueuedJob(existing, created=False))
                continue
            job_id = next(self._ids)
            if order_at is not None:
                self._order_at[job_id] = order_at
            run_at = now + new.delay if new.run_at is None else new.run_at
            batch[job_id] = Job(
                id=job_id,
                task=new.task,
                queue=new.queue,
                state=transitions.initial_state(run_at, now),
                payload=new.payload,
                priority=new.priority,
                run_at=run_at,
                attempt=0,
                max_attempts=new.max_attempts,
                enqueued_at=now,
                idempotency_key=key,
                fairness_key=new.fairness_key,
                unique_key=new.unique_key,
                unique_states=new.unique_states,
                concurrency_key=new.concurrency_key,
            )
            out.append(EnqueuedJob(job_id, created=True))
            if key is not None:
                batch_keys[key] = job_id
            if unique is not None:
                batch_unique[unique] = job_id
        self._jobs.update(batch)
        self._unique.update(
            {job.unique_key: job.id for job in batch.values() if job.unique_key is not None}
        )
        self._keys.update(
            {
                job.idempotency_key: job.id
                for job in batch.values()
                if job.idempotency_key is not None
            }
        )
        self._notify()
        return out

    def _key_holder(self, key: str, window: float | None, now: float) -> int | None:
        """The job `key` names, or None; a job finished longer than `window` ago gives its
        key up (its `idempotency_key` is cleared)."""
        job_id = self._keys.get(key)
        job = None if job_id is None else self._jobs.get(job_id)
        if job is None:
            return None
        finished = job.finished_at
        expired = window is not None and finished is not None and now >= finished + window
        if expired and job.state.is_final:
            self._replace(job, idempotency_key=None)
            del self._keys[key]
            return None
        return job.id

    def _unique_holder(self, key: str) -> int | None:
        """The job holding the unique key `key` (in one of its unique states), or None."""
        job_id = self._unique.get(key)
        job = None if job_id is None else self._jobs.get(job_id)
        if job is None or job.state not in job.unique_states:
            return None
        return job.id

    # -- worker ----------------------------------------------------------
    @immediate
    def _claim(
        self,
        queues: tuple[str, ...],
        worker: str,
        limit: int,
        lease_seconds: float,
        limits: ClaimLimits | None = None,
    ) -> list[ClaimedJob]:
        now = self.clock.now()
        order_at = self._order_at
        with self._lock:
            wanted = set(queues) - self._paused  # under the lock: a pause is part of the claim
            due_jobs = (
                j
                for j in self._jobs.values()
                if j.state in WAITING_STATES and j.queue in wanted and j.run_at <= now
            )

            def in_order(j: Job) -> tuple[int, float, int]:
                return (j.priority, order_at.get(j.id, j.run_at), j.id)

            if limits is None:
                due = heapq.nsmallest(limit, due_jobs, key=in_order)
            else:
                due = self._within_caps(sorted(due_jobs, key=in_order), limits, limit, now)
            claimed = []
            for waiting in due:
                order = self._order_of(waiting)
                job = self._replace(
                    waiting,
                    state=S.RUNNING,
                    attempt=waiting.attempt + 1,
                    claims=waiting.claims + 1,
                    lease_owner=worker,
                    lease_expires_at=now + lease_seconds,
                    started_at=now,
                )
                claimed.append(
                    ClaimedJob(
                        id=job.id,
                        task=job.task,
                        queue=job.queue,
                        payload=job.payload,
                        attempt=job.attempt,
                        token=job.claims,
                        max_attempts=job.max_attempts,
                        priority=job.priority,
                        enqueued_at=job.enqueued_at,
                        run_at=job.run_at,
                        started_at=now,
                        lease_expires_at=now + lease_seconds,
                        order_at=order,
                        lost=job.lost,
                        snoozes=job.snoozes,
                        workflow_id=job.workflow_id,
                        workflow_input=self._workflow_inputs.get(job.id),
                    )
                )
            return claimed

    def _within_caps(
        self, in_order: list[Job], limits: ClaimLimits, limit: int, now: float
    ) -> list[Job]:
        """The first `limit` of `in_order` the caps admit, against the jobs running now."""
        running = Running.of(
            (
                _candidate(j)
                for j in self._jobs.values()
                if j.state is S.RUNNING and (j.lease_expires_at or 0.0) > now
            ),
            limits,
        )
        chosen = set(select_within_caps(map(_candidate, in_order), running, limits, limit))
        return [j for j in in_order if j.id in chosen]

    def _holds(self, ref: JobRef, worker: str | None = None) -> Job | None:
        job = self._jobs.get(ref.id)
        if job is None or job.state != S.RUNNING or job.claims != ref.token:
            return None
        if worker is not None and job.lease_owner != worker:
            return None
        return job

    # -- steps, checkpoints and progress --------------------------------
    @immediate
    def _store_step(self, ref: JobRef, name: str, text: str) -> bool:
        with self._lock:
            if self._holds(ref) is None:
                return False
            self._steps.setdefault(ref.id, {}).setdefault(name, StoredValue(text, self.clock.now()))
            return True

    @immediate
    def _store_state(self, ref: JobRef, text: str) -> bool:
        with self._lock:
            if self._holds(ref) is None:
                return False
            self._states[ref.id] = StoredValue(text, self.clock.now())
            return True

    @immediate
    def _store_progress(self, ref: JobRef, text: str) -> bool:
        with self._lock:
            job = self._holds(ref)
            if job is None:
                return False
            self._replace(job, progress=progress_from_store(text, self.clock.now()))
            return True

    @immediate
    def _read_steps(self, job_id: int) -> JobSteps:
        with self._lock:
            return JobSteps(dict(self._steps.get(job_id, {})), self._states.get(job_id))

    @immediate
    def _heartbeat(
        self, worker: str, refs: tuple[JobRef, ...], lease_seconds: float
    ) -> HeartbeatReply:
        now = self.clock.now()
        lost: set[int] = set()
        cancel: set[int] = set()
        with self._lock:
            for ref in refs:
                job = self._holds(ref, worker)
                if job is None:
                    lost.add(ref.id)
                    continue
                self._replace(job, lease_expires_at=now + lease_seconds)
                if job.cancel_requested:
                    cancel.add(ref.id)
        return HeartbeatReply(frozenset(lost), frozenset(cancel))

    @immediate
    def _ack(self, acks: Sequence[Ack]) -> list[bool]:
        now = self.clock.now()
        applied = []
        workflows: dict[str, None] = {}
        with self._lock:
            for ack in acks:
                job = self._holds(ack.ref)
                if job is None:
                    applied.append(False)
                    continue
                errors = job.errors + ((ack.error,) if ack.error is not None else ())
                target = transitions.after_ack(ack.target, cancel_requested=job.cancel_requested)
                common: dict[str, object] = {
                    "state": target,
                    "lease_owner": None,
                    "lease_expires_at": None,
                    "errors": errors,
                }
                if target.is_final:
                    common.update(finished_at=now)
                if target is S.SCHEDULED:
                    common.update(run_at=now + (ack.delay or 0.0))
                if ack.kind is AckKind.COMPLETE:
                    common.update(result_json=ack.result)
                if ack.gives_attempt_back:
                    common.update(attempt=job.attempt - 1)
                if ack.kind is AckKind.SNOOZE:
                    common.update(snoozes=job.snoozes + 1)
                new = self._replace(job, **common)
                applied.append(True)
                if new.workflow_id is not None and new.state.is_final:
                    workflows.setdefault(new.workflow_id)
            for workflow_id in workflows:  # once per workflow and batch, as the other engines
                self._fan_in(workflow_id, now)
            if any(a.target in WAITING_STATES for a in acks):
                self._notify()
        return applied

    @immediate
    def _rescue(self, max_lost: int) -> RescueReport:
        now = self.clock.now()
        with self._lock:
            expired = [
                j
                for j in self._jobs.values()
                if j.state == S.RUNNING
                and j.lease_expires_at is not None
                and j.lease_expires_at < now
            ]
            return self._settle_lost(expired, max_lost, now)

    @immediate
    def _release_worker(self, worker: str, max_lost: int) -> RescueReport:
        now = self.clock.now()
        with self._lock:
            held = [
                j for j in self._jobs.values() if j.state == S.RUNNING and j.lease_owner == worker
            ]
            return self._settle_lost(held, max_lost, now)

    def _settle_lost(self, jobs: Sequence[Job], max_lost: int, now: float) -> RescueReport:
        """Record a lost worker on each running job; `after_lease_expired` picks its state."""
        counts = {S.AVAILABLE: 0, S.DEAD: 0, S.CANCELLED: 0}
        for job in jobs:
            lost = job.lost + 1
            target = transitions.after_lease_expired(
                job.attempt,
                job.max_attempts,
                lost,
                max_lost,
                cancel_requested=job.cancel_requested,
            )
            error = WORKER_LOST.build(
                job.lease_owner, job.attempt, now, cancelled=target is S.CANCELLED
            )
            settled = self._replace(
                job,
                state=target,
                lost=lost,
                lease_owner=None,
                lease_expires_at=None,
                errors=(*job.errors, error),
                finished_at=now if target in FINAL_STATES else None,
            )
            counts[target] += 1
            if settled.workflow_id is not None and target in FINAL_STATES:
                self._fan_in(settled.workflow_id, now)
        if counts[S.AVAILABLE]:
            self._notify()
        return RescueReport(counts[S.AVAILABLE], counts[S.DEAD], counts[S.CANCELLED])

    @immediate
    def _prune(self, retention: Retention, limit: int) -> int:
        now = self.clock.now()
        removed = 0
        with self._lock:
            for slot, last in list(self._fair_lasts.items()):
                if last < now - STALE_AFTER:
                    del self._fair_lasts[slot]
            for job in list(self._jobs.values()):
                if removed >= limit:
                    break
                horizon = retention.horizon(job.state)
                if horizon is None or job.finished_at is None:
                    continue
                if job.finished_at < now - horizon:
                    self._delete(job)
                    removed += 1
        return removed

    @immediate
    def _age_priorities(self, every: float, floor: int, limit: int) -> int:
        now = self.clock.now()
        changed = 0
        with self._lock:
            for job in sorted(self._jobs.values(), key=lambda j: j.id):
                if changed >= limit:
                    break
                if job.state not in WAITING_STATES or job.run_at > now or job.priority <= floor:
                    continue
                aged = aged_priority(job.enqueued_priority, job.run_at, now, every, floor)
                if aged < job.priority:
                    self._replace(job, priority=aged, original_priority=job.enqueued_priority)
                    changed += 1
        return changed

    def _delete(self, job: Job) -> None:
        del self._jobs[job.id]
        self._steps.pop(job.id, None)
        self._states.pop(job.id, None)
        self._order_at.pop(job.id, None)
        self._workflow_inputs.pop(job.id, None)
        if job.workflow_id is not None and not self._members(job.workflow_id):
            self._workflows.pop(job.workflow_id, None)  # pruned with its last member
            self._member_ids.pop(job.workflow_id, None)
        if job.idempotency_key is not None:
            self._keys.pop(job.idempotency_key, None)
        if job.unique_key is not None and self._unique.get(job.unique_key) == job.id:
            del self._unique[job.unique_key]
        self._wake_finished(job.id)

    async def _wait(self, queues: tuple[str, ...], timeout: float) -> None:
        event = asyncio.Event()
        entry = (asyncio.get_running_loop(), event)
        with self._lock:
            self._waiters.append(entry)
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                self._waiters.remove(entry)

    # -- inspection and admin --------------------------------------------
    @immediate
    def _get(self, job_id: int) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def _finished_or_gone(self, job_id: int) -> bool:
        job = self._jobs.get(job_id)
        return job is None or job.state.is_final

    def _wait_finished(self, job_id: int, timeout: float) -> None:
        # The predicate is checked under the lock before the first wait: a job that
        # finished before this call returns at once, and none can finish unseen after it.
        with self._finished:
            self._finished.wait_for(lambda: self._finished_or_gone(job_id), timeout)

    async def _wait_finished_async(self, job_id: int, timeout: float) -> None:
        event = asyncio.Event()
        entry = (asyncio.get_running_loop(), event)
        with self._lock:
            if self._finished_or_gone(job_id):
                return
            self._finish_waiters.setdefault(job_id, []).append(entry)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
        finally:
            with self._lock:
                waiters = self._finish_waiters[job_id]
                waiters.remove(entry)
                if not waiters:
                    del self._finish_waiters[job_id]

    @immediate
    def _list_jobs(self, job_filter: JobFilter) -> list[Job]:
        with self._lock:
            found = [j for j in self._jobs.values() if matches(j, job_filter)]
        found.sort(key=lambda j: j.id, reverse=True)
        return found if job_filter.limit is None else found[: job_filter.limit]

    @immediate
    def _stats(self) -> list[QueueStats]:
        now = self.clock.now()
        per_queue: dict[str, dict[JobState, int]] = {}
        oldest: dict[str, float] = {}
        with self._lock:
            for job in self._jobs.values():
                counts = per_queue.setdefault(job.queue, {})
                counts[job.state] = counts.get(job.state, 0) + 1
                if job.state in WAITING_STATES and job.run_at <= now:
                    oldest[job.queue] = min(oldest.get(job.queue, job.run_at), job.run_at)
        return [
            QueueStats(
                queue=q,
                counts=per_queue[q],
                oldest_available_age=(now - oldest[q]) if q in oldest else None,
            )
            for q in sorted(per_queue)
        ]

    @immediate
    def _cancel(self, job_id: int) -> Job | None:
        now = self.clock.now()
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.state in FINAL_STATES:
                return job
            target = transitions.on_cancel(job.state)
            if target is None:
                return self._replace(job, cancel_requested=True)
            cancelled = self._replace(job, state=target, finished_at=now)
            if cancelled.workflow_id is not None:
                self._fan_in(cancelled.workflow_id, now)
            return cancelled

    @immediate
    def _requeue(self, job_filter: JobFilter) -> int:
        now = self.clock.now()
        count = 0
        with self._lock:
            for job in list(self._jobs.values()):
                if job.state in transitions.REQUEUEABLE and matches(job, job_filter):
                    if job.unique_key is not None:
                        holder = self._unique_holder(job.unique_key)
                        if holder is not None and holder != job.id:
                            continue  # another job holds its key: it stays where it is
                        self._unique[job.unique_key] = job.id
                    self._replace(
                        job,
                        state=S.AVAILABLE,
                        attempt=0,
                        lost=0,
                        snoozes=0,
                        run_at=now,
                        finished_at=None,
                        cancel_requested=False,
                    )
                    count += 1
            if count:
                self._notify()
        return count

    @immediate
    def _purge(self, job_filter: JobFilter) -> int:
        with self._lock:
            doomed = [
                j for j in self._jobs.values() if j.state in FINAL_STATES and matches(j, job_filter)
            ]
            for job in doomed:
                self._delete(job)
        return len(doomed)

    # -- queue control -----------------------------------------------------
    @immediate
    def _pause_queue(self, queue: str) -> bool:
        with self._lock:
            changed = queue not in self._paused
            self._paused.add(queue)
        return changed

    @immediate
    def _resume_queue(self, queue: str) -> bool:
        with self._lock:
            changed = queue in self._paused
            self._paused.discard(queue)
            if changed:
                self._notify()
        return changed

    @immediate
    def _paused_queues(self, queues: tuple[str, ...] | None) -> list[str]:
        with self._lock:
            return [q for q in self._paused if queues is None or q in queues]

    @immediate
    def _next_run_at(self, queues: tuple[str, ...] | None) -> float | None:
        with self._lock:
            times = [
                j.run_at
                for j in self._jobs.values()
                if j.state in WAITING_STATES and (queues is None or j.queue in queues)
            ]
        return min(times, default=None)

    # -- schedules -------------------------------------------------------
    @immediate
    def _fire_schedule(self, fire: ScheduleFire) -> ScheduleFired:
        with self._lock:  # the CAS and the enqueue under one hold of the lock: one write
            stored = self._schedules.get(fire.name)
            if not cas_holds(stored, fire):
                return refused(
                    None if stored is None else stored.last_tick,
                    stored is not None and stored.paused,
                )
            jobs = jobs_of(fire.jobs)
            enqueued = run(self._enqueue(jobs), _no_commands) if jobs else []
            last = stored or ScheduleRecord(fire.name, fire.queue, None, None, None, None, False)
            if enqueued:
                last = dataclasses.replace(
                    last,
                    last_job_id=enqueued[-1].id,
                    last_job_tick=fire.jobs[-1].tick,
                    last_fired_at=self.clock.now(),
                )
            self._schedules[fire.name] = dataclasses.replace(
                last, queue=fire.queue, last_tick=fire.advance_to
            )
            return ScheduleFired(True, tuple(enqueued), fire.advance_to, False)

    @immediate
    def _set_schedule_paused(
        self, name: str, queue: str, paused: bool, now: float
    ) -> ScheduleRecord:
        with self._lock:
            stored = self._schedules.get(name)
            record = stored or ScheduleRecord(name, queue, None, None, None, None, False)
            last = record.last_tick
            if not paused and (last is None or last < now):
                last = now
            record = dataclasses.replace(record, paused=paused, last_tick=last)
            self._schedules[name] = record
            return record

    @immediate
    def _list_schedules(self) -> list[ScheduleRecord]:
        with self._lock:
            return list(self._schedules.values())

    # -- limit states --------------------------------------------------------
    def _live_limits(self, names: tuple[str, ...], now: float) -> dict[str, LimitState]:
        return live([self._limits[n] for n in names if n in self._limits], now)

    @immediate
    def _read_limits(self, names: tuple[str, ...]) -> LimitStates:
        with self._lock:
            now = self.clock.now()
            return LimitStates(True, now, self._live_limits(names, now))

    @immediate
    def _swap_limits(self, swaps: tuple[LimitSwap, ...]) -> LimitStates:
        with self._lock:
            now = self.clock.now()
            stored = self._live_limits(tuple(s.name for s in swaps), now)
            if not swap_holds(stored, swaps):
                return LimitStates(False, now, stored)
            written = {s.name: LimitState(s.name, s.version, s.value, now + s.ttl) for s in swaps}
            self._limits.update(written)
            return LimitStates(True, now, written)

    @immediate
    def _list_limits(self, prefix: str) -> list[LimitState]:
        with self._lock:
            now = self.clock.now()
            return [
                r for r in self._limits.values() if r.name.startswith(prefix) and r.expires_at > now
            ]

    @immediate
    def _prune_limits(self, limit: int) -> int:
        with self._lock:
            now = self.clock.now()
            expired = [n for n, r in self._limits.items() if r.expires_at <= now][: max(limit, 0)]
            for name in expired:
                del self._limits[name]
            return len(expired)

    # -- the worker registry -------------------------------------------------
    @immediate
    def _record_worker(self, beat: WorkerBeat) -> None:
        with self._lock:
            now = self.clock.now()
            self._workers[beat.id] = recorded(self._workers.get(beat.id), beat, now)

    @immediate
    def _list_workers(self) -> WorkerRegistry:
        with self._lock:
            now = self.clock.now()
            return WorkerRegistry(now, tuple(sorted(self._workers.values(), key=_by_id)))

    @immediate
    def _prune_workers(self, keep: float, limit: int) -> int:
        with self._lock:
            horizon = self.clock.now() - keep
            gone = [i for i, w in self._workers.items() if w.seen_at <= horizon][: max(limit, 0)]
            for worker_id in gone:
                del self._workers[worker_id]
            return len(gone)

    # -- the history of finished attempts ------------------------------------
    @immediate
    def _add_counts(self, counts: tuple[tuple[CountKey, int], ...]) -> None:
        with self._lock:
            start = bucket_start(self.clock.now())
            for key, count in counts:
                self._counts[start, key] = self._counts.get((start, key), 0) + count

    @immediate
    def _read_counts(self, since: float) -> CountHistory:
        with self._lock:
            now = self.clock.now()
            found = [
                CountBucket(start, key, n)
                for (start, key), n in self._counts.items()
                if start >= now - since
            ]
            return CountHistory(now, tuple(sorted(found)))

    @immediate
    def _prune_counts(self, keep: float, limit: int) -> int:
        with self._lock:
            horizon = self.clock.now() - keep
            old = [k for k in self._counts if k[0] < horizon][: max(limit, 0)]
            for k in old:
                del self._counts[k]
            return len(old)

    # -- workflows -------------------------------------------------------------
    @immediate
    def _enqueue_workflow(self, workflow: NewWorkflow) -> list[list[int]]:
        now = self.clock.now()
        with self._lock:
            if workflow.id in self._workflows:
                raise BackendError(
                    f"workflow id {workflow.id} is taken already; nothing was written"
                )
            ids: list[list[int]] = []
            for step, jobs in enumerate(workflow.steps):
                ids.append([])
                for index, new in enumerate(jobs):
                    job_id = next(self._ids)
                    run_at = now if step == 0 else HELD_AT
                    self._jobs[job_id] = Job(
                        id=job_id,
                        task=new.task,
                        queue=new.queue,
                        state=S.AVAILABLE if step == 0 else S.SCHEDULED,
                        payload=new.payload,
                        priority=new.priority,
                        run_at=run_at,
                        attempt=0,
                        max_attempts=new.max_attempts,
                        enqueued_at=now,
                        workflow_id=workflow.id,
                        workflow_step=step,
                        workflow_index=index,
                    )
                    ids[-1].append(job_id)
            self._member_ids[workflow.id] = [i for step_ids in ids for i in step_ids]
            self._workflows[workflow.id] = Workflow(
                id=workflow.id,
                status=WorkflowStatus.RUNNING,
                step=0,
                shape=workflow.shape,
                on_failure=workflow.on_failure,
                created_at=now,
            )
            self._notify()
            return ids

    def _members(self, workflow_id: str, step: int | None = None) -> list[Job]:
        """The workflow's stored members (of `step` only, if given), by (step, index)."""
        stored = (self._jobs.get(i) for i in self._member_ids.get(workflow_id, ()))
        return [j for j in stored if j is not None and (step is None or j.workflow_step == step)]

    def _fan_in(self, workflow_id: str, now: float) -> None:
        """Advance the workflow as far as its members allow (under the lock: one write)."""
        while True:
            record = self._workflows.get(workflow_id)
            if record is None or record.status not in ADVANCING:
                return
            members = [
                Member(j.workflow_index or 0, j.state, j.result_json, j.last_error)
                for j in self._members(workflow_id, record.step)
            ]
            decision = decide(record.shape, record.step, record.on_failure, members)
            if decision.verdict is Verdict.WAIT:
                return
            if decision.verdict is Verdict.FAIL:
                self._workflows[workflow_id] = dataclasses.replace(
                    record, status=WorkflowStatus.FAILED
                )
                return
            if decision.verdict is Verdict.FINISH:
                assert decision.status is not None
                self._workflows[workflow_id] = dataclasses.replace(
                    record, status=decision.status, result=decision.output, finished_at=now
                )
                return
            step = record.step + 1
            self._workflows[workflow_id] = dataclasses.replace(
                record, status=WorkflowStatus.RUNNING, step=step
            )
            for job in self._members(workflow_id, step):
                if job.state is S.SCHEDULED:
                    assert decision.output is not None
                    self._workflow_inputs[job.id] = decision.output
                    self._replace(job, state=S.AVAILABLE, run_at=now)
            self._notify()

    @immediate
    def _get_workflow(self, workflow_id: str) -> Workflow | None:
        with self._lock:
            record = self._workflows.get(workflow_id)
            if record is None:
                return None
            return dataclasses.replace(record, members=tuple(self._members(workflow_id)))

    @immediate
    def _cancel_workflow(self, workflow_id: str) -> Workflow | None:
        now = self.clock.now()
        with self._lock:
            record = self._workflows.get(workflow_id)
            if record is None:
                return None
            if record.status in (WorkflowStatus.RUNNING, WorkflowStatus.FAILED):
                self._workflows[workflow_id] = dataclasses.replace(
                    record, status=WorkflowStatus.CANCELLED, finished_at=now
                )
                for job in self._members(workflow_id):
                    target = transitions.on_cancel(job.state)
                    if job.state in FINAL_STATES:
                        continue
                    if target is None:
                        self._replace(job, cancel_requested=True)
                    else:
                        self._replace(job, state=target, finished_at=now)
            return dataclasses.replace(
                self._workflows[workflow_id], members=tuple(self._members(workflow_id))
            )


def _no_commands(command: object) -> object:
    raise AssertionError(f"the memory engine's operations send no commands, got {command!r}")


def _candidate(job: Job) -> Candidate:
    return Candidate(job.id, job.task, job.queue, job.concurrency_key)


def _by_id(record: WorkerRecord) -> str:
    return record.id
