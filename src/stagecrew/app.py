"""`App`: the task registry, the store chosen by URL, and the producer and admin API."""

from __future__ import annotations

import builtins
import dataclasses
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, ParamSpec, Protocol, TypeVar, overload

from .backends import DEFAULT_URL, backend_from_url, redact_url
from .backends.base import DEFAULT_MAX_LOST, Backend, JobFilter, QueueStats, Retention
from .backends.caps import ClaimLimits, check_cap
from .backends.steps import JobSteps
from .clock import Clock, SystemClock, checked_seconds
from .errors import (
    ConfigurationError,
    EnqueueError,
    ScheduleError,
    StagecrewError,
    UnknownTaskError,
)
from .handle import JobHandle, require
from .job import DEFAULT_IDEMPOTENCY_WINDOW, Job, JobState, NewJob
from .limits.circuit import Circuit, check_shared_circuits
from .limits.concurrency import Concurrency, check_shared_names, claim_limits
from .limits.rate import RateLimit, check_shared_rates
from .maintenance.aging import PriorityAging
from .observability.alert_config import ALERTS_VARIABLE, rules_from_file
from .observability.alerts import DEFAULT_WINDOW, AlertRule, parse_rule
from .observability.unserved import UnservedQueues
from .retry import Backoff
from .schedule import DEFAULT_MAX_CATCH_UP, CatchUp, Schedule, declare
from .serialization import DEFAULT_MAX_PAYLOAD_BYTES, PayloadSigner
from .task import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_SNOOZES,
    EnqueueOptions,
    FairnessKey,
    Task,
    Unique,
)
from .workflows.inspection import Workflows

P = ParamSpec("P")
R = TypeVar("R")


DEFAULT_UNKNOWN_TASK_WINDOW = 3600.0
"""Seconds a job of a task no worker has waits for one that has it (see `App`)."""


def _seconds(value: float | timedelta, name: str) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ConfigurationError(f"{name} must be a number of seconds, not {value!r}")
    return checked_seconds(seconds, name)


class TaskDecorator(Protocol):
    """What `app.task(...)` with options returns: a decorator keeping the function's types."""

    def __call__(self, fn: Callable[P, R], /) -> Task[P, R]: ...


