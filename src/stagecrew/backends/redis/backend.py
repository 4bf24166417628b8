"""The Redis engine (`redis://host:6379/0?prefix=stagecrew`): raw speed, many machines.

URL options (besides redis-py's own, such as `socket_timeout`): `prefix` (default `stagecrew`)
names the keys, so several stores share one Redis; `cluster=1` talks to a Redis Cluster;
`allow_eviction=1` lets workers start on a Redis whose eviction policy may evict job keys;
`keepalive_idle`, `keepalive_interval`, `keepalive_count` tune TCP keepalives. Every call is
bounded: redis-py's `socket_timeout` (default 10 s), `socket_connect_timeout` (5 s),
`health_check_interval` (30 s) and `socket_keepalive` (on) are set unless the URL sets them
(see keys.py and docs/redis.md).

Every state change is one Lua script (`lua/*.lua`), so it is atomic by construction; this
module only builds the scripts' arguments, sends them, and turns replies into records. The
synchronous and the asynchronous (`redis.asyncio`) entry points run the same scripts through
the same plans (see `_Step`), so they cannot drift apart.

Key layout
----------
P is the key prefix (`?prefix=`, default `stagecrew`); T is a queue's hash tag,
`{P:<queue, percent-encoded>}`, so that every key of one queue lives in one Cluster slot::

    {P}:ids            STRING  the job id counter (INCRBY)
    {P}:queues         SET     every queue that ever got a job (stats, rescue, listing)
    {P}:idempotency    HASH    idempotency key -> job id (single Redis; see Cluster below)
    {P}:layout         STRING  the version of this layout ("1")
    T:job:<id>         HASH    one job: task, queue, state, payload, priority, run_at, attempt,
                               max_attempts, enqueued_at, started_at, finished_at, lease_owner,
                               lease_expires_at, idempotency_key, cancel_requested ("1"), lost,
                               claims (the fencing token of its latest claim), result, errors
                               (a JSON array); absent or '' fields are None / 0
    T:available        ZSET    due jobs; score = priority, member = "<run_at µs, 17 digits>:<id>"
                               (the id behind a character giving its length), so the set's
                               order is the claim order (priority, run_at, id)
    T:scheduled        ZSET    delayed and retrying jobs; score = run_at
    T:due              ZSET    scheduled jobs whose run_at has passed, moved there by a claim and
                               ordered like T:available; still in state scheduled until claimed
    T:running          ZSET    claimed jobs; score = lease expiry (the rescuer's index, and what
                               release_worker reads whole: there is no index by worker)
    T:succeeded        ZSET    score = finished_at (retention)
    T:dead             ZSET    the dead-letter queue; score = finished_at
    T:cancelled        ZSET    score = finished_at
    T:all              ZSET    every job of the queue; score = id (listing, newest first)
    T:registered       STRING  "1" once the queue is in {P}:queues
    T:wake             channel a message whenever work becomes due (enqueue, retry, hand-back,
                               rescue, requeue)

Each job is in exactly one of the state indexes, the one its `state` field names (a scheduled
job in T:scheduled or T:due); the scripts keep them consistent. A claim moves a job from
T:available or T:due to T:running in the same script that sets its lease ("never pop and
hope"): a worker that dies holding it leaves it in T:running, where the rescuer finds it once
the lease has expired. Heartbeats and outcomes are
fenced by (job id, claim token), as the `Backend` contract says: `claims` counts every claim of
the job, only a claim changes it (by one more), and a requeue, hand-back or rescue keeps it.

Ids, and finding a job by id. Ids come from the single counter `{P}:ids`, so they grow across
all queues in enqueue order. On a single Redis the enqueue script increments it itself (one
round trip per enqueue); on Cluster the counter lives in its own slot, so the ids of a batch are
reserved with INCRBY first and passed to the queue's script. A job's key names its queue, so
operations given only an id (get, cancel, heartbeat, ack) need the queue: this process
remembers the queue of every job it enqueued or claimed (a bounded map), and otherwise asks
every queue of `{P}:queues` in one pipeline (EXISTS T:job:<id>).

Redis Cluster (`?cluster=1`, through redis-py's cluster clients). Every script touches the keys
of one queue only, hence one slot; operations over several queues call one script per queue,
and queues spread over the nodes. Two store-wide structures do not fit that rule: the id
counter (handled as above) and the idempotency index, which on Cluster is kept per queue
(T:idempotency), so there an idempotency key deduplicates within its queue only. On a single
Redis (with or without replicas) it is store-wide, exactly like the other engines, and the
enqueue script updates both in the same step. A batch that spans queues is written in one
MULTI/EXEC on a single Redis (all or nothing); on Cluster it is one atomic write per queue.
Wake-ups are classic pub/sub, which a Cluster forwards to every node; `wait` listens on the
node named in the URL. A Cluster failover with asynchronous replication can lose the last
writes of a node like a crash does, and can put the id counter behind ids already used on
another node; run Cluster nodes with AOF.

Time. The Redis server's clock (`TIME`, inside the scripts) decides due times, lease expiry and
timestamps, and relative delays are added to it there, so workers with skewed clocks still
agree. When the backend's clock is a `FakeClock` (tests), its time is passed to every script
instead.

Wake-ups. Scripts that make work due publish on T:wake; `wait` keeps one subscription per event
loop (messages published while a worker was busy wait in the socket, so none is missed) and
returns on a message or after its timeout. After a Redis restart the subscription is made again,
with backoff, and the first `wait` after any (re)subscription returns at once so the caller
claims again rather than trusting a subscription that may have missed a message.

Durability: what a Redis crash loses. With `appendonly yes` and `appendfsync always`, nothing
acknowledged; with `appendfsync everysec` (Redis' default for AOF), up to about one second of
writes; with RDB snapshots only, everything since the last snapshot; with no persistence,
everything. A lost enqueue means a lost job; a lost ack means the job runs again. `preflight`
reports the setting at worker start and refuses an eviction policy that may evict job keys.

Out of memory. The enqueue script carries no `allow-oom` flag, so under `maxmemory` with
`noeviction` Redis refuses it before it runs: enqueue raises `EnqueueError` and nothing is
written. Every other script is flagged `allow-oom`: a full Redis stops producers, but workers
keep claiming, recording outcomes and pruning, which is how it gets out of that state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import Counter
from collections.abc import AsyncGenerator, Generator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, OutOfMemoryError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from ...clock import Clock, is_fake
from ...errors import (
    BackendError,
    ConfigurationError,
    EnqueueError,
    SchemaOutOfDateError,
    StagecrewError,
)
from ...job import (
    ClaimedJob,
    EnqueuedJob,
    Job,
    JobRef,
    JobState,
    NewJob,
)
from ..base import (
    DEFAULT_MAX_LOST,
    Ack,
    Backend,
    Capabilities,
    HeartbeatReply,
    JobFilter,
    QueueStats,
    RescueReport,
    Retention,
    check_new_jobs,
    check_release_arguments,
)
from ..records import salvage_claim
from . import scripts
from .keys import Keys, QueueKeys, parse_url
from .records import (
    Arg,
    filter_json,
    hash_fields,
    job_from_hash,
    new_job_fields,
    opt_float,
    pairs,
    text,
)
from .scripts import Script
from .wire import AsyncClusterWire, AsyncWire, ClusterWire, SyncWire

log = logging.getLogger("stagecrew.redis")

T = TypeVar("T")

LAYOUT_VERSION = 1
MIN_REDIS_VERSION = (7, 0)
"""Script flags (`#!lua` lines) need Redis 7."""

PROMOTE_BATCH = 1000
"""Most scheduled jobs one claim moves to T:due (earliest run_at first); when more are due at
once, the rest join at the next claims, so priority orders them only once they are there."""
RESCUE_BATCH = 1000
SCAN_BATCH = 1000
"""Index entries one requeue, purge or list call looks at."""
LIST_PAGE = 500
SUMMARY_BANDS = 1000
"""Priority bands `stats` walks to find a queue's oldest available job."""
MAX_REMEMBERED = 200_000
"""Job ids whose queue this process remembers (enqueued or claimed here)."""

