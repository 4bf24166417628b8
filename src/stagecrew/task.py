"""`@app.task`: a function registered under a name, with its retry and run options."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from .backends.caps import check_concurrency_key
from .backends.fairness import check_fairness_key
from .backends.unique import DEFAULT_UNIQUE_STATES, check_unique_key, check_unique_states
from .clock import checked_seconds, checked_time
from .context import Context
from .errors import ConfigurationError, InvalidArgumentsError
from .job import JobState, NewJob
from .limits.circuit import Circuit
from .limits.concurrency import Concurrency, ConcurrencyKey
from .limits.rate import RateKey, RateLimit
from .observability import tracing
from .retry import Backoff
from .serialization import encode_payload

if TYPE_CHECKING:
    from .app import App
    from .handle import JobHandle
    from .workflows.canvas import Signature

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_MAX_ATTEMPTS = 20
DEFAULT_MAX_SNOOZES = 100
"""How many times a job may snooze (`Snooze`) before the next snooze dead-letters it."""

FairnessKey = str | Callable[..., str | None]
"""A task's default fairness key: one key, or a function of the job's arguments (passed by
name) giving one (None: no key for that job), e.g.
`lambda customer_id, **_: f"customer-{customer_id}"`."""


UniqueKey = str | Callable[..., str | None]
"""A task's unique key: a template over the job's arguments by name (`"sync-{customer_id}"`,
`str.format` syntax), or a function of the arguments by name giving the key (None: the job
is not unique), as for `FairnessKey`."""


@dataclass(frozen=True, slots=True)
class Unique:
    """`@app.task(unique=Unique(key=..., states=...))` (or a dict of the same fields): at most
    one job per computed key in `states`, fleet-wide (see docs/uniqueness.md). `states` must
    include scheduled, available and running; add succeeded, dead or cancelled to keep the
    key held after the job finished, until it is pruned."""

    key: UniqueKey
    states: frozenset[JobState] = DEFAULT_UNIQUE_STATES

    def __post_init__(self) -> None:
        if not callable(self.key) and (not isinstance(self.key, str) or not self.key):
            raise ConfigurationError(
                f"unique key must be a template str or a function, not {self.key!r}"
            )
        try:
            object.__setattr__(self, "states", check_unique_states(self.states, "unique states"))
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None

    @classmethod
    def coerce(cls, value: Unique | Mapping[str, Any] | None) -> Unique | None:
        if value is None or isinstance(value, Unique):
            return value
        if not isinstance(value, Mapping):
            raise ConfigurationError(
                f"unique must be a Unique or a dict(key=..., states=...), not {value!r}"
            )
        unknown = set(value) - {"key", "states"}
        if unknown or "key" not in value:
            raise ConfigurationError(
                f"unique takes key= (required) and states=, not {sorted(value)}"
            )
        return cls(value["key"], value.get("states", DEFAULT_UNIQUE_STATES))


@dataclass(frozen=True, slots=True)
class Call:
    """Arguments of one job for `enqueue_many`, when a plain tuple is not enough."""

    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)


def call(*args: Any, **kwargs: Any) -> Call:
    """`call("a.png", width=3)`: one job's arguments for `enqueue_many`."""
    return Call(args, kwargs)


@dataclass(frozen=True, slots=True)
class EnqueueOptions:
    """Per-call options; None means the task's default."""

    queue: str | None = None
    priority: int | None = None
    delay: float | None = None
    run_at: float | None = None
    max_attempts: int | None = None
    idempotency_key: str | None = None
    fairness_key: str | None = None
    connection: object | None = None
    """A psycopg connection or cursor: enqueue inside its open transaction."""
    unique_key: str | None = None


_DEFAULT_OPTIONS = EnqueueOptions()
"""Options of a plain `task.enqueue(...)` (frozen, so one instance serves every call)."""


def _seconds(value: float | timedelta) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    return checked_seconds(seconds, "delay")


def _timestamp(value: datetime | float) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ConfigurationError(
                "run_at must be a timezone-aware datetime (for example "
                "datetime.now(UTC) + timedelta(minutes=5)); a naive one is ambiguous"
            )
        return checked_time(value.timestamp(), "run_at")
    return checked_time(value, "run_at")