class App:
    """One application's tasks and the store they share.

    `url` picks the engine: `sqlite:///path.db` (the default, `./stagecrew.db`),
    `memory://`; else the `STAGECREW_URL` environment variable is read.

    `unknown_task_window` (seconds, one hour by default) is how long a job of a
    task this app does not have waits for a worker that has it: during a rolling
    deploy, producers may know a task before every worker does. A worker hands
    such a job back (no attempt counted) with a short, growing delay, and
    dead-letters it only once this long has passed since the first hand-back;
    0 dead-letters it at once.

    `signing_key` (bytes or str, or several: the first signs, all verify) makes
    every enqueued payload carry an HMAC-SHA256 of it and its task name, and
    makes workers dead-letter, unrun, any job whose signature is missing or
    wrong; else the comma-separated `STAGECREW_SIGNING_KEYS` is read. An app
    without a key signs nothing and checks nothing (see docs/guarantees.md).

    `priority_aging` turns on the starvation guard of priorities: with `PriorityAging()` a
    waiting job gains one priority step per five minutes waited, down to priority 0. It is
    off by default, as its pass on SQL engines reads every waiting job worse than the floor
    (see docs/fairness.md).

    `idempotency_window` (seconds or a timedelta, one day by default) is how long after a
    job finished its idempotency key still names it: an enqueue with the key within the
    window gets that job (`created=False`), a later one makes a new job. None keeps the key
    as long as the job is stored (see docs/uniqueness.md).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        clock: Clock | None = None,
        retention: Retention | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        max_worker_losses: int = DEFAULT_MAX_LOST,
        default_queue: str = "default",
        signing_key: bytes | str | Sequence[bytes | str] | None = None,
        unknown_task_window: float | timedelta = DEFAULT_UNKNOWN_TASK_WINDOW,
        priority_aging: PriorityAging | None = None,
        idempotency_window: float | timedelta | None = DEFAULT_IDEMPOTENCY_WINDOW,
    ) -> None:
        self.url = url or os.environ.get("STAGECREW_URL") or DEFAULT_URL
        self.unknown_task_window = _seconds(unknown_task_window, "unknown_task_window")
        self.idempotency_window = (
            None
            if idempotency_window is None
            else _seconds(idempotency_window, "idempotency_window")
        )
        self._signer = PayloadSigner.configured(signing_key, os.environ)
        self.clock: Clock = clock or SystemClock()
        self.retention = retention or Retention()
        self.max_payload_bytes = max_payload_bytes
        self.max_worker_losses = max_worker_losses
        self.default_queue = default_queue
        if priority_aging is not None and not isinstance(priority_aging, PriorityAging):
            raise ConfigurationError(
                f"priority_aging must be a PriorityAging or None, not {priority_aging!r}"
            )
        self.priority_aging = priority_aging
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.schedules: dict[str, Schedule] = {}
        """The periodic schedules declared in code (`periodic`, `schedule`), by name."""
        self.queue_caps: dict[str, int] = {}
        """The concurrency caps of queues declared in code (`queue`), by queue name."""
        self.alerts: dict[str, AlertRule] = {}
        """The alert rules declared in code (`alert`), by name; see docs/alerts.md."""
        self._backend: Backend | None = None
        self._backend_lock = threading.Lock()
        self._unserved = UnservedQueues()
        """The queues enqueued to so far, each checked once against the worker registry."""
        self.jobs = Jobs(self)
        self.workflows = Workflows(self)

    def __repr__(self) -> str:
        return f"<App {redact_url(self.url)} tasks={sorted(self.tasks)}>"

    # -- the store ---------------------------------------------------------
    @property
    def backend(self) -> Backend:
        if self._backend is None:
            with self._backend_lock:
                if self._backend is None:
                    backend = backend_from_url(self.url, self.clock)
                    try:
                        backend.prepare()
                    except BaseException:
                        backend.close()  # the next use builds it again (a store that was down)
                        raise
                    self._backend = backend
        return self._backend

    def use_backend(self, backend: Backend) -> None:
        """Swap the store (the test kit uses this); closes the previous one."""
        with self._backend_lock:
            old, self._backend = self._backend, backend
            self.clock = backend.clock
        if old is not None and old is not backend:
            old.close()

    def close(self) -> None:
        with self._backend_lock:
            if self._backend is not None:
                self._backend.close()
                self._backend = None

    # -- tasks ---------------------------------------------------------------
    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        *,
        name: str | None = None,
        queue: str | None = None,
        priority: int = 0,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        timeout: float | timedelta | None = None,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        dont_retry_on: tuple[type[BaseException], ...] = (),
        backoff: Backoff | Mapping[str, float] | None = None,
        max_snoozes: int = DEFAULT_MAX_SNOOZES,
        fairness_key: FairnessKey | None = None,
        unique: Unique | Mapping[str, Any] | None = None,
        concurrency: int | Concurrency | Mapping[str, Any] | None = None,
        rate_limit: str | RateLimit | Mapping[str, Any] | None = None,
        circuit: str | Circuit | Mapping[str, Any] | None = None,
    ) -> TaskDecorator: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        queue: str | None = None,
        priority: int = 0,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        timeout: float | timedelta | None = None,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        dont_retry_on: tuple[type[BaseException], ...] = (),
        backoff: Backoff | Mapping[str, float] | None = None,
        max_snoozes: int = DEFAULT_MAX_SNOOZES,
        fairness_key: FairnessKey | None = None,
        unique: Unique | Mapping[str, Any] | None = None,
        concurrency: int | Concurrency | Mapping[str, Any] | None = None,
        rate_limit: str | RateLimit | Mapping[str, Any] | None = None,
        circuit: str | Circuit | Mapping[str, Any] | None = None,
    ) -> Any:
        """Register a function as a task (sync or async).

        Failures retry with exponential backoff and full jitter while the
        exception is an instance of `retry_on` and not of `dont_retry_on`, up
        to `max_attempts` runs in all; then the job goes to the dead-letter
        queue. `timeout` (seconds) bounds one attempt. `fairness_key` is the jobs' default
        fairness key (see docs/fairness.md): a str, or a function of the job's arguments
        that returns one (or None); `options(fairness_key=...)` overrides it.

        A task that raises `Snooze(seconds)` runs again that much later without the
        attempt counting; `max_snoozes` (100 by default) bounds how many times a job may
        snooze: the snooze past it dead-letters the job (see docs/snooze.md).

        `unique=dict(key="sync-{customer_id}", states=("scheduled", "available", "running"))`
        (or a `Unique`) keeps at most one job per computed key in those states, fleet-wide:
        an enqueue whose key a stored job holds returns that job's handle, `created=False`
        (see docs/uniqueness.md).

        `concurrency=5` keeps at most 5 of the task's jobs running at once, fleet-wide;
        `concurrency=dict(key="{customer_id}", limit=2)` (or a `Concurrency`) at most 2 per
        key instead, and tasks giving one `name=` share each key's slots. A job whose cap is
        full waits, without an attempt counted, while the jobs behind it run (docs/limits.md).

        `rate_limit="100/m"` (also `/s`, `/h`, `/d`, `"3/10s"`) lets the task's jobs start at
        most that often, fleet-wide; `rate_limit=dict(rate="10/s", burst=20, key="{account}")`
        (or a `RateLimit`) limits each key instead. A job without a token waits, its attempt
        not counted; a task may `raise RateLimited(retry_after=...)` when a remote API
        answers "too many requests" (docs/limits.md).

        `circuit=dict(name="payments-api", failure_threshold=0.5, min_calls=20, window=60,
        cooldown=30, probes=3)` (or a name, or a `Circuit`) puts the task behind a circuit
        breaker shared by every task naming it: too many failures open it fleet-wide, and its
        jobs wait, their attempts not counted, until probes succeed (docs/limits.md).
        """

        def register(func: Callable[..., Any]) -> Task[Any, Any]:
            task_name = name or func.__name__
            if task_name in self.tasks and self.tasks[task_name].fn is not func:
                raise ConfigurationError(
                    f"a task named {task_name!r} is already registered; "
                    "pass name='...' to tell them apart"
                )
            seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
            registered: Task[Any, Any] = Task(
                self,
                func,
                name=task_name,
                queue=queue or self.default_queue,
                priority=priority,
                max_attempts=max_attempts,
                timeout=seconds,
                retry_on=retry_on,
                dont_retry_on=dont_retry_on,
                backoff=Backoff.coerce(backoff),
                max_snoozes=max_snoozes,
                fairness_key=fairness_key,
                unique=unique,
                concurrency=concurrency,
                rate_limit=rate_limit,
                circuit=circuit,
            )
            check_shared_names(
                [(t.name, t.concurrency) for t in self.tasks.values() if t.name != task_name]
                + [(task_name, registered.concurrency)]
            )
            check_shared_rates(
                [(t.name, t.rate_limit) for t in self.tasks.values() if t.name != task_name]
                + [(task_name, registered.rate_limit)]
            )
            check_shared_circuits(
                [(t.name, t.circuit) for t in self.tasks.values() if t.name != task_name]
                + [(task_name, registered.circuit)]
            )
            self.tasks[task_name] = registered
            return registered

        return register if fn is None else register(fn)

    def alert(
        self,
        name: str,
        rule: str,
        *,
        queue: str | None = None,
        window: float | timedelta = DEFAULT_WINDOW,
        webhook: str | None = None,
    ) -> AlertRule:
        """Declare an alert: `rule` such as "depth > 1000 for 5m" or "no live workers", for
        `queue` (None: all queues together). The workers evaluate it once per interval
        fleet-wide; firing and resolving are logged and POSTed to `webhook` (default:
        STAGECREW_ALERT_WEBHOOK). See docs/alerts.md."""
        seconds = _seconds(window, "window")
        hook = webhook or os.environ.get("STAGECREW_ALERT_WEBHOOK") or None
        declared = parse_rule(name, rule, queue=queue, window=seconds, webhook=hook)
        self.alerts[name] = declared
        return declared

    def alert_rules(self) -> list[AlertRule]:
        """The rules declared in code, and those of the file STAGECREW_ALERTS names."""
        rules = dict(self.alerts)
        path = os.environ.get(ALERTS_VARIABLE)
        if path:
            rules.update((rule.name, rule) for rule in rules_from_file(path))
        return list(rules.values())

    def queue(self, name: str, *, concurrency: int | None) -> None:
        """Declare a queue's settings: `concurrency` caps how many of its jobs (of any task)
        run at once, fleet-wide (None: no cap). Workers that serve the queue enforce it."""
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"a queue name must be a non-empty str, not {name!r}")
        if concurrency is None:
            self.queue_caps.pop(name, None)
            return
        try:
            self.queue_caps[name] = check_cap(concurrency, f"queue {name!r}: concurrency")
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None

    def claim_limits(self, queues: Sequence[str]) -> ClaimLimits | None:
        """The concurrency caps a worker serving `queues` sends with its claims, or None."""
        wanted = set(queues)
        return claim_limits(
            ((t.name, t.concurrency) for t in self.tasks.values()),
            {q: cap for q, cap in self.queue_caps.items() if q in wanted},
        )

    # -- schedules -----------------------------------------------------------
    def schedule(
        self,
        task: Task[Any, Any] | str,
        *,
        cron: str | None = None,
        every: float | timedelta | None = None,
        tz: str | None = None,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        name: str | None = None,
        catch_up: CatchUp | str = CatchUp.LATEST,
        max_catch_up: int = DEFAULT_MAX_CATCH_UP,
        queue: str | None = None,
        priority: int | None = None,
    ) -> Schedule:
        """Fire `task` with `args`/`kwargs` on a timing: `cron=` (5 fields, or 6 with the
        seconds first, or a nickname such as `@daily`) in the time zone `tz` (UTC if None),
        or `every=` (a timedelta or seconds, on the UTC epoch grid, so restarts never shift
        it). Every worker runs the schedules; each tick makes one job fleet-wide. `name`
        (the task's name by default) must be unique: it names the schedule in the store and
        in `stagecrew cron`. `catch_up` says what happens to ticks missed while no worker
        ran: "latest" (one job for the missed period), "all" (up to `max_catch_up` missed
        ticks), or "skip". See docs/schedules.md. Raises `ScheduleError` for anything that
        cannot work, now, not at the first tick."""
        if isinstance(task, str):
            task = self.get_task(task)
        if not isinstance(task, Task) or task.app is not self:
            raise ScheduleError(f"schedule needs a task of this app, not {task!r}")
        declared = declare(
            task,
            name=name,
            cron=cron,
            every=every,
            tz=tz,
            args=args,
            kwargs=kwargs,
            catch_up=catch_up,
            max_catch_up=max_catch_up,
            queue=queue,
            priority=priority,
        )
        if declared.name in self.schedules:
            raise ScheduleError(
                f"a schedule named {declared.name!r} is declared already; pass name='...' to "
                "tell them apart"
            )
        self.schedules[declared.name] = declared
        return declared

    def periodic(
        self,
        *,
        cron: str | None = None,
        every: float | timedelta | None = None,
        tz: str | None = None,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        name: str | None = None,
        catch_up: CatchUp | str = CatchUp.LATEST,
        max_catch_up: int = DEFAULT_MAX_CATCH_UP,
        queue: str | None = None,
        priority: int | None = None,
    ) -> Callable[[Task[P, R]], Task[P, R]]:
        """`@app.periodic(cron="0 3 * * *", tz="Europe/Paris")` above `@app.task`: `schedule`
        as a decorator; returns the task unchanged."""

        def register(task: Task[P, R]) -> Task[P, R]:
            if not isinstance(task, Task):
                raise ScheduleError(
                    f"@app.periodic decorates a task: put it above @app.task, not on {task!r}"
                )
            self.schedule(
                task,
                cron=cron,
                every=every,
                tz=tz,
                args=args,
                kwargs=kwargs,
                name=name,
                catch_up=catch_up,
                max_catch_up=max_catch_up,
                queue=queue,
                priority=priority,
            )
            return task

        return register

    def get_task(self, name: str) -> Task[Any, Any]:
        try:
            return self.tasks[name]
        except KeyError:
            raise UnknownTaskError(name) from None

    # -- producing -----------------------------------------------------------
    def enqueue(
        self,
        task_name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> JobHandle:
        """Enqueue by task name (as the CLI does); options as for `Task.options`."""
        task = self.get_task(task_name)
        return task.options(**options).enqueue(*args, **(kwargs or {}))

    async def enqueue_async(
        self,
        task_name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> JobHandle:
        """`enqueue` without blocking the event loop."""
        task = self.get_task(task_name)
        return await task.options(**options).enqueue_async(*args, **(kwargs or {}))

    def _handles(self, results: Sequence[Any]) -> list[JobHandle]:
        return [JobHandle(self, r.id, created=r.created) for r in results]

    def _producer_backend(self) -> Backend:
        """The store, for an enqueue: one that cannot be opened is an `EnqueueError` too."""
        try:
            return self.backend
        except (EnqueueError, ConfigurationError):
            raise
        except StagecrewError as exc:  # the server is down, or its schema is not migrated
            raise EnqueueError(f"could not enqueue, nothing was written: {exc}") from exc

    def _enqueue(self, jobs: list[NewJob], connection: object | None = None) -> list[JobHandle]:
        """Store failures arrive as `EnqueueError` already: the backend's front layer maps them."""
        backend = self._producer_backend()
        if connection is not None:
            handles = self._handles(backend.enqueue_in(connection, jobs))
        else:
            handles = self._handles(backend.enqueue(jobs))
        self._unserved.enqueued(backend, jobs)
        return handles

    async def _enqueue_async(
        self, jobs: list[NewJob], connection: object | None = None
    ) -> list[JobHandle]:
        backend = self._producer_backend()
        if connection is not None:
            handles = self._handles(await backend.enqueue_in_async(connection, jobs))
        else:
            handles = self._handles(await backend.enqueue_async(jobs))
        self._unserved.enqueued_async(backend, jobs)
        return handles


class Jobs:
    """Inspection and admin: `app.jobs.get(id)`, `.list(...)`, `.cancel(id)`, `.requeue(...)`.

    Each call has an async form (`get_async`, `list_async`, ...) that does the same
    without blocking the event loop.
    """

    def __init__(self, app: App) -> None:
        self._app = app

    def get(self, job_id: int) -> Job:
        """The job as stored now (`JobNotFoundError` if there is none): `Job.result` is its
        decoded result, `Job.result_json` the stored text."""
        return require(self._app.backend.get(job_id), job_id)

    def handle(self, job_id: int) -> JobHandle:
        """A handle on the job `job_id`, as enqueue returned it (its `created` is False).

        Nothing is read here: the handle's calls read the store, and raise
        `JobNotFoundError` for a job that does not exist (or was pruned)."""
        if isinstance(job_id, bool) or not isinstance(job_id, int):
            raise TypeError(f"a job id is an int, not {job_id!r}")
        return JobHandle(self._app, job_id, created=False)

    async def get_async(self, job_id: int) -> Job:
        return require(await self._app.backend.get_async(job_id), job_id)

    def steps(self, job_id: int) -> JobSteps:
        """The completed steps and the checkpoint job `job_id` stored (see docs/steps.md)."""
        return self._app.backend.read_steps(job_id)

    async def steps_async(self, job_id: int) -> JobSteps:
        return await self._app.backend.read_steps_async(job_id)

    def list(
        self,
        *,
        state: JobState | str | None = None,
        queue: str | None = None,
        task: str | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> builtins.list[Job]:
        return self._app.backend.list_jobs(_list_filter(state, queue, task, limit, before_id))

    async def list_async(
        self,
        *,
        state: JobState | str | None = None,
        queue: str | None = None,
        task: str | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> builtins.list[Job]:
        job_filter = _list_filter(state, queue, task, limit, before_id)
        return await self._app.backend.list_jobs_async(job_filter)

    def cancel(self, job_id: int) -> Job:
        return require(self._app.backend.cancel(job_id), job_id)

    async def cancel_async(self, job_id: int) -> Job:
        return require(await self._app.backend.cancel_async(job_id), job_id)

    def requeue(
        self,
        ids: Sequence[int] = (),
        *,
        all_dead: bool = False,
        task: str | None = None,
        queue: str | None = None,
    ) -> int:
        """Re-run dead (or cancelled) jobs with a fresh attempt count (`stagecrew dlq requeue`)."""
        return self._app.backend.requeue(_requeue_filter(ids, all_dead, task, queue))

    async def requeue_async(
        self,
        ids: Sequence[int] = (),
        *,
        all_dead: bool = False,
        task: str | None = None,
        queue: str | None = None,
    ) -> int:
        job_filter = _requeue_filter(ids, all_dead, task, queue)
        return await self._app.backend.requeue_async(job_filter)

    retry = requeue
    """The former name of `requeue`, kept working."""

    def purge(
        self,
        *,
        state: JobState | str = JobState.DEAD,
        older_than: float | None = None,
        task: str | None = None,
        queue: str | None = None,
    ) -> int:
        """Delete finished jobs in `state`; with `older_than`, only those finished that long ago."""
        return self._app.backend.purge(self._purge_filter(state, older_than, task, queue))

    def purgeable(
        self,
        *,
        state: JobState | str = JobState.DEAD,
        older_than: float | None = None,
        task: str | None = None,
        queue: str | None = None,
        limit: int = 100_000,
    ) -> builtins.list[Job]:
        """The jobs `purge` with these arguments would delete now (up to `limit`, newest
        first): for a dry run, or to ask before deleting."""
        job_filter = self._purge_filter(state, older_than, task, queue)
        return self._app.backend.list_jobs(dataclasses.replace(job_filter, limit=limit))

    async def purge_async(
        self,
        *,
        state: JobState | str = JobState.DEAD,
        older_than: float | None = None,
        task: str | None = None,
        queue: str | None = None,
    ) -> int:
        job_filter = self._purge_filter(state, older_than, task, queue)
        return await self._app.backend.purge_async(job_filter)

    def _purge_filter(
        self,
        state: JobState | str,
        older_than: float | None,
        task: str | None,
        queue: str | None,
    ) -> JobFilter:
        before = None
        if older_than is not None:
            before = self._app.clock.now() - checked_seconds(older_than, "older_than")
        return JobFilter(
            states=frozenset({JobState(state)}),
            finished_before=before,
            tasks=_one(task),
            queues=_one(queue),
        )

    def stats(self) -> builtins.list[QueueStats]:
        return self._app.backend.stats()

    async def stats_async(self) -> builtins.list[QueueStats]:
        return await self._app.backend.stats_async()


def _one(name: str | None) -> frozenset[str]:
    return frozenset({name}) if name else frozenset()


def _list_filter(
    state: JobState | str | None,
    queue: str | None,
    task: str | None,
    limit: int,
    before_id: int | None,
) -> JobFilter:
    return JobFilter(
        states=frozenset({JobState(state)}) if state else frozenset(),
        queues=_one(queue),
        tasks=_one(task),
        limit=limit,
        before_id=before_id,
    )


def _requeue_filter(
    ids: Sequence[int], all_dead: bool, task: str | None, queue: str | None
) -> JobFilter:
    if not ids and not all_dead:
        raise ConfigurationError("name job ids to requeue, or ask for all dead jobs")
    return JobFilter(
        states=frozenset({JobState.DEAD}) if all_dead else frozenset(),
        ids=frozenset(ids),
        tasks=_one(task),
        queues=_one(queue),
    )


__all__ = ["App", "EnqueueOptions", "Jobs"]