WAIT_ERROR_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)

_STATE_ORDER = (
    JobState.AVAILABLE,
    JobState.SCHEDULED,
    JobState.RUNNING,
    JobState.SUCCEEDED,
    JobState.DEAD,
    JobState.CANCELLED,
)
_REQUEUEABLE = (JobState.DEAD, JobState.CANCELLED)
_FINAL = (JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED)


# -- plans: what to send, independent of how ---------------------------------------


@dataclass(frozen=True, slots=True)
class _Eval:
    script: Script
    keys: tuple[str, ...]
    args: tuple[Arg, ...]


@dataclass(frozen=True, slots=True)
class _Command:
    args: tuple[Arg, ...]


_Call = _Eval | _Command


@dataclass(frozen=True, slots=True)
class _Step:
    """Calls sent together (one pipeline); `atomic` wraps them in MULTI/EXEC."""

    calls: tuple[_Call, ...]
    atomic: bool = False


_Plan = Generator[_Step, list[Any], T]
"""An operation as a generator: it yields steps and receives each step's replies.

`_run` sends the steps over the synchronous wire, `_run_async` over this event loop's
asynchronous one (see `wire.py`): both run the same plans, hence the same scripts.
"""


def _eval(name: str, queue: QueueKeys, *args: Arg) -> _Eval:
    return _Eval(scripts.script(name), queue.keys, (queue.tag, *args))


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, OutOfMemoryError) or (
        isinstance(exc, ResponseError) and "OOM" in str(exc)[:40]
    )


def _first_error(results: list[Any]) -> list[Any]:
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def _version(number: str) -> tuple[int, ...]:
    return tuple(int(p) for p in number.split(".")[:2] if p.isdigit())


# -- the asynchronous side: one client and one subscription per event loop -------------
@dataclass(eq=False)
class _AsyncSide:
    wire: AsyncWire | AsyncClusterWire
    client: redis.asyncio.Redis
    """Only for the wake-up subscription (redis-py's PubSub)."""
    pubsub: Any = None
    channels: frozenset[str] = frozenset()
    listening: asyncio.Lock = field(default_factory=asyncio.Lock)
    failures: int = 0
    closed: bool = False
    keeper: AsyncGenerator[None, None] | None = field(default=None, repr=False)

    async def reset_subscription(self) -> None:
        pubsub, self.pubsub, self.channels = self.pubsub, None, frozenset()
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        await self.reset_subscription()
        with contextlib.suppress(Exception):
            await self.wire.aclose()
        with contextlib.suppress(Exception):
            await self.client.aclose()


async def _close_when_the_loop_ends(side: _AsyncSide) -> AsyncGenerator[None, None]:
    """Suspended for the loop's lifetime; `asyncio.run` closes it (and the client) at the end."""
    try:
        yield
    finally:
        await side.aclose()