def _find_context_parameter(fn: Callable[..., Any]) -> str | None:
    for name, param in inspect.signature(fn).parameters.items():
        annotation = param.annotation
        if annotation is Context:
            return name
        if isinstance(annotation, str) and annotation.split(".")[-1] == "Context":
            return name
    return None


def _simple_binder(
    signature: inspect.Signature,
) -> Callable[[Sequence[Any], Mapping[str, Any]], bool] | None:
    """A fast "do these arguments bind?" check for the common signature shape.

    `Signature.bind` costs microseconds per call, which shows on the enqueue
    path. For functions whose parameters are all plain positional-or-keyword
    ones this check is exact; it returns False rather than explain, and the
    caller then asks `Signature.bind` for the message. Other shapes get None.
    """
    params = list(signature.parameters.values())
    if any(p.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params):
        return None
    names = [p.name for p in params]
    required = frozenset(p.name for p in params if p.default is inspect.Parameter.empty)
    count = len(names)
    # rest_optional[g]: with g positional arguments and no keywords, the rest may be left out
    rest_optional = [all(name not in required for name in names[g:]) for g in range(count + 1)]

    def binds(args: Sequence[Any], kwargs: Mapping[str, Any]) -> bool:
        given = len(args)
        if given > count:
            return False
        if not kwargs:
            return rest_optional[given]
        positional = names[:given]
        if any(key in positional for key in kwargs):
            return False
        allowed = names[given:]
        if any(key not in allowed for key in kwargs):
            return False
        return all(name in kwargs or name not in required for name in allowed)

    return binds


class Task(Generic[P, R]):
    """A registered task. Call `.enqueue(...)` to run it in the background."""

    def __init__(
        self,
        app: App,
        fn: Callable[P, R],
        *,
        name: str,
        queue: str,
        priority: int,
        max_attempts: int,
        timeout: float | None,
        retry_on: tuple[type[BaseException], ...],
        dont_retry_on: tuple[type[BaseException], ...],
        backoff: Backoff,
        max_snoozes: int = DEFAULT_MAX_SNOOZES,
        fairness_key: FairnessKey | None = None,
        unique: Unique | Mapping[str, Any] | None = None,
        concurrency: int | Concurrency | Mapping[str, Any] | None = None,
        rate_limit: str | RateLimit | Mapping[str, Any] | None = None,
        circuit: str | Circuit | Mapping[str, Any] | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ConfigurationError(f"task {name!r}: max_attempts must be at least 1")
        if isinstance(max_snoozes, bool) or not isinstance(max_snoozes, int) or max_snoozes < 0:
            raise ConfigurationError(
                f"task {name!r}: max_snoozes must be a whole number, 0 or more, not {max_snoozes!r}"
            )
        if timeout is not None:
            timeout = checked_seconds(timeout, f"task {name!r}: timeout", positive=True)
        self.app = app
        self.fn = fn
        self.name = name
        self.queue = queue
        self.priority = priority
        self.max_attempts = max_attempts
        self.max_snoozes = max_snoozes
        self.timeout = timeout
        self.retry_on = retry_on
        self.dont_retry_on = dont_retry_on
        self.backoff = backoff
        if fairness_key is not None and not callable(fairness_key):
            check_fairness_key(fairness_key, f"task {name!r}: fairness_key")
        self.fairness_key = fairness_key
        self.unique = Unique.coerce(unique)
        self.concurrency = Concurrency.coerce(concurrency)
        self.rate_limit = RateLimit.coerce(rate_limit)
        self.circuit = Circuit.coerce(circuit)
        self.is_async = inspect.iscoroutinefunction(fn)
        self.context_parameter = _find_context_parameter(fn)
        signature = inspect.signature(fn)
        self.signature = signature.replace(
            parameters=[p for n, p in signature.parameters.items() if n != self.context_parameter]
        )
        self._binder = _simple_binder(self.signature)
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.queue}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function here and now, as a plain call (no job, no Context)."""
        return self.fn(*args, **kwargs)

    def retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, self.dont_retry_on):
            return False
        return isinstance(exc, self.retry_on)

    def bind(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """Raise `InvalidArgumentsError` unless the arguments bind to the function."""
        if self._binder is not None and self._binder(args, kwargs):
            return
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise InvalidArgumentsError(
                f"arguments do not fit task {self.name!r}{self.signature}: {exc}"
            ) from None

    def build(
        self,
        args: Iterable[Any],
        kwargs: Mapping[str, Any],
        options: EnqueueOptions,
        *,
        trace: Mapping[str, str] | None = None,
    ) -> NewJob:
        """Validate and encode one job; raises before anything is written."""
        return self.build_many([(args, kwargs)], options, trace=trace)[0]

    def build_many(
        self,
        calls: Iterable[tuple[Iterable[Any], Mapping[str, Any]]],
        options: EnqueueOptions,
        *,
        member: bool = False,
        takes_input: bool = False,
        trace: Mapping[str, str] | None = None,
    ) -> list[NewJob]:
        """Validate and encode jobs of (args, kwargs) sharing `options`; raises on the first
        bad one, before anything is written. The options are resolved once for all of them.

        A workflow `member` is neither fair-queued nor unique (the task's fairness key and
        unique key are not used); one that `takes_input` gets its step's input as a first
        positional argument when it runs, so its arguments are checked with one more in front."""
        max_attempts = options.max_attempts or self.max_attempts
        if max_attempts < 1:
            raise ConfigurationError("max_attempts must be at least 1")
        name, max_bytes, binder = self.name, self.app.max_payload_bytes, self._binder
        signer = self.app._signer
        queue = options.queue or self.queue
        priority = self.priority if options.priority is None else options.priority
        run_at, delay, key = options.run_at, options.delay or 0.0, options.idempotency_key
        fair: FairnessKey | None = options.fairness_key or self.fairness_key
        unique = self.unique
        template = None if unique is None else unique.key
        unique_states = DEFAULT_UNIQUE_STATES if unique is None else unique.states
        window = self.app.idempotency_window
        explicit_unique = options.unique_key
        cap = self.concurrency
        per_key = None if cap is None or member else cap.key
        fair_by_key = cap is not None and cap.fair
        rate_key = None if self.rate_limit is None else self.rate_limit.key
        if member:  # a workflow's members are neither fair-queued nor unique
            fair = template = explicit_unique = None
        jobs = []
        for given, kwargs in calls:
            args = given if type(given) is tuple else tuple(given)
            bound = (None, *args) if takes_input else args
            if binder is None or not binder(bound, kwargs):
                self.bind(bound, kwargs)
            payload = encode_payload(args, kwargs, max_bytes=max_bytes, trace=trace)
            if signer is not None:
                payload = signer.sign(name, payload)
            tenant = (
                fair
                if fair is None or isinstance(fair, str)
                else self._fairness_of(fair, args, kwargs)
            )
            limited = None if per_key is None else self._concurrency_key_of(per_key, args, kwargs)
            if rate_key is not None:  # computed again by the worker; refused here if it fails
                self.rate_key_of(rate_key, args, kwargs)
            if fair is None and limited is not None and fair_by_key:
                tenant = limited  # each key's backlog queued fairly beside the others
            if explicit_unique is not None:
                single: str | None = explicit_unique
            elif template is None:
                single = None
            else:
                single = self._unique_of(template, args, kwargs)
            jobs.append(
                NewJob(
                    name,
                    payload,
                    queue,
                    priority,
                    run_at,
                    delay,
                    max_attempts,
                    key,
                    tenant,
                    single,
                    unique_states if single is not None else frozenset(),
                    window,
                    limited,
                )
            )
        return jobs

    def _by_name(
        self,
        compute: Callable[..., object],
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        what: str,
    ) -> object:
        """What a key function (or template) of the task gives for these arguments.

        It is called with every argument by name, as the task's signature binds them (the
        defaults of arguments left out included), so `lambda customer_id, **_: ...` reads
        `customer_id` however the caller passed it.
        """
        try:
            named = dict(self.signature.bind(*args, **kwargs).arguments)
            for name, param in self.signature.parameters.items():
                if name not in named and param.default is not param.empty:
                    named[name] = param.default
            return compute(**named)
        except Exception as exc:
            raise ConfigurationError(
                f"task {self.name!r}: its {what} failed for these arguments: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def _fairness_of(
        self, compute: Callable[..., object], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> str | None:
        """The fairness key the task's `fairness_key` function gives for these arguments."""
        key = self._by_name(compute, args, kwargs, "fairness_key function")
        return check_fairness_key(key, f"task {self.name!r}: the fairness key computed")

    def _unique_of(
        self, template: UniqueKey, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> str | None:
        """The unique key of a job: the template filled with its arguments by name, or what
        the key function gives for them."""
        compute = template.format if isinstance(template, str) else template
        key = self._by_name(compute, args, kwargs, "unique key")
        try:
            return check_unique_key(key, f"task {self.name!r}: the unique key computed")
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None

    def _concurrency_key_of(
        self, key: ConcurrencyKey, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> str | None:
        """The job's concurrency key: its cap's group, ':', and the template filled with its
        arguments by name (or what the key function gives); None when the function gives
        None."""
        compute = key.format if isinstance(key, str) else key
        value = self._by_name(compute, args, kwargs, "concurrency key")
        if value is None:
            return None
        assert self.concurrency is not None
        if not isinstance(value, str):
            raise ConfigurationError(
                f"task {self.name!r}: the concurrency key computed must be a str or None, "
                f"not {value!r}"
            )
        try:
            return check_concurrency_key(
                f"{self.concurrency.group(self.name)}:{value}",
                f"task {self.name!r}: the concurrency key computed",
            )
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None

    def rate_key_of(
        self, key: RateKey, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> str | None:
        """The job's rate-limit key: the template filled with its arguments by name (or what
        the key function gives); None when the function gives None."""
        compute = key.format if isinstance(key, str) else key
        value = self._by_name(compute, args, kwargs, "rate_limit key")
        if value is not None and not isinstance(value, str):
            raise ConfigurationError(
                f"task {self.name!r}: the rate_limit key computed must be a str or None, "
                f"not {value!r}"
            )
        return value

    # -- producing ---------------------------------------------------------
    def options(
        self,
        *,
        queue: str | None = None,
        priority: int | None = None,
        delay: float | timedelta | None = None,
        run_at: datetime | float | None = None,
        max_attempts: int | None = None,
        idempotency_key: str | None = None,
        fairness_key: str | None = None,
        connection: object | None = None,
        unique_key: str | None = None,
    ) -> BoundTask[P, R]:
        """Per-call options: `task.options(delay=60, priority=5).enqueue(...)`.

        `fairness_key` (a non-empty str of at most 200 bytes of UTF-8) names the tenant the
        job is fair-queued for (see docs/fairness.md); it overrides the task's default.

        `unique_key` (a non-empty str of at most 200 bytes of UTF-8) is this job's unique
        key, instead of the one the task's `unique` computes; in the task's unique states,
        or scheduled, available and running for a task without `unique`.

        `connection` (a psycopg connection or cursor, sync or async, on the
        store's PostgreSQL database) writes the job inside that connection's
        transaction: rolled back means never enqueued.
        """
        if delay is not None and run_at is not None:
            raise ConfigurationError("give delay or run_at, not both")
        opts = EnqueueOptions(
            queue=queue,
            priority=priority,
            delay=None if delay is None else _seconds(delay),
            run_at=None if run_at is None else _timestamp(run_at),
            max_attempts=max_attempts,
            idempotency_key=idempotency_key,
            fairness_key=check_fairness_key(fairness_key),
            connection=connection,
            unique_key=check_unique_key(unique_key),
        )
        return BoundTask(self, opts)

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle:
        return BoundTask(self, _DEFAULT_OPTIONS).enqueue(*args, **kwargs)

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature: this task with these arguments, frozen, for `chain`, `group`, `chord`.

        In a workflow, a task after the first step gets the step before's outcome as its
        first positional argument, in front of `args` (see docs/workflows.md).
        """
        return BoundTask(self, _DEFAULT_OPTIONS).s(*args, **kwargs)

    async def enqueue_async(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle:
        return await BoundTask(self, _DEFAULT_OPTIONS).enqueue_async(*args, **kwargs)

    def enqueue_many(self, calls: Iterable[Any]) -> list[JobHandle]:
        return BoundTask(self, _DEFAULT_OPTIONS).enqueue_many(calls)

    async def enqueue_many_async(self, calls: Iterable[Any]) -> list[JobHandle]:
        return await BoundTask(self, _DEFAULT_OPTIONS).enqueue_many_async(calls)


class BoundTask(Generic[P, R]):
    """A task with per-call options, ready to enqueue."""

    def __init__(self, task: Task[P, R], opts: EnqueueOptions) -> None:
        self.task = task
        self.opts = opts

    def options(self, **changes: Any) -> BoundTask[P, R]:
        merged = self.task.options(**changes).opts
        return BoundTask(
            self.task,
            replace(self.opts, **{k: v for k, v in vars_of(merged).items() if v is not None}),
        )

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """`Task.s` with these options (queue, priority, max_attempts: a workflow's member
        runs when its step is reached, and takes no delay, run_at or keys)."""
        from .workflows.canvas import Signature

        return Signature.of(self.task, self.opts, args, kwargs)

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle:
        if tracing.active():
            return self.enqueue_many_traced([(args, kwargs)])[0]
        job = self.task.build(args, kwargs, self.opts)
        return self.task.app._enqueue([job], self.opts.connection)[0]

    async def enqueue_async(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle:
        if tracing.active():
            return (await self.enqueue_many_traced_async([(args, kwargs)]))[0]
        job = self.task.build(args, kwargs, self.opts)
        return (await self.task.app._enqueue_async([job], self.opts.connection))[0]

    def enqueue_many(self, calls: Iterable[Any]) -> list[JobHandle]:
        """Enqueue many jobs in one write: all of them, or (on error) none.

        Each item is a tuple or list of positional arguments, a dict of keyword
        arguments, or a `call(*args, **kwargs)`.
        """
        if tracing.active():
            return self.enqueue_many_traced([_split(call) for call in calls])
        jobs = self.task.build_many(map(_split, calls), self.opts)
        return self.task.app._enqueue(jobs, self.opts.connection) if jobs else []

    async def enqueue_many_async(self, calls: Iterable[Any]) -> list[JobHandle]:
        """`enqueue_many` without blocking the event loop: one write, all or none."""
        if tracing.active():
            return await self.enqueue_many_traced_async([_split(call) for call in calls])
        jobs = self.task.build_many(map(_split, calls), self.opts)
        return await self.task.app._enqueue_async(jobs, self.opts.connection) if jobs else []

    def enqueue_many_traced(self, calls: list[tuple[Any, Any]]) -> list[JobHandle]:
        """An enqueue inside its `send` span, the jobs carrying its trace context."""
        if not calls:
            return []
        with tracing.sending(self.task.name, self._queue, len(calls)) as span:
            jobs = self.task.build_many(calls, self.opts, trace=span.carrier)
            handles = self.task.app._enqueue(jobs, self.opts.connection)
            span.sent([h.id for h in handles])
        return handles

    async def enqueue_many_traced_async(self, calls: list[tuple[Any, Any]]) -> list[JobHandle]:
        if not calls:
            return []
        with tracing.sending(self.task.name, self._queue, len(calls)) as span:
            jobs = self.task.build_many(calls, self.opts, trace=span.carrier)
            handles = await self.task.app._enqueue_async(jobs, self.opts.connection)
            span.sent([h.id for h in handles])
        return handles

    @property
    def _queue(self) -> str:
        return self.opts.queue or self.task.queue


def vars_of(opts: EnqueueOptions) -> dict[str, Any]:
    return {name: getattr(opts, name) for name in EnqueueOptions.__slots__}


def _split(item: Any) -> tuple[tuple[Any, ...], Mapping[str, Any]]:
    if isinstance(item, Call):
        return item.args, item.kwargs
    if type(item) is tuple:
        return item, {}
    if isinstance(item, tuple | list):
        return tuple(item), {}
    if isinstance(item, Mapping):
        return (), item
    return (item,), {}