class RedisBackend(Backend):
    """Jobs in Redis, every state change one Lua script; see the module docstring."""

    capabilities = Capabilities(cross_process=True, server_clock=True, instant_wakeup=True)

    def __init__(self, url: str, clock: Clock | None = None) -> None:
        super().__init__(clock)
        self.url = url
        self._settings = parse_url(url)
        self.prefix = self._settings.prefix
        self._cluster = self._settings.cluster
        self._cluster_layout = self._settings.cluster_layout
        self._keys = Keys(self.prefix, per_queue_globals=self._cluster_layout)
        self._lock = threading.Lock()
        self._where: dict[int, str] = {}
        url, options = self._settings.redis_url, self._client_options()
        self._wire: SyncWire | ClusterWire
        self._client: Any
        if self._cluster:
            self._wire = ClusterWire(url, options)
            self._client = self._wire.client
        else:
            self._wire = SyncWire(url, options)
            self._client = redis.Redis.from_url(url, **options)
        self._sides: dict[asyncio.AbstractEventLoop, _AsyncSide] = {}

    def __repr__(self) -> str:
        return f"<RedisBackend {self._settings.display_url} prefix={self.prefix!r}>"

    def _client_options(self) -> dict[str, Any]:
        # RESP2: scripts' replies keep their plain shapes. No retries inside redis-py: a write
        # is never sent twice behind the caller's back, and the producer fails at once when
        # Redis is down (the worker retries with its own backoff). A connection Redis closed
        # (a restart) is noticed and replaced before use (see wire.py). Timeouts bound every
        # call (keys.TIMEOUT_DEFAULTS); the wake-up subscription's reads wait for their own
        # timeout instead (see `wait`), so an idle worker's long wait is never cut short.
        return {
            **self._settings.connection_options,
            "protocol": 2,
            "retry": Retry(NoBackoff(), 0),
        }

    # -- drivers -----------------------------------------------------------------
    def _now(self) -> str:
        return repr(self.clock.now()) if is_fake(self.clock) else ""

    def _run(self, plan: _Plan[T], operation: str) -> T:
        try:
            step = next(plan)
            while True:
                step = plan.send(self._execute(step))
        except StopIteration as done:
            result: T = done.value
            return result
        except RedisError as exc:
            raise self._failure(operation, exc) from exc
        except BackendError as exc:
            if operation == "enqueue":
                raise EnqueueError(str(exc)) from exc
            raise

    async def _run_async(self, plan: _Plan[T], operation: str) -> T:
        try:
            side = await self._side()
            step = next(plan)
            while True:
                step = plan.send(await self._execute_async(side.wire, step))
        except StopIteration as done:
            result: T = done.value
            return result
        except RedisError as exc:
            raise self._failure(operation, exc) from exc
        except BackendError as exc:
            if operation == "enqueue":
                raise EnqueueError(str(exc)) from exc
            raise

    def _execute(self, step: _Step) -> list[Any]:
        wire = self._wire
        if step.atomic:
            return _first_error(wire.transaction([self._whole(c) for c in step.calls]))
        commands = [self._command(c) for c in step.calls]
        if len(commands) == 1:
            try:
                return [wire.call(commands[0])]
            except NoScriptError:
                wire.load_script(self._script_of(step.calls[0]).text)
                return [wire.call(commands[0])]
        results = wire.pipeline(commands)
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:
            for source in {self._script_of(step.calls[i]).text for i in missing}:
                wire.load_script(source)
            again = wire.pipeline([commands[i] for i in missing])
            for i, result in zip(missing, again, strict=True):
                results[i] = result
        return _first_error(results)

    async def _execute_async(self, wire: AsyncWire | AsyncClusterWire, step: _Step) -> list[Any]:
        if step.atomic:
            return _first_error(await wire.transaction([self._whole(c) for c in step.calls]))
        commands = [self._command(c) for c in step.calls]
        if len(commands) == 1:
            try:
                return [await wire.call(commands[0])]
            except NoScriptError:
                await wire.load_script(self._script_of(step.calls[0]).text)
                return [await wire.call(commands[0])]
        results = await wire.pipeline(commands)
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:
            for source in {self._script_of(step.calls[i]).text for i in missing}:
                await wire.load_script(source)
            again = await wire.pipeline([commands[i] for i in missing])
            for i, result in zip(missing, again, strict=True):
                results[i] = result
        return _first_error(results)

    @staticmethod
    def _command(call: _Call) -> tuple[Arg, ...]:
        if isinstance(call, _Command):
            return call.args
        return ("EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args)

    @staticmethod
    def _whole(call: _Call) -> tuple[Arg, ...]:
        if isinstance(call, _Command):
            return call.args
        return ("EVAL", call.script.text, len(call.keys), *call.keys, *call.args)

    @staticmethod
    def _script_of(call: _Call) -> Script:
        assert isinstance(call, _Eval)
        return call.script

    def _failure(self, operation: str, exc: RedisError) -> StagecrewError:
        where = self._settings.display_url
        if _is_oom(exc):
            hint = (
                "Redis is out of memory (maxmemory reached) and refused the write: nothing "
                "was written. Free memory, raise maxmemory, or keep finished jobs for less "
                "time (App(retention=...))."
            )
        elif isinstance(exc, RedisConnectionError | RedisTimeoutError):
            hint = "Check that Redis is running and reachable at this URL."
            if operation == "enqueue":
                hint += (
                    " If the connection broke after the request was sent, the jobs may have "
                    "been stored; an idempotency key makes a retry safe."
                )
        else:
            hint = ""
        reason = str(exc).rstrip(". ")
        if operation == "enqueue":
            return EnqueueError(f"could not enqueue jobs into Redis at {where}: {reason}. {hint}")
        return BackendError(f"{operation} failed on Redis at {where}: {reason}. {hint}".rstrip())

    # -- the async side ------------------------------------------------------------
    async def _side(self) -> _AsyncSide:
        loop = asyncio.get_running_loop()
        side = self._sides.get(loop)
        if side is not None and not side.closed:
            return side
        with self._lock:
            for old in [lp for lp in self._sides if lp.is_closed()]:
                del self._sides[old]
            url, options = self._settings.redis_url, self._client_options()
            wire = AsyncClusterWire(url, options) if self._cluster else AsyncWire(url, options)
            # Pub/sub messages reach every node of a Cluster: the node in the URL serves.
            side = _AsyncSide(wire, redis.asyncio.Redis.from_url(url, **options))
            self._sides[loop] = side
        side.keeper = _close_when_the_loop_ends(side)
        await side.keeper.asend(None)
        return side

    # -- bookkeeping -----------------------------------------------------------------
    def _remember(self, job_id: int, queue: str) -> None:
        self._where[job_id] = queue
        if len(self._where) > MAX_REMEMBERED:
            self._forget_oldest()

    def _remember_many(self, ids: Iterable[int], queue: str) -> None:
        self._where.update(dict.fromkeys(ids, queue))
        if len(self._where) > MAX_REMEMBERED:
            self._forget_oldest()

    def _forget_oldest(self) -> None:
        with self._lock:
            where = self._where
            for old in list(where)[: len(where) - MAX_REMEMBERED * 9 // 10]:
                where.pop(old, None)

    def _queues_plan(self) -> _Plan[list[str]]:
        [members] = yield _Step((_Command(("SMEMBERS", self._keys.queues)),))
        return sorted(text(m) for m in members)

    def _queues_for(self, wanted: Iterable[str] | None) -> _Plan[list[str]]:
        known = yield from self._queues_plan()
        if wanted is None:
            return known
        chosen = set(wanted)
        return [q for q in known if q in chosen]

    def _locate(self, ids: Iterable[int], *, trust_memory: bool = True) -> _Plan[dict[int, str]]:
        """The queue of each id that exists; ids of no job are left out."""
        found: dict[int, str] = {}
        unknown: list[int] = []
        for job_id in ids:
            queue = self._where.get(job_id) if trust_memory else None
            if queue is None:
                unknown.append(job_id)
            else:
                found[job_id] = queue
        if unknown:
            queues = yield from self._queues_plan()
            if queues:
                calls = tuple(
                    _Command(("EXISTS", self._keys.queue(q).job(i)))
                    for i in unknown
                    for q in queues
                )
                replies = iter((yield _Step(calls)))
                for job_id in unknown:
                    for queue in queues:
                        if next(replies):
                            found[job_id] = queue
                            self._remember(job_id, queue)
        return found

    def _register(self, queue: QueueKeys) -> _Plan[None]:
        """List the queue in {P}:queues, then mark it: a job never exists in an unlisted queue."""
        yield _Step((_Command(("SADD", self._keys.queues, queue.name)),))
        yield _Step((_Command(("SET", queue.registered, "1")),))

    # -- life cycle --------------------------------------------------------------------
    def migrate(self) -> None:
        """Record the key layout version; the keys themselves appear as jobs are written."""
        try:
            self._client.set(self._keys.layout, str(LAYOUT_VERSION), nx=True)
            self._check_layout(self._client.get(self._keys.layout))
        except RedisError as exc:
            raise self._failure("migrate", exc) from exc

    def prepare(self) -> None:
        """Check the Redis version and the key layout (recording it in a new store).

        An unreachable Redis is left for later: the operations report it in their own terms
        (`EnqueueError` from enqueue, `BackendError` from the rest).
        """
        try:
            versions = [text(n.info("server").get("redis_version", "0")) for n in self._nodes()]
            self._client.set(self._keys.layout, str(LAYOUT_VERSION), nx=True)
            stored = self._client.get(self._keys.layout)
        except RedisError as exc:
            log.debug("could not check the Redis store yet: %s", exc)
            return
        for version in versions:
            if _version(version) < MIN_REDIS_VERSION:
                raise ConfigurationError(
                    f"Redis at {self._settings.display_url} is version {version}; stagecrew "
                    "needs Redis 7.0 or newer (its scripts use Redis 7 script flags)"
                )
        self._check_layout(stored)

    def _nodes(self) -> list[redis.Redis]:
        """A client per server to check: the one Redis, or every primary of a Cluster."""
        if not self._cluster:
            return [self._client]
        return [n.redis_connection for n in self._client.get_primaries()]

    def _check_layout(self, stored: Any) -> None:
        version = int(stored or 0)
        if version > LAYOUT_VERSION:
            raise BackendError(
                f"the Redis store at {self._settings.display_url} (prefix {self.prefix!r}) has "
                f"key layout {version}, newer than this stagecrew knows ({LAYOUT_VERSION}); "
                "upgrade stagecrew on this machine"
            )
        if version < LAYOUT_VERSION:
            raise SchemaOutOfDateError(
                f"the Redis store at {self._settings.display_url} has key layout {version}; "
                f"run `stagecrew migrate` to upgrade it to {LAYOUT_VERSION}"
            )

    def preflight(self) -> list[str]:
        """Persistence and eviction settings, read at worker start.

        Raises `ConfigurationError` for an eviction policy that may evict job keys (any
        `allkeys-*` policy) unless the URL says `?allow_eviction=1`. `volatile-*` policies are
        accepted: they evict only keys with a TTL, and stagecrew never sets one. Warns when
        Redis persists nothing, or only RDB snapshots. Where CONFIG is disabled (managed Redis),
        falls back to INFO and says what it could not check.
        """
        try:
            nodes = self._nodes()
        except RedisError as exc:
            raise self._failure("preflight", exc) from exc
        warnings: list[str] = []
        for node in nodes:
            for warning in self._preflight_node(node):
                if warning not in warnings:
                    warnings.append(warning)
        return warnings

    def _preflight_node(self, node: redis.Redis) -> list[str]:
        where = self._settings.display_url
        if self._cluster:
            kwargs = node.connection_pool.connection_kwargs
            where = f"{where} (node {kwargs.get('host')}:{kwargs.get('port')})"
        warnings: list[str] = []
        settings: dict[str, str] = {}
        try:
            try:
                raw = node.config_get("appendonly", "appendfsync", "save", "maxmemory-policy")
                settings = {text(k): text(v) for k, v in raw.items()}
            except ResponseError as exc:
                warnings.append(
                    f"Redis at {where} does not allow CONFIG GET ({exc}); read INFO instead: "
                    "RDB snapshot rules and appendfsync could not be checked"
                )
                info = node.info("persistence")
                memory = node.info("memory")
                settings["appendonly"] = "yes" if int(info.get("aof_enabled", 0)) else "no"
                settings["maxmemory-policy"] = text(memory.get("maxmemory_policy", "unknown"))
            server = node.info("server")
        except RedisError as exc:
            raise self._failure("preflight", exc) from exc
        version = text(server.get("redis_version", "0"))
        if _version(version) < MIN_REDIS_VERSION:
            raise ConfigurationError(
                f"Redis at {where} is version {version}; stagecrew needs Redis 7.0 or newer"
            )
        policy = settings.get("maxmemory-policy", "unknown")
        if policy != "noeviction" and not policy.startswith("volatile-"):
            message = (
                f"Redis at {where} uses maxmemory-policy {policy!r}, which may evict stagecrew's "
                "job keys when memory runs short: jobs would vanish without a trace"
            )
            if not self._settings.allow_eviction:
                raise ConfigurationError(
                    f"{message}. Set `maxmemory-policy noeviction` (or a volatile-* policy: "
                    "stagecrew never sets a TTL on its keys), or add ?allow_eviction=1 to the "
                    "store URL to accept the risk."
                )
            warnings.append(f"{message} (allowed by allow_eviction=1)")
        aof = settings.get("appendonly") == "yes"
        save = settings.get("save")
        if aof:
            if settings.get("appendfsync") == "no":
                warnings.append(
                    f"Redis at {where} writes its append-only file without fsync "
                    "(appendfsync no): a crash of the machine may lose the last ~30 s of jobs "
                    "and outcomes"
                )
        elif save == "":
            warnings.append(
                f"!!! Redis at {where} persists NOTHING (appendonly no, no RDB snapshots): a "
                "Redis restart loses every job, queued or running. Turn on "
                "`appendonly yes` (with appendfsync everysec or always) for durable jobs."
            )
        elif save is not None:
            warnings.append(
                f"Redis at {where} persists RDB snapshots only (save {save!r}): a crash loses "
                "every job enqueued and every outcome recorded since the last snapshot. Turn "
                "on `appendonly yes` for durable jobs."
            )
        return warnings

    def close(self) -> None:
        super().close()
        with contextlib.suppress(Exception):
            self._client.close()
        with contextlib.suppress(Exception):
            self._wire.close()
        with self._lock:
            sides, self._sides = self._sides, {}
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for loop, side in sides.items():
            if side.closed or loop.is_closed():
                continue
            if loop is running:
                loop.create_task(side.aclose())
            elif loop.is_running():
                asyncio.run_coroutine_threadsafe(side.aclose(), loop)
            else:
                with contextlib.suppress(Exception):
                    loop.run_until_complete(side.aclose())

    # -- producer ------------------------------------------------------------------
    def enqueue(self, jobs: Sequence[NewJob]) -> list[EnqueuedJob]:
        return self._run(self._enqueue_plan(jobs), "enqueue")

    async def enqueue_async(self, jobs: Sequence[NewJob]) -> list[EnqueuedJob]:
        return await self._run_async(self._enqueue_plan(jobs), "enqueue")

    def _enqueue_plan(self, jobs: Sequence[NewJob]) -> _Plan[list[EnqueuedJob]]:
        if not jobs:
            return []
        check_new_jobs(jobs)
        now = self._now()
        # Every field is read and encoded before anything is sent: a bad job fails the batch
        # while nothing is written. Per job: reserved id ('' here), then new_job_fields(job).
        first_queue = jobs[0].queue
        args: list[Arg] = [now, first_queue, len(jobs)]
        one_queue = True
        for new in jobs:
            args.append("")
            args.extend(new_job_fields(new))
            one_queue = one_queue and new.queue == first_queue
        if not one_queue or self._cluster_layout:
            rows = [(new.queue, new.idempotency_key, new_job_fields(new)) for new in jobs]
            queues = list(dict.fromkeys(row[0] for row in rows))
            return (yield from self._enqueue_reserved(rows, queues, now))
        queue = self._keys.queue(first_queue)
        call = _eval(scripts.ENQUEUE, queue, *args)
        for _ in range(2):
            [reply] = yield _Step((call,))
            if reply[0] == 0:
                yield from self._register(queue)
                continue
            if reply[0] != 1:
                raise self._refused(queue, reply)
            return self._enqueued(queue.name, reply[2:])
        raise BackendError(f"queue {queue.name!r} could not be registered")

    def _enqueue_reserved(
        self, rows: list[tuple[str, str | None, tuple[Arg, ...]]], queues: list[str], now: str
    ) -> _Plan[list[EnqueuedJob]]:
        """A batch over several queues (or any batch on Cluster): ids reserved first.

        Jobs repeating an idempotency key of an earlier job of the batch are answered here, so
        the first one wins wherever its queue's script runs.
        """
        first_with_key: dict[str, int] = {}
        same_as: dict[int, int] = {}
        send: list[int] = []
        for i, (_, key, _) in enumerate(rows):
            if key is not None:
                if key in first_with_key:
                    same_as[i] = first_with_key[key]
                    continue
                first_with_key[key] = i
            send.append(i)
        keys = [self._keys.queue(q) for q in queues]
        replies = yield _Step(
            (
                _Command(("INCRBY", self._keys.ids, len(send))),
                *(_Command(("EXISTS", k.registered)) for k in keys),
            )
        )
        first_id = int(replies[0]) - len(send) + 1
        for queue, registered in zip(keys, replies[1:], strict=True):
            if not registered:
                yield from self._register(queue)
        ids = {i: first_id + n for n, i in enumerate(send)}
        per_queue: dict[str, list[int]] = {q: [] for q in queues}
        for i in send:
            per_queue[rows[i][0]].append(i)
        calls: list[_Call] = []
        for queue in keys:
            members = per_queue[queue.name]
            args: list[Arg] = [now, queue.name, len(members)]
            for i in members:
                args.append(str(ids[i]))
                args.extend(rows[i][2])
            calls.append(_eval(scripts.ENQUEUE, queue, *args))
        replies = yield _Step(tuple(calls), atomic=not self._cluster_layout)
        out: list[EnqueuedJob | None] = [None] * len(rows)
        for queue, reply in zip(keys, replies, strict=True):
            if reply[0] != 1:
                raise self._refused(queue, reply)
            entries = self._enqueued(queue.name, reply[2:])
            for i, entry in zip(per_queue[queue.name], entries, strict=True):
                out[i] = entry
        for i, first in same_as.items():
            original = out[first]
            assert original is not None
            out[i] = EnqueuedJob(original.id, created=False)
        return [entry for entry in out if entry is not None]

    def _refused(self, queue: QueueKeys, reply: list[Any]) -> BackendError:
        if reply[0] == -1:
            return BackendError(
                f"job id {text(reply[1])} is taken already in queue {queue.name!r}, so the id "
                f"counter {self._keys.ids} is behind the stored jobs (was the store restored "
                "from an older copy, or did a Cluster node fail over?); nothing was written. "
                "Set the counter to at least the highest stored id."
            )
        return BackendError(
            f"queue {queue.name!r} is not registered in {self._keys.queues} (were keys deleted "
            "while enqueueing?); nothing was written"
        )

    def _enqueued(self, queue: str, flat: Sequence[Any]) -> list[EnqueuedJob]:
        ids = list(map(int, flat[::2]))
        entries = [
            EnqueuedJob(job_id, created=created == 1)
            for job_id, created in zip(ids, flat[1::2], strict=True)
        ]
        self._remember_many(ids, queue)
        return entries

    # -- worker ----------------------------------------------------------------------
    def claim(
        self, queues: Sequence[str], worker: str, limit: int, lease_seconds: float
    ) -> list[ClaimedJob]:
        return self._run(self._claim_plan(queues, worker, limit, lease_seconds), "claim")

    async def claim_async(
        self, queues: Sequence[str], worker: str, limit: int, lease_seconds: float
    ) -> list[ClaimedJob]:
        return await self._run_async(
            self._claim_plan(queues, worker, limit, lease_seconds), "claim"
        )

    def _claim_plan(
        self, queues: Sequence[str], worker: str, limit: int, lease_seconds: float
    ) -> _Plan[list[ClaimedJob]]:
        wanted = list(dict.fromkeys(queues))
        if limit <= 0 or not wanted:
            return []
        now = self._now()
        shares: dict[str, int]
        if len(wanted) == 1:
            shares = {wanted[0]: limit}
        else:
            # Peek at each queue's head, merge, then claim from each queue what it won.
            keys = [self._keys.queue(q) for q in wanted]
            replies = yield _Step(
                tuple(_eval(scripts.PEEK, k, now, limit, PROMOTE_BATCH) for k in keys)
            )
            heads: list[tuple[float, bytes, str]] = []
            for queue, reply in zip(wanted, replies, strict=True):
                for i in range(0, len(reply), 2):
                    heads.append((float(reply[i]), reply[i + 1], queue))
            heads.sort()
            shares = dict(Counter(queue for _, _, queue in heads[:limit]))
            if not shares:
                return []
        lease = repr(float(lease_seconds))
        replies = yield _Step(
            tuple(
                _eval(scripts.CLAIM, self._keys.queue(q), now, worker, n, lease, PROMOTE_BATCH)
                for q, n in shares.items()
            )
        )
        claimed: list[ClaimedJob] = []
        for queue, reply in zip(shares, replies, strict=True):
            started, expires = float(reply[0]), float(reply[1])
            ids = [int(i) for i in reply[2::10]]
            rows = list(zip(ids, *(reply[2 + k :: 10] for k in range(1, 10)), strict=True))
            try:
                claimed += [
                    ClaimedJob(
                        id=job_id,
                        task=task.decode(),
                        queue=queue,
                        payload=payload.decode(),
                        attempt=attempt,
                        token=token,
                        max_attempts=int(most),
                        priority=int(priority),
                        enqueued_at=float(enqueued),
                        run_at=float(run_at),
                        started_at=started,
                        lease_expires_at=expires,
                        lost=lost,
                    )
                    for (
                        job_id,
                        attempt,
                        task,
                        payload,
                        most,
                        priority,
                        enqueued,
                        run_at,
                        lost,
                        token,
                    ) in rows
                ]
            except (AttributeError, TypeError, ValueError):  # a damaged job hash
                claimed += [
                    salvage_claim(
                        job_id=r[0],
                        attempt=r[1],
                        token=r[9],
                        queue=queue,
                        task=r[2],
                        payload=r[3],
                        max_attempts=r[4],
                        priority=r[5],
                        enqueued_at=r[6],
                        run_at=r[7],
                        started_at=started,
                        lease_expires_at=expires,
                        lost=r[8],
                    )
                    for r in rows
                ]
            self._remember_many(ids, queue)
        if len(shares) > 1:
            claimed.sort(key=lambda c: (c.priority, c.run_at, c.id))
        return claimed

    def heartbeat(
        self, worker: str, refs: Sequence[JobRef], lease_seconds: float
    ) -> HeartbeatReply:
        return self._run(self._heartbeat_plan(worker, refs, lease_seconds), "heartbeat")

    async def heartbeat_async(
        self, worker: str, refs: Sequence[JobRef], lease_seconds: float
    ) -> HeartbeatReply:
        return await self._run_async(self._heartbeat_plan(worker, refs, lease_seconds), "heartbeat")

    def _heartbeat_plan(
        self, worker: str, refs: Sequence[JobRef], lease_seconds: float
    ) -> _Plan[HeartbeatReply]:
        lost: set[int] = set()
        cancel: set[int] = set()
        pending = list(refs)
        now, lease = self._now(), repr(float(lease_seconds))
        for trust_memory in (True, False):
            if not pending:
                break
            where = yield from self._locate({r.id for r in pending}, trust_memory=trust_memory)
            groups: dict[str, list[JobRef]] = {}
            for ref in pending:
                queue = where.get(ref.id)
                if queue is None:
                    lost.add(ref.id)
                else:
                    groups.setdefault(queue, []).append(ref)
            pending = []
            if not groups:
                break
            calls = []
            for queue, group in groups.items():
                args: list[Arg] = [now, worker, lease]
                for ref in group:
                    args += [ref.id, ref.token]
                calls.append(_eval(scripts.HEARTBEAT, self._keys.queue(queue), *args))
            replies = yield _Step(tuple(calls))
            for group, codes in zip(groups.values(), replies, strict=True):
                for ref, code in zip(group, codes, strict=True):
                    if code == 1:
                        cancel.add(ref.id)
                    elif code == 2:
                        lost.add(ref.id)
                    elif code == 3:
                        self._where.pop(ref.id, None)
                        if trust_memory:
                            pending.append(ref)
                        else:
                            lost.add(ref.id)
        for ref in pending:
            lost.add(ref.id)
        return HeartbeatReply(frozenset(lost), frozenset(cancel - lost))

    def ack(self, acks: Sequence[Ack]) -> list[bool]:
        return self._run(self._ack_plan(acks), "ack")

    async def ack_async(self, acks: Sequence[Ack]) -> list[bool]:
        return await self._run_async(self._ack_plan(acks), "ack")

    def _ack_plan(self, acks: Sequence[Ack]) -> _Plan[list[bool]]:
        applied = [False] * len(acks)
        pending = list(range(len(acks)))
        now = self._now()
        for trust_memory in (True, False):
            if not pending:
                break
            where = yield from self._locate(
                {acks[i].ref.id for i in pending}, trust_memory=trust_memory
            )
            groups: dict[str, list[int]] = {}
            for i in pending:
                queue = where.get(acks[i].ref.id)
                if queue is not None:
                    groups.setdefault(queue, []).append(i)
            pending = []
            if not groups:
                break
            calls = []
            for queue, members in groups.items():
                args: list[Arg] = [now]
                for i in members:
                    ack = acks[i]
                    args += [
                        ack.ref.id,
                        ack.ref.token,
                        ack.kind.value,
                        "" if ack.result is None else ack.result,
                        "" if ack.error is None else orjson.dumps(ack.error.to_json()),
                        "" if ack.delay is None else repr(float(ack.delay)),
                    ]
                calls.append(_eval(scripts.ACK, self._keys.queue(queue), *args))
            replies = yield _Step(tuple(calls))
            for members, codes in zip(groups.values(), replies, strict=True):
                for i, code in zip(members, codes, strict=True):
                    applied[i] = code == 1
                    if code == -1 and trust_memory:
                        self._where.pop(acks[i].ref.id, None)
                        pending.append(i)
        return applied

    def rescue(self, max_lost: int = DEFAULT_MAX_LOST) -> RescueReport:
        return self._run(self._rescue_plan(max_lost), "rescue")

    async def rescue_async(self, max_lost: int = DEFAULT_MAX_LOST) -> RescueReport:
        return await self._run_async(self._rescue_plan(max_lost), "rescue")

    def _rescue_plan(self, max_lost: int) -> _Plan[RescueReport]:
        requeued = dead = cancelled = 0
        queues = yield from self._queues_plan()
        now = self._now()
        while queues:
            replies = yield _Step(
                tuple(
                    _eval(scripts.RESCUE, self._keys.queue(q), now, max_lost, RESCUE_BATCH)
                    for q in queues
                )
            )
            more = []
            for queue, (r, d, c, looked) in zip(queues, replies, strict=True):
                requeued, dead, cancelled = requeued + r, dead + d, cancelled + c
                if looked >= RESCUE_BATCH:
                    more.append(queue)
            queues = more
        return RescueReport(requeued=requeued, dead=dead, cancelled=cancelled)

    def release_worker(self, worker: str, max_lost: int = DEFAULT_MAX_LOST) -> RescueReport:
        check_release_arguments(worker, max_lost)
        return self._run(self._release_worker_plan(worker, max_lost), "release_worker")

    async def release_worker_async(
        self, worker: str, max_lost: int = DEFAULT_MAX_LOST
    ) -> RescueReport:
        check_release_arguments(worker, max_lost)
        return await self._run_async(self._release_worker_plan(worker, max_lost), "release_worker")

    def _release_worker_plan(self, worker: str, max_lost: int) -> _Plan[RescueReport]:
        """One script per queue, sent in one pipeline: a worker may hold jobs of any queue."""
        queues = yield from self._queues_plan()
        if not queues:
            return RescueReport()
        now = self._now()
        replies = yield _Step(
            tuple(
                _eval(scripts.RELEASE_WORKER, self._keys.queue(q), now, worker, max_lost)
                for q in queues
            )
        )
        requeued, dead, cancelled = (sum(int(reply[i]) for reply in replies) for i in range(3))
        return RescueReport(requeued=requeued, dead=dead, cancelled=cancelled)

    def prune(self, retention: Retention, limit: int = 1000) -> int:
        return self._run(self._prune_plan(retention, limit), "prune")

    async def prune_async(self, retention: Retention, limit: int = 1000) -> int:
        return await self._run_async(self._prune_plan(retention, limit), "prune")

    def _prune_plan(self, retention: Retention, limit: int) -> _Plan[int]:
        def horizon(state: JobState) -> str:
            value = retention.horizon(state)
            return "" if value is None else repr(float(value))

        horizons = (
            horizon(JobState.SUCCEEDED),
            horizon(JobState.CANCELLED),
            horizon(JobState.DEAD),
        )
        if limit <= 0 or horizons == ("", "", ""):
            return 0
        removed = 0
        now = self._now()
        for queue in (yield from self._queues_plan()):
            if removed >= limit:
                break
            [count] = yield _Step(
                (_eval(scripts.PRUNE, self._keys.queue(queue), now, limit - removed, *horizons),)
            )
            removed += int(count)
        return removed

    async def wait(
        self,
        queues: Sequence[str],
        timeout: float,
    ) -> None:
        """Block on this loop's subscription to the queues' wake-up channels, up to `timeout`.

        Returns on a wake-up message (one published while the caller was busy counts too), on
        a fresh subscription (which may have missed one), or after `timeout`. Connection errors
        drop the subscription and pause with backoff (within the timeout), so a worker neither
        spins nor dies while Redis restarts.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        side = await self._side()
        channels = frozenset(self._keys.queue(q).wake for q in queues)
        if not channels:
            await asyncio.sleep(max(timeout, 0.0))
            return
        try:
            # One reader per subscription: concurrent waits on one loop take turns.
            await asyncio.wait_for(side.listening.acquire(), max(deadline - loop.time(), 0.0))
        except TimeoutError:
            return
        try:
            await self._listen(side, channels, deadline)
        except (RedisError, OSError) as exc:
            await side.reset_subscription()
            delay = WAIT_ERROR_DELAYS[min(side.failures, len(WAIT_ERROR_DELAYS) - 1)]
            side.failures += 1
            log.debug("wake-up subscription failed (%s); retrying in %.2fs", exc, delay)
            await asyncio.sleep(min(delay, max(deadline - loop.time(), 0.0)))
        finally:
            side.listening.release()

    async def _listen(self, side: _AsyncSide, channels: frozenset[str], deadline: float) -> None:
        loop = asyncio.get_running_loop()
        if await self._subscribe(side, channels, deadline):
            side.failures = 0
            return
        pubsub = side.pubsub
        while True:
            remaining = deadline - loop.time()
            message = await pubsub.get_message(timeout=max(remaining, 0.0))
            if message is not None and message["type"] == "message":
                for _ in range(1000):  # drop the other buffered wake-ups: one claim serves all
                    if await pubsub.get_message(timeout=0.0) is None:
                        break
                break
            if remaining <= 0:
                break
        side.failures = 0

    async def _subscribe(self, side: _AsyncSide, channels: frozenset[str], deadline: float) -> bool:
        """Make `side` listen on exactly `channels`; True when a channel was newly subscribed."""
        if side.pubsub is not None and side.channels == channels:
            return False
        if side.pubsub is None:
            side.pubsub = side.client.pubsub()
        stale, new = side.channels - channels, channels - side.channels
        if stale:
            await side.pubsub.unsubscribe(*stale)
            side.channels = side.channels - stale
        if not new:
            return False
        await side.pubsub.subscribe(*new)
        side.channels = channels
        # Wait for Redis to confirm, so that a claim that follows runs after the subscription.
        loop = asyncio.get_running_loop()
        confirmed = 0
        while confirmed < len(new):
            remaining = deadline - loop.time()
            message = await side.pubsub.get_message(timeout=max(remaining, 0.01))
            if message is None:
                if remaining <= 0:
                    break
                continue
            if message["type"] == "subscribe":
                confirmed += 1
        return True

    # -- inspection and admin ------------------------------------------------------------
    def get(self, job_id: int) -> Job | None:
        return self._run(self._get_plan(job_id), "get")

    async def get_async(self, job_id: int) -> Job | None:
        return await self._run_async(self._get_plan(job_id), "get")

    def _get_plan(self, job_id: int) -> _Plan[Job | None]:
        queue = self._where.get(job_id)
        if queue is not None:
            [found] = yield _Step((_Command(("HGETALL", self._keys.queue(queue).job(job_id))),))
            if found:
                return job_from_hash(job_id, queue, hash_fields(found))
            self._where.pop(job_id, None)
        queues = yield from self._queues_plan()
        if not queues:
            return None
        replies = yield _Step(
            tuple(_Command(("HGETALL", self._keys.queue(q).job(job_id))) for q in queues)
        )
        for queue, found in zip(queues, replies, strict=True):
            if found:
                self._remember(job_id, queue)
                return job_from_hash(job_id, queue, hash_fields(found))
        return None

    def list_jobs(self, job_filter: JobFilter) -> list[Job]:
        return self._run(self._list_plan(job_filter), "list_jobs")

    def _list_plan(self, job_filter: JobFilter) -> _Plan[list[Job]]:
        """Newest first: a merge of each queue's pages (each already newest first)."""
        limit = job_filter.limit
        if limit is not None and limit <= 0:
            return []
        queues = yield from self._queues_for(job_filter.queues or None)
        spec = filter_json(job_filter)
        below: dict[str, str] = {
            q: "" if job_filter.before_id is None else str(job_filter.before_id) for q in queues
        }
        buffers: dict[str, list[Job]] = {q: [] for q in queues}
        exhausted: set[str] = set()
        out: list[Job] = []
        while limit is None or len(out) < limit:
            need = [q for q in queues if not buffers[q] and q not in exhausted]
            if need:
                page = LIST_PAGE if limit is None else min(LIST_PAGE, limit - len(out))
                replies = yield _Step(
                    tuple(
                        _eval(
                            scripts.LIST_PAGE, self._keys.queue(q), spec, below[q], page, SCAN_BATCH
                        )
                        for q in need
                    )
                )
                for queue, reply in zip(need, replies, strict=True):
                    cursor = text(reply[0])
                    if cursor == "":
                        exhausted.add(queue)
                    else:
                        below[queue] = cursor
                    # each page is newest first; keep buffers oldest first to pop from the end
                    jobs = [
                        job_from_hash(int(entry[0]), queue, pairs(entry[1:])) for entry in reply[1:]
                    ]
                    buffers[queue] = jobs[::-1]
                continue
            heads = [q for q in queues if buffers[q]]
            if not heads:
                break
            best = max(heads, key=lambda q: buffers[q][-1].id)
            out.append(buffers[best].pop())
        return out

    def stats(self) -> list[QueueStats]:
        return self._run(self._stats_plan(), "stats")

    def _summaries(self, queues: Sequence[str]) -> _Plan[list[list[Any]]]:
        if not queues:
            return []
        now = self._now()
        replies = yield _Step(
            tuple(_eval(scripts.SUMMARY, self._keys.queue(q), now, SUMMARY_BANDS) for q in queues)
        )
        return list(replies)

    def _stats_plan(self) -> _Plan[list[QueueStats]]:
        queues = yield from self._queues_plan()
        out = []
        for queue, reply in zip(queues, (yield from self._summaries(queues)), strict=True):
            now = float(reply[0])
            counts = {
                state: int(n) for state, n in zip(_STATE_ORDER, reply[1:7], strict=True) if int(n)
            }
            if not counts:
                continue
            oldest = opt_float(reply[7])
            out.append(
                QueueStats(
                    queue=queue,
                    counts=counts,
                    oldest_available_age=None if oldest is None else now - oldest,
                )
            )
        return out

    def next_run_at(self, queues: Sequence[str] | None = None) -> float | None:
        return self._run(self._next_run_at_plan(queues), "next_run_at")

    async def next_run_at_async(self, queues: Sequence[str] | None = None) -> float | None:
        return await self._run_async(self._next_run_at_plan(queues), "next_run_at")

    def _next_run_at_plan(self, queues: Sequence[str] | None) -> _Plan[float | None]:
        names = (
            list(dict.fromkeys(queues)) if queues is not None else (yield from self._queues_plan())
        )
        times = [opt_float(reply[8]) for reply in (yield from self._summaries(names))]
        return min((t for t in times if t is not None), default=None)

    def cancel(self, job_id: int) -> Job | None:
        return self._run(self._cancel_plan(job_id), "cancel")

    def _cancel_plan(self, job_id: int) -> _Plan[Job | None]:
        now = self._now()
        for trust_memory in (True, False):
            where = yield from self._locate([job_id], trust_memory=trust_memory)
            queue = where.get(job_id)
            if queue is None:
                return None
            [found] = yield _Step((_eval(scripts.CANCEL, self._keys.queue(queue), now, job_id),))
            if found:
                return job_from_hash(job_id, queue, hash_fields(found))
            self._where.pop(job_id, None)
        return None

    def requeue(self, job_filter: JobFilter) -> int:
        """Requeue every match; `job_filter.limit` is ignored, as by the memory engine."""
        return self._run(self._change_plan(job_filter, scripts.REQUEUE), "requeue")

    def purge(self, job_filter: JobFilter) -> int:
        """Delete every match; `job_filter.limit` is ignored, as by the memory engine."""
        return self._run(self._change_plan(job_filter, scripts.PURGE), "purge")

    def _change_plan(self, job_filter: JobFilter, name: str) -> _Plan[int]:
        """Run requeue.lua or purge.lua over every queue and state index the filter selects.

        With ids, each queue's script checks those jobs; otherwise it walks the state's index
        in batches, skipping the entries that do not match (they stay in the index).
        """
        allowed = _REQUEUEABLE if name == scripts.REQUEUE else _FINAL
        states = [s for s in allowed if not job_filter.states or s in job_filter.states]
        queues = yield from self._queues_for(job_filter.queues or None)
        if not states or not queues:
            return 0
        spec = filter_json(job_filter, states)
        lead: tuple[Arg, ...] = (self._now(), spec) if name == scripts.REQUEUE else (spec,)
        changed = 0
        if job_filter.ids:
            ids = sorted(job_filter.ids)
            replies = yield _Step(
                tuple(_eval(name, self._keys.queue(q), *lead, "", 0, 0, *ids) for q in queues)
            )
            return sum(int(reply[0]) for reply in replies)
        cursors = {(q, s.value): 0 for q in queues for s in states}
        while cursors:
            keys = list(cursors)
            replies = yield _Step(
                tuple(
                    _eval(name, self._keys.queue(q), *lead, s, cursors[(q, s)], SCAN_BATCH)
                    for q, s in keys
                )
            )
            for key, (count, looked, skip) in zip(keys, replies, strict=True):
                changed += int(count)
                if looked < SCAN_BATCH:
                    del cursors[key]
                else:
                    cursors[key] = int(skip)
        return changed


__all__ = ["RedisBackend"]
