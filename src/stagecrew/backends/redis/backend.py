"""The Redis engine (`redis://host:6379/0?prefix=stagecrew`): raw speed, many machines.

URL options (besides redis-py's own, such as `socket_timeout`): `prefix` (default `stagecrew`)
names the keys, so several stores share one Redis; `cluster=1` talks to a Redis Cluster;
`allow_eviction=1` lets workers start on a Redis whose eviction policy may evict job keys;
`keepalive_idle`, `keepalive_interval`, `keepalive_count` tune TCP keepalives. Every call is
bounded: redis-py's `socket_timeout` (default 10 s), `socket_connect_timeout` (5 s),
`health_check_interval` (30 s) and `socket_keepalive` (on) are set unless the URL sets them
(see keys.py and docs/redis.md).

Every state change is one Lua script (`lua/*.lua`), so it is atomic by construction; this
module holds the operations only: each builds its scripts' arguments, yields them as steps
(`driver.py` sends them, synchronously or on `redis.asyncio`) and turns replies into records.
The key layout, and what differs on Redis Cluster, is documented in keys.py; which queue holds
a job id in locator.py; the wake-up in wake.py; waiting for a job to finish in
finished.py; persistence in preflight.py.

Time. The Redis server's clock (`TIME`, inside the scripts) decides due times, lease expiry and
timestamps, and relative delays are added to it there, so workers with skewed clocks still
agree. When the backend's clock is a `FakeClock` (tests), its time is passed to every script
instead.

Out of memory. The enqueue script carries no `allow-oom` flag, so under `maxmemory` with
`noeviction` Redis refuses it before it runs: enqueue raises `EnqueueError` and nothing is
written. Every other script is flagged `allow-oom`: a full Redis stops producers, but workers
keep claiming, recording outcomes and pruning, which is how it gets out of that state.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import orjson
from redis.exceptions import RedisError

from ...clock import Clock, is_fake
from ...errors import BackendError
from ...job import ClaimedJob, EnqueuedJob, Job, JobRef, JobState, NewJob
from ..base import (
    Ack,
    Backend,
    Capabilities,
    HeartbeatReply,
    JobFilter,
    QueueStats,
    RescueReport,
    Retention,
)
from ..caps import ClaimLimits
from ..fairness import STALE_AFTER
from ..job_counts import CountBucket, CountHistory, CountKey
from ..limit_states import LimitState, LimitStates, LimitSwap
from ..ops import Op, resume_async, run, run_async
from ..records import WORKER_LOST
from ..schedules import ScheduleFire, ScheduleFired, ScheduleRecord, refused
from ..steps import JobSteps
from ..unique import states_text
from ..worker_registry import WorkerBeat, WorkerRecord, WorkerRegistry, info_from, info_text
from ..workflows import (
    HELD_AT,
    NewWorkflow,
    OnFailure,
    Workflow,
    WorkflowStatus,
    shape_from_json,
    shape_to_json,
)
from . import preflight, scripts, wake
from .driver import AsyncSide, Call, Command, Driver, Eval, Step, describe_failure
from .finished import LoopThread
from .keys import Keys, QueueKeys, parse_url
from .locator import Locator, known_queues
from .records import (
    Arg,
    claimed_jobs,
    concurrency_field,
    filter_json,
    hash_fields,
    job_from_hash,
    key_fields,
    new_job_fields,
    opt_float,
    opt_text,
    pairs,
    steps_from_hash,
    text,
)
from .wire import Interrupted

T = TypeVar("T")
log = logging.getLogger("stagecrew.redis")

PROMOTE_BATCH = 1000
"""Most scheduled jobs one claim moves to T:due (earliest run_at first); when more are due at
once, the rest join at the next claims, so priority orders them only once they are there."""
CAPPED_WALK = 10_000
"""Most waiting jobs one capped claim examines (claim_capped.lua): a bound on the script's
time; a job behind more passed-over jobs than that waits until enough of those are claimed."""
RESCUE_BATCH = 1000
SCAN_BATCH = 1000
"""Index entries one requeue, purge or list call looks at."""
LIST_PAGE = 500
SUMMARY_BANDS = 1000
"""Priority bands `stats` walks to find a queue's oldest available job."""
LIMITS_PAGE = 1000
"""The HSCAN COUNT hint of one list_limits.lua page."""
PRUNE_RECORDS_BATCH = 1000
"""Most records one call of prune_limits.lua or prune_workers.lua deletes."""

_LOST = WORKER_LOST.params()
LOST_ARGS: tuple[Arg, ...] = (
    _LOST["lost_type"],
    _LOST["lost_message"],
    _LOST["lost_kind"],
    _LOST["lost_cancelled_kind"],
)
"""The "worker lost" error's fixed fields, as rescue.lua and release_worker.lua take them."""

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


class RedisBackend(Backend):
    """Jobs in Redis, every state change one Lua script; see the module docstring."""

    capabilities = Capabilities(cross_process=True, server_clock=True, instant_wakeup=True)
    _store_errors = (RedisError,)
    _workflow_in_one_queue = True  # its record and members in one slot (see keys.py)

    def __init__(self, url: str, clock: Clock | None = None) -> None:
        super().__init__(clock)
        self.url = url
        self._settings = parse_url(url)
        self.prefix = self._settings.prefix
        self._cluster_layout = self._settings.cluster_layout
        self._keys_per_queue = self._cluster_layout  # see keys.py: the idempotency index
        self._keys = Keys(self.prefix, per_queue_globals=self._cluster_layout)
        self._driver = Driver(self._settings)
        self._wire = self._driver.wire
        self._client = self._driver.client
        self._locator = Locator(self._keys)
        self._waits = LoopThread(f"stagecrew-wait-finished-{self.prefix}")
        """Where the synchronous `wait_finished` waits (see finished.py)."""

    def __repr__(self) -> str:
        return f"<RedisBackend {self._settings.display_url} prefix={self.prefix!r}>"

    # -- the engine's side of the seam ----------------------------------------------
    def _drive(self, op: Op[T]) -> T:
        return run(op, self._driver.execute)

    async def _drive_async(self, op: Op[T]) -> T:
        wire = (await self._side()).wire
        return await run_async(op, functools.partial(self._driver.execute_async, wire))

    async def _side(self) -> AsyncSide:
        return await self._driver.side()

    def _describe_failure(self, operation: str, exc: BaseException) -> str:
        return describe_failure(self._settings.display_url, operation, exc)

    def _now(self) -> str:
        return repr(self.clock.now()) if is_fake(self.clock) else ""

    # -- life cycle --------------------------------------------------------------------
    def migrate(self) -> list[str]:
        """Record the key layout version; the keys themselves appear as jobs are written."""
        try:
            recorded = preflight.record_layout(self._client, self._keys, self._settings)
        except RedisError as exc:
            raise self._failure("migrate", exc) from exc
        return [f"key layout {preflight.LAYOUT_VERSION}"] if recorded else []

    def prepare(self) -> None:
        """Check the Redis version and the key layout (recording it in a new store).

        An unreachable Redis is left for later: the operations report it in their own terms
        (`EnqueueError` from enqueue, `BackendError` from the rest).
        """
        preflight.check_store(self._client, self._keys, self._settings)

    def preflight(self) -> list[str]:
        """Persistence and eviction settings, read at worker start (see preflight.py)."""
        try:
            return preflight.deployment_warnings(self._client, self._settings)
        except RedisError as exc:
            raise self._failure("preflight", exc) from exc

    def close(self) -> None:
        super().close()
        self._waits.close()  # first: its loop closes its own side
        self._driver.close()

    # -- queues ------------------------------------------------------------------------
    def _queues_for(self, wanted: Iterable[str] | None) -> Op[list[str]]:
        known = yield from known_queues(self._keys)
        if wanted is None:
            return known
        chosen = set(wanted)
        return [q for q in known if q in chosen]

    def _register(self, queue: QueueKeys) -> Op[None]:
        """List the queue in {P}:queues, then mark it: a job never exists in an unlisted queue."""
        yield Step((Command(("SADD", self._keys.queues, queue.name)),))
        yield Step((Command(("SET", queue.registered, "1")),))

    # -- producer ------------------------------------------------------------------
    def _enqueue(self, jobs: Sequence[NewJob]) -> Op[list[EnqueuedJob]]:
        now = self._now()
        # Every field is read and encoded before anything is sent: a bad job fails the batch
        # while nothing is written.
        fields = [new_job_fields(new) for new in jobs]
        if any(new.idempotency_key is not None or new.unique_key is not None for new in jobs):
            fields = [
                (*row, concurrency_field(new), *key_fields(new))
                for row, new in zip(fields, jobs, strict=True)
            ]
        elif any(new.concurrency_key is not None for new in jobs):
            fields = [(*row, concurrency_field(new)) for row, new in zip(fields, jobs, strict=True)]
        first_queue = jobs[0].queue
        if self._cluster_layout or (
            len(jobs) > 1 and any(new.queue != first_queue for new in jobs)
        ):
            return (yield from self._enqueue_reserved(jobs, fields, now))
        args: list[Arg] = [now, first_queue, len(jobs), repr(STALE_AFTER), 1 + len(fields[0])]
        for row in fields:
            args.append("")  # no reserved id: the script takes the next ones
            args.extend(row)
        queue = self._keys.queue(first_queue)
        call = Eval.of(scripts.ENQUEUE, queue, *args)
        for _ in range(2):
            [reply] = yield Step((call,))
            if reply[0] == 0:
                yield from self._register(queue)
                continue
            if reply[0] != 1:
                raise self._refused(queue, reply)
            return self._enqueued(queue.name, reply[2:])
        raise BackendError(f"queue {queue.name!r} could not be registered")

    def _enqueue_reserved(
        self, jobs: Sequence[NewJob], fields: list[tuple[Arg, ...]], now: str
    ) -> Op[list[EnqueuedJob]]:
        """A batch over several queues (or any batch on Cluster): ids reserved first."""
        queues = list(dict.fromkeys(new.queue for new in jobs))
        keys = [self._keys.queue(q) for q in queues]
        replies = yield Step(
            (
                Command(("INCRBY", self._keys.ids, len(jobs))),
                *(Command(("EXISTS", k.registered)) for k in keys),
            )
        )
        first_id = int(replies[0]) - len(jobs) + 1
        for queue, registered in zip(keys, replies[1:], strict=True):
            if not registered:
                yield from self._register(queue)
        per_queue: dict[str, list[int]] = {q: [] for q in queues}
        for i, new in enumerate(jobs):
            per_queue[new.queue].append(i)
        calls: list[Call] = []
        for queue in keys:
            members = per_queue[queue.name]
            args: list[Arg] = [now, queue.name, len(members), repr(STALE_AFTER), 1 + len(fields[0])]
            for i in members:
                args.append(str(first_id + i))
                args.extend(fields[i])
            calls.append(Eval.of(scripts.ENQUEUE, queue, *args))
        replies = yield Step(tuple(calls), atomic=not self._cluster_layout)
        out: dict[int, EnqueuedJob] = {}
        for queue, reply in zip(keys, replies, strict=True):
            if reply[0] != 1:
                raise self._refused(queue, reply)
            entries = self._enqueued(queue.name, reply[2:])
            out.update(zip(per_queue[queue.name], entries, strict=True))
        return [out[i] for i in range(len(jobs))]

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
        self._locator.remember_many(ids, queue)
        return entries

    # -- worker ----------------------------------------------------------------------
    def _claim(
        self,
        queues: tuple[str, ...],
        worker: str,
        limit: int,
        lease_seconds: float,
        limits: ClaimLimits | None = None,
    ) -> Op[list[ClaimedJob]]:
        if limits is not None:
            return (yield from self._claim_capped(queues, worker, limit, lease_seconds, limits))
        now = self._now()
        shares: dict[str, int]
        if len(queues) == 1:
            shares = {queues[0]: limit}
        else:
            heads = yield from self._heads(queues, now, limit)
            shares = dict(Counter(queue for _, _, queue in heads[:limit]))
            if not shares:
                return []
        lease = repr(float(lease_seconds))
        replies = yield Step(
            tuple(
                Eval.of(scripts.CLAIM, self._keys.queue(q), now, worker, n, lease, PROMOTE_BATCH)
                for q, n in shares.items()
            )
        )
        claimed: list[ClaimedJob] = []
        for queue, reply in zip(shares, replies, strict=True):
            ids, jobs = claimed_jobs(queue, reply)
            claimed += jobs
            self._locator.remember_many(ids, queue)
        return claimed

    def _heads(
        self, queues: tuple[str, ...], now: str, limit: int
    ) -> Op[list[tuple[float, bytes, str]]]:
        """Peek at each queue's first `limit` waiting jobs and merge them in claim order: a
        claim over several queues then claims from each queue what it won."""
        replies = yield Step(
            tuple(
                Eval.of(scripts.PEEK, self._keys.queue(q), now, limit, PROMOTE_BATCH)
                for q in queues
            )
        )
        heads: list[tuple[float, bytes, str]] = []
        for queue, reply in zip(queues, replies, strict=True):
            for i in range(0, len(reply), 2):
                heads.append((float(reply[i]), reply[i + 1], queue))
        heads.sort()
        return heads

    def _claim_capped(
        self,
        queues: tuple[str, ...],
        worker: str,
        limit: int,
        lease_seconds: float,
        limits: ClaimLimits,
    ) -> Op[list[ClaimedJob]]:
        """A claim within caps: claim_capped.lua, counting and claiming in one script.

        On a single Redis one call claims from every queue and counts the running jobs of
        every queue. On the Cluster layout a script touches one queue's slot, so each queue
        is claimed by a call of its own, counting within that queue (keys.py): one after
        the other, in the order of their heads, each for what the ones before left of
        `limit`.
        """
        now = self._now()
        lease = repr(float(lease_seconds))
        caps: list[Arg] = []
        for table in (limits.tasks, limits.queues, limits.keys):
            caps.append(len(table))
            for name, cap in table.items():
                caps.extend((name, cap))

        def call(names: Sequence[str], n: int) -> Eval:
            scope = "queue" if self._cluster_layout else "store"
            return Eval.of(
                scripts.CLAIM_CAPPED,
                self._keys.queue(names[0]),
                *(now, worker, n, lease, PROMOTE_BATCH, CAPPED_WALK, self.prefix, scope),
                *(len(names), *names, *caps),
            )

        claimed: list[ClaimedJob] = []
        if not self._cluster_layout or len(queues) == 1:
            [replies] = yield Step((call(queues, limit),))
            for queue, reply in zip(queues, replies, strict=True):
                claimed += self._claimed(queue, reply)
            return claimed
        heads = yield from self._heads(queues, now, limit)
        for queue in dict.fromkeys(queue for _, _, queue in heads):
            if len(claimed) >= limit:
                break
            [[reply]] = yield Step((call((queue,), limit - len(claimed)),))
            claimed += self._claimed(queue, reply)
        return claimed

    def _claimed(self, queue: str, reply: Sequence[Any]) -> list[ClaimedJob]:
        ids, jobs = claimed_jobs(queue, reply)
        self._locator.remember_many(ids, queue)
        return jobs

    def _heartbeat(
        self, worker: str, refs: tuple[JobRef, ...], lease_seconds: float
    ) -> Op[HeartbeatReply]:
        lost: set[int] = set()
        cancel: set[int] = set()
        pending = list(refs)
        now, lease = self._now(), repr(float(lease_seconds))
        for trust_memory in (True, False):
            if not pending:
                break
            where = yield from self._locator.locate(
                {r.id for r in pending}, trust_memory=trust_memory
            )
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
                calls.append(Eval.of(scripts.HEARTBEAT, self._keys.queue(queue), *args))
            replies = yield Step(tuple(calls))
            for group, codes in zip(groups.values(), replies, strict=True):
                for ref, code in zip(group, codes, strict=True):
                    if code == 1:
                        cancel.add(ref.id)
                    elif code == 2:
                        lost.add(ref.id)
                    elif code == 3:  # not in the queue remembered for it
                        self._locator.forget(ref.id)
                        if trust_memory:
                            pending.append(ref)
                        else:
                            lost.add(ref.id)
        for ref in pending:
            lost.add(ref.id)
        return HeartbeatReply(frozenset(lost), frozenset(cancel - lost))

    def _ack(self, acks: Sequence[Ack]) -> Op[list[bool]]:
        applied = [False] * len(acks)
        pending = list(range(len(acks)))
        now = self._now()
        for trust_memory in (True, False):
            if not pending:
                break
            where = yield from self._locator.locate(
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
                    run_in = ack.run_in
                    args += [
                        ack.ref.id,
                        ack.ref.token,
                        ack.kind.value,
                        ack.target.value,
                        "" if ack.result is None else ack.result,
                        "" if ack.error is None else orjson.dumps(ack.error.to_json()),
                        "" if run_in is None else repr(run_in),
                    ]
                calls.append(Eval.of(scripts.ACK, self._keys.queue(queue), *args))
            replies = yield Step(tuple(calls))
            for members, codes in zip(groups.values(), replies, strict=True):
                for i, code in zip(members, codes, strict=True):
                    applied[i] = code == 1
                    if code == -1 and trust_memory:  # not in the queue remembered for it
                        self._locator.forget(acks[i].ref.id)
                        pending.append(i)
        return applied

    def _rescue(self, max_lost: int) -> Op[RescueReport]:
        requeued = dead = cancelled = 0
        queues = yield from known_queues(self._keys)
        now = self._now()
        while queues:
            replies = yield Step(
                tuple(
                    Eval.of(
                        scripts.RESCUE, self._keys.queue(q), now, max_lost, RESCUE_BATCH, *LOST_ARGS
                    )
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

    def _release_worker(self, worker: str, max_lost: int) -> Op[RescueReport]:
        """One script per queue, sent in one pipeline: a worker may hold jobs of any queue."""
        queues = yield from known_queues(self._keys)
        if not queues:
            return RescueReport()
        now = self._now()
        replies = yield Step(
            tuple(
                Eval.of(
                    scripts.RELEASE_WORKER, self._keys.queue(q), now, worker, max_lost, *LOST_ARGS
                )
                for q in queues
            )
        )
        requeued, dead, cancelled = (sum(int(reply[i]) for reply in replies) for i in range(3))
        return RescueReport(requeued=requeued, dead=dead, cancelled=cancelled)

    def _prune(self, retention: Retention, limit: int) -> Op[int]:
        def horizon(state: JobState) -> str:
            value = retention.horizon(state)
            return "" if value is None else repr(float(value))

        horizons = (
            horizon(JobState.SUCCEEDED),
            horizon(JobState.CANCELLED),
            horizon(JobState.DEAD),
        )
        if horizons == ("", "", ""):
            return 0
        removed = 0
        now = self._now()
        for queue in (yield from known_queues(self._keys)):
            if removed >= limit:
                break
            [count] = yield Step(
                (Eval.of(scripts.PRUNE, self._keys.queue(queue), now, limit - removed, *horizons),)
            )
            removed += int(count)
        return removed

    def _age_priorities(self, every: float, floor: int, limit: int) -> Op[int]:
        changed = 0
        now = self._now()
        for queue in (yield from known_queues(self._keys)):
            if changed >= limit:
                break
            [count] = yield Step(
                (
                    Eval.of(
                        scripts.AGE_PRIORITIES,
                        self._keys.queue(queue),
                        now,
                        repr(every),
                        str(floor),
                        limit - changed,
                    ),
                )
            )
            changed += int(count)
        return changed

    async def _wait(self, queues: tuple[str, ...], timeout: float) -> None:
        """Block on the queues' wake-up lists (see wake.py); a failure pauses, with backoff
        (within the timeout), instead of raising."""
        if not queues:
            await asyncio.sleep(timeout)
            return
        side = await self._side()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        block = wake.pop([self._keys.queue(q).wake for q in queues], timeout)
        try:
            await side.wire.call_blocking([block], timeout)
        except Interrupted as stop:
            if stop.replies and isinstance(stop.replies[0], list):  # a token nobody used
                with contextlib.suppress(RedisError, OSError):
                    await side.wire.call(("RPUSH", stop.replies[0][0], "1"))
            raise asyncio.CancelledError from None
        except (RedisError, OSError) as exc:
            delay = wake.WAIT_ERROR_DELAYS[min(side.failures, len(wake.WAIT_ERROR_DELAYS) - 1)]
            side.failures += 1
            log.debug("waiting for work failed (%s); waiting again in %.2fs", exc, delay)
            await asyncio.sleep(min(delay, max(deadline - loop.time(), 0.0)))
            return
        side.failures = 0

    async def _wait_and_claim(
        self,
        queues: tuple[str, ...],
        worker: str,
        limit: int,
        lease: float,
        timeout: float,
        limits: ClaimLimits | None = None,
    ) -> list[ClaimedJob]:
        """The wake-up's BLPOP, then the claim's first step, in one pipeline (see wake.py)."""
        side = await self._side()
        op = self._claim(queues, worker, limit, lease, limits)
        first = next(op)
        block = Command(wake.pop([self._keys.queue(q).wake for q in queues], timeout))
        try:
            replies = await self._driver.execute_blocking(side.wire, block, first, timeout)
        except Interrupted as stop:
            await self._hand_back(_claimed_by(op, stop.replies))
            raise asyncio.CancelledError from None
        # Woken: the claim's other steps (several queues) run to their end even if a stop
        # comes meanwhile, and what they claimed is then handed back.
        execute = functools.partial(self._driver.execute_async, side.wire)
        claiming = asyncio.ensure_future(resume_async(op, replies, execute))
        try:
            return await asyncio.shield(claiming)
        except asyncio.CancelledError:
            await self._hand_back(await claiming)
            raise

    def _wait_finished(self, job_id: int, timeout: float) -> None:
        """`_wait_finished_async` on this backend's waiting thread, whose one subscription
        every thread's wait shares (see finished.py)."""
        self._waits.run(self._wait_finished_async(job_id, timeout))

    async def _wait_finished_async(self, job_id: int, timeout: float) -> None:
        """Subscribe to the job's T:finished, then read the job once, then wait for a message
        naming it: a job that finishes after that read is announced after the subscription."""
        if timeout <= 0:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        queue = self._locator.where.get(job_id)
        if queue is None:  # neither enqueued nor claimed nor read here: a read finds its queue
            job = await self._drive_async(self._get(job_id))
            if job is None or job.state.is_final:
                return
            queue = job.queue
        listener = (await self._side()).finished
        async with listener.watch(self._keys.queue(queue).finished, job_id, timeout) as notice:
            if notice is None:  # not subscribed within the timeout
                return
            job = await self._drive_async(self._get(job_id))
            if job is None or job.state.is_final or job.queue != queue:
                return  # a wrong remembered queue: the caller's next wait listens on the right one
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(notice.wait(), deadline - loop.time())

    # -- inspection and admin ------------------------------------------------------------
    def _get(self, job_id: int) -> Op[Job | None]:
        queue = self._locator.where.get(job_id)
        if queue is not None:
            [found] = yield Step((Command(("HGETALL", self._keys.queue(queue).job(job_id))),))
            if found:
                return job_from_hash(job_id, queue, hash_fields(found))
            self._locator.forget(job_id)
        queues = yield from known_queues(self._keys)
        if not queues:
            return None
        replies = yield Step(
            tuple(Command(("HGETALL", self._keys.queue(q).job(job_id))) for q in queues)
        )
        for queue, found in zip(queues, replies, strict=True):
            if found:
                self._locator.remember(job_id, queue)
                return job_from_hash(job_id, queue, hash_fields(found))
        return None

    def _list_jobs(self, job_filter: JobFilter) -> Op[list[Job]]:
        """Newest first: a merge of each queue's pages (each already newest first)."""
        limit = job_filter.limit
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
                replies = yield Step(
                    tuple(
                        Eval.of(
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

    def _summaries(self, queues: Sequence[str]) -> Op[list[list[Any]]]:
        if not queues:
            return []
        now = self._now()
        replies = yield Step(
            tuple(Eval.of(scripts.SUMMARY, self._keys.queue(q), now, SUMMARY_BANDS) for q in queues)
        )
        return list(replies)

    def _stats(self) -> Op[list[QueueStats]]:
        queues = yield from known_queues(self._keys)
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

    def _next_run_at(self, queues: tuple[str, ...] | None) -> Op[float | None]:
        names = queues if queues is not None else (yield from known_queues(self._keys))
        times = [opt_float(reply[8]) for reply in (yield from self._summaries(names))]
        return min((t for t in times if t is not None), default=None)

    # -- steps, checkpoints and progress (store_step.lua) -------------------------------
    def _store_step(self, ref: JobRef, name: str, text: str) -> Op[bool]:
        return self._fenced_store(ref, "step", name, text)

    def _store_state(self, ref: JobRef, text: str) -> Op[bool]:
        return self._fenced_store(ref, "state", "", text)

    def _store_progress(self, ref: JobRef, text: str) -> Op[bool]:
        return self._fenced_store(ref, "progress", "", text)

    def _fenced_store(self, ref: JobRef, kind: str, name: str, text: str) -> Op[bool]:
        """One store_step.lua call on the job's queue, looked up again if remembered wrong."""
        for trust_memory in (True, False):
            where = yield from self._locator.locate([ref.id], trust_memory=trust_memory)
            queue = where.get(ref.id)
            if queue is None:
                return False
            keys = self._keys.queue(queue)
            args = (self._now(), ref.id, ref.token, kind, name, text)
            [code] = yield Step((Eval.of(scripts.STORE_STEP, keys, *args),))
            if code != 3:
                return bool(code == 1)
            self._locator.forget(ref.id)
        return False

    def _read_steps(self, job_id: int) -> Op[JobSteps]:
        for trust_memory in (True, False):
            where = yield from self._locator.locate([job_id], trust_memory=trust_memory)
            queue = where.get(job_id)
            if queue is None:
                return JobSteps()
            keys = self._keys.queue(queue)
            exists, found = yield Step(
                (
                    Command(("EXISTS", keys.job(job_id))),
                    Command(("HGETALL", keys.steps(job_id))),
                )
            )
            if int(exists):
                return steps_from_hash(hash_fields(found))
            self._locator.forget(job_id)
        return JobSteps()

    # -- queue control -----------------------------------------------------------------
    def _pause_queue(self, queue: str) -> Op[bool]:
        """Register the queue (a paused queue is listed even before its first job), then
        pause it (queue_control.lua)."""
        keys = self._keys.queue(queue)
        yield from self._register(keys)
        [changed] = yield Step((Eval.of(scripts.QUEUE_CONTROL, keys, "pause"),))
        return bool(changed)

    def _resume_queue(self, queue: str) -> Op[bool]:
        """Resume the queue; the script leaves a wake-up token for its idle workers."""
        keys = self._keys.queue(queue)
        [changed] = yield Step((Eval.of(scripts.QUEUE_CONTROL, keys, "resume"),))
        return bool(changed)

    def _paused_queues(self, queues: tuple[str, ...] | None) -> Op[list[str]]:
        """One EXISTS per queue asked about: `queues`, or every queue the store knows."""
        if queues is None:
            queues = tuple((yield from known_queues(self._keys)))
        if not queues:
            return []
        replies = yield Step(tuple(Command(("EXISTS", self._keys.queue(q).paused)) for q in queues))
        return [q for q, paused in zip(queues, replies, strict=True) if int(paused)]

    def _cancel(self, job_id: int) -> Op[Job | None]:
        now = self._now()
        for trust_memory in (True, False):
            where = yield from self._locator.locate([job_id], trust_memory=trust_memory)
            queue = where.get(job_id)
            if queue is None:
                return None
            [found] = yield Step((Eval.of(scripts.CANCEL, self._keys.queue(queue), now, job_id),))
            if found:
                return job_from_hash(job_id, queue, hash_fields(found))
            self._locator.forget(job_id)
        return None

    def _requeue(self, job_filter: JobFilter) -> Op[int]:
        return self._change(job_filter, scripts.REQUEUE)

    def _purge(self, job_filter: JobFilter) -> Op[int]:
        return self._change(job_filter, scripts.PURGE)

    def _change(self, job_filter: JobFilter, name: str) -> Op[int]:
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
            replies = yield Step(
                tuple(Eval.of(name, self._keys.queue(q), *lead, "", 0, 0, *ids) for q in queues)
            )
            return sum(int(reply[0]) for reply in replies)
        cursors = {(q, s.value): 0 for q in queues for s in states}
        while cursors:
            keys = list(cursors)
            replies = yield Step(
                tuple(
                    Eval.of(name, self._keys.queue(q), *lead, s, cursors[(q, s)], SCAN_BATCH)
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

    # -- schedules ---------------------------------------------------------------------
    def _fire_schedule(self, fire: ScheduleFire) -> Op[ScheduleFired]:
        """fire_schedule.lua on the queue's slot, after listing the schedule in {P}:schedules."""
        queue = self._keys.queue(fire.queue)
        fields = [new_job_fields(tick_job.job) for tick_job in fire.jobs]
        first_id: int | None = None
        if self._cluster_layout and fields:  # the id counter is in another slot: reserve
            [last] = yield Step((Command(("INCRBY", self._keys.ids, len(fields))),))
            first_id = int(last) - len(fields) + 1
        expected = "" if fire.expected is None else repr(float(fire.expected))
        args: list[Arg] = [self._now(), fire.name, expected, repr(float(fire.advance_to))]
        args.append(len(fields))
        for index, (tick_job, row) in enumerate(zip(fire.jobs, fields, strict=True)):
            args.append(repr(float(tick_job.tick)))
            args.append("" if first_id is None else str(first_id + index))
            args.extend(row)
            new = tick_job.job
            args.append("" if new.concurrency_key is None else "=" + new.concurrency_key)
            args.append("" if new.unique_key is None else "=" + new.unique_key)
            args.append(states_text(new.unique_states))
        call = Eval.of(scripts.FIRE_SCHEDULE, queue, *args)
        listing = Command(("HSET", self._keys.schedules, fire.name, fire.queue))
        for _ in range(2):
            [_, reply] = yield Step((listing, call))
            if reply[0] == 0:
                yield from self._register(queue)
                continue
            if reply[0] == 2:
                return refused(opt_float(reply[1]), int(reply[2]) == 1)
            if reply[0] != 1:
                raise self._refused(queue, reply)
            entries = self._enqueued(queue.name, reply[2:])
            return ScheduleFired(True, tuple(entries), fire.advance_to, False)
        raise BackendError(f"queue {queue.name!r} could not be registered")

    def _set_schedule_paused(
        self, name: str, queue: str, paused: bool, now: float
    ) -> Op[ScheduleRecord]:
        keys = self._keys.queue(queue)
        listing = Command(("HSET", self._keys.schedules, name, queue))
        call = Eval.of(scripts.SCHEDULE_PAUSED, keys, name, "1" if paused else "0", repr(now))
        [_, reply] = yield Step((listing, call))
        return _schedule_record(name, queue, reply)

    def _list_schedules(self) -> Op[list[ScheduleRecord]]:
        [listed] = yield Step((Command(("HGETALL", self._keys.schedules)),))
        where = [(text(name), text(queue)) for name, queue in hash_fields(listed).items()]
        if not where:
            return []
        fields = ("last_tick", "last_job_id", "last_job_tick", "last_fired_at", "paused")
        replies = yield Step(
            tuple(
                Command(("HMGET", self._keys.queue(queue).schedule(name), *fields))
                for name, queue in where
            )
        )
        return [
            _schedule_record(name, queue, reply)
            for (name, queue), reply in zip(where, replies, strict=True)
            if any(value is not None for value in reply)
        ]

    # -- workflows ---------------------------------------------------------------------
    def _enqueue_workflow(self, workflow: NewWorkflow) -> Op[list[list[int]]]:
        """enqueue_workflow.lua on the one queue of every member, after reserving the ids and
        listing the workflow in {P}:workflows (an index only: see keys.py)."""
        now = self._now()
        members = [
            (step, index, job)
            for step, jobs in enumerate(workflow.steps)
            for index, job in enumerate(jobs)
        ]
        queue = self._keys.queue(members[0][2].queue)
        replies = yield Step(
            (
                Command(("INCRBY", self._keys.ids, len(members))),
                Command(("EXISTS", queue.registered)),
                Command(("HSET", self._keys.workflows, workflow.id, queue.name)),
            )
        )
        first_id = int(replies[0]) - len(members) + 1
        if not replies[1]:
            yield from self._register(queue)
        args: list[Arg] = [
            now,
            workflow.id,
            shape_to_json(workflow.shape),
            workflow.on_failure.value,
            repr(HELD_AT),
            len(members),
        ]
        ids: list[list[int]] = [[] for _ in workflow.steps]
        for offset, (step, index, job) in enumerate(members):
            job_id = first_id + offset
            ids[step].append(job_id)
            args += [job_id, job.task, job.payload, int(job.priority), int(job.max_attempts)]
            args += [step, index]
        [reply] = yield Step((Eval.of(scripts.ENQUEUE_WORKFLOW, queue, *args),))
        if reply[0] == -2:
            raise BackendError(f"workflow id {workflow.id} is taken already; nothing was written")
        if reply[0] != 1:
            raise self._refused(queue, reply)
        self._locator.remember_many([i for step_ids in ids for i in step_ids], queue.name)
        return ids

    def _workflow_queue(self, workflow_id: str) -> Op[QueueKeys | None]:
        [queue] = yield Step((Command(("HGET", self._keys.workflows, workflow_id)),))
        return None if queue is None else self._keys.queue(text(queue))

    def _read_workflow(self, queue: QueueKeys, workflow_id: str) -> Op[Workflow | None]:
        [found] = yield Step((Command(("HGETALL", queue.workflow(workflow_id))),))
        if not found:
            return None
        h = hash_fields(found)
        ids = [int(i) for step in orjson.loads(h[b"members"]) for i in step]
        replies = yield Step(tuple(Command(("HGETALL", queue.job(i))) for i in ids))
        jobs = [
            job_from_hash(job_id, queue.name, hash_fields(reply))
            for job_id, reply in zip(ids, replies, strict=True)
            if reply
        ]
        return Workflow(
            id=workflow_id,
            status=WorkflowStatus(text(h[b"status"])),
            step=int(h[b"step"]),
            shape=shape_from_json(h[b"shape"]),
            on_failure=OnFailure(text(h[b"on_failure"])),
            created_at=float(h[b"created_at"]),
            finished_at=opt_float(h.get(b"finished_at")),
            result=opt_text(h.get(b"result")),
            members=tuple(jobs),
        )

    def _get_workflow(self, workflow_id: str) -> Op[Workflow | None]:
        queue = yield from self._workflow_queue(workflow_id)
        if queue is None:
            return None
        found = yield from self._read_workflow(queue, workflow_id)
        if found is None:  # pruned with its last member: the index entry goes too
            yield Step((Command(("HDEL", self._keys.workflows, workflow_id)),))
        return found

    def _cancel_workflow(self, workflow_id: str) -> Op[Workflow | None]:
        queue = yield from self._workflow_queue(workflow_id)
        if queue is None:
            return None
        yield Step((Eval.of(scripts.CANCEL_WORKFLOW, queue, self._now(), workflow_id),))
        return (yield from self._read_workflow(queue, workflow_id))

    # -- limit states (keys.py: {P}:limits, {P}:limits:expiry, in the slot of {P}) ----------
    def _read_limits(self, names: tuple[str, ...]) -> Op[LimitStates]:
        call = Eval.on_limits(scripts.READ_LIMITS, self._keys, self._now(), *names)
        [reply] = yield Step((call,))
        return LimitStates(True, float(reply[0]), _limit_states(reply[1:]))

    def _swap_limits(self, swaps: tuple[LimitSwap, ...]) -> Op[LimitStates]:
        """swap_limits.lua: the compare and every write in one script."""
        args: list[Arg] = [self._now(), len(swaps)]
        for swap in swaps:
            expected = "" if swap.expected is None else str(swap.expected)
            args += [swap.name, expected, str(swap.version), repr(float(swap.ttl)), swap.value]
        [reply] = yield Step((Eval.on_limits(scripts.SWAP_LIMITS, self._keys, *args),))
        now = float(reply[1])
        if int(reply[0]) != 1:
            return LimitStates(False, now, _limit_states(reply[2:]))
        written = {
            swap.name: LimitState(swap.name, swap.version, swap.value, float(expires_at))
            for swap, expires_at in zip(swaps, reply[2:], strict=True)
        }
        return LimitStates(True, now, written)

    def _list_limits(self, prefix: str) -> Op[list[LimitState]]:
        """list_limits.lua page by page (HSCAN), every page at the first page's now."""
        found: dict[str, LimitState] = {}
        now, cursor = self._now(), "0"
        while True:
            call = Eval.on_limits(scripts.LIST_LIMITS, self._keys, now, cursor, LIMITS_PAGE, prefix)
            [reply] = yield Step((call,))
            cursor, now = text(reply[0]), text(reply[1])
            found.update(_limit_states(reply[2:]))
            if cursor == "0":
                return list(found.values())

    def _prune_limits(self, limit: int) -> Op[int]:
        now = self._now()
        return (
            yield from _pruned(
                limit, lambda batch: Eval.on_limits(scripts.PRUNE_LIMITS, self._keys, now, batch)
            )
        )

    # -- the worker registry (keys.py: {P}:workers, {P}:workers:seen) ------------------
    def _record_worker(self, beat: WorkerBeat) -> Op[None]:
        args = (self._now(), beat.id, repr(float(beat.ttl)), "1" if beat.stopped else "0")
        info = info_text(beat.info)
        yield Step((Eval.on_registry(scripts.RECORD_WORKER, self._keys, *args, info),))

    def _list_workers(self) -> Op[WorkerRegistry]:
        [reply] = yield Step((Eval.on_registry(scripts.LIST_WORKERS, self._keys, self._now()),))
        records = (
            _worker_record(text(reply[i]), text(reply[i + 1])) for i in range(1, len(reply), 2)
        )
        workers = sorted((r for r in records if r is not None), key=lambda r: r.id)
        return WorkerRegistry(float(reply[0]), tuple(workers))

    def _prune_workers(self, keep: float, limit: int) -> Op[int]:
        args = (self._now(), repr(keep))
        return (
            yield from _pruned(
                limit,
                lambda batch: Eval.on_registry(scripts.PRUNE_WORKERS, self._keys, *args, batch),
            )
        )

    # -- the history of finished attempts (keys.py: {P}:counts, {P}:counts:buckets) ----
    def _add_counts(self, counts: tuple[tuple[CountKey, int], ...]) -> Op[None]:
        args: list[Arg] = [self._now(), len(counts)]
        for key, n in counts:
            args += [orjson.dumps(list(key)).decode(), n]
        yield Step((Eval.on_counts(scripts.ADD_COUNTS, self._keys, *args),))

    def _read_counts(self, since: float) -> Op[CountHistory]:
        call = Eval.on_counts(scripts.READ_COUNTS, self._keys, self._now(), repr(since))
        [reply] = yield Step((call,))
        found = (_count_bucket(text(reply[i]), int(reply[i + 1])) for i in range(1, len(reply), 2))
        return CountHistory(float(reply[0]), tuple(sorted(b for b in found if b is not None)))

    def _prune_counts(self, keep: float, limit: int) -> Op[int]:
        args = (self._now(), repr(keep))

        def call(batch: int) -> Eval:
            return Eval.on_counts(scripts.PRUNE_COUNTS, self._keys, *args, batch)

        return (yield from _pruned(limit, call))


def _count_bucket(field: str, count: int) -> CountBucket | None:
    """A field of {P}:counts; None for one no script of this engine could have written."""
    start, _, key = field.partition(" ")
    try:
        queue, task, outcome = orjson.loads(key)
        return CountBucket(float(start), CountKey(str(queue), str(task), str(outcome)), count)
    except (ValueError, TypeError, orjson.JSONDecodeError):
        return None


def _pruned(limit: int, call: Callable[[int], Eval]) -> Op[int]:
    """Up to `limit` deletions by a pruning script, `PRUNE_RECORDS_BATCH` per call of it."""
    removed = 0
    while removed < limit:
        batch = min(limit - removed, PRUNE_RECORDS_BATCH)
        [count] = yield Step((call(batch),))
        removed += int(count)
        if int(count) < batch:
            break
    return removed


def _worker_record(worker_id: str, record: str) -> WorkerRecord | None:
    """A record of {P}:workers; None for one no script of this engine could have written."""
    fields = record.split(" ", 4)
    try:
        started_at, seen_at, alive_until = (float(f) for f in fields[:3])
        stopped_at = None if fields[3] == "-" else float(fields[3])
        info = info_from(fields[4])
    except (ValueError, IndexError):
        return None
    return WorkerRecord(worker_id, info, started_at, seen_at, alive_until, stopped_at)


def _limit_states(flat: Sequence[Any]) -> dict[str, LimitState]:
    """Records from a script's reply: name, version, expires_at, value, for each."""
    return {
        text(flat[i]): LimitState(
            text(flat[i]), int(flat[i + 1]), text(flat[i + 3]), float(flat[i + 2])
        )
        for i in range(0, len(flat), 4)
    }


def _schedule_record(name: str, queue: str, fields: Sequence[Any]) -> ScheduleRecord:
    """A record from its fields last_tick, last_job_id, last_job_tick, last_fired_at, paused."""
    job_id = opt_text(fields[1])
    return ScheduleRecord(
        name=name,
        queue=queue,
        last_tick=opt_float(fields[0]),
        last_job_id=None if job_id is None else int(job_id),
        last_job_tick=opt_float(fields[2]),
        last_fired_at=opt_float(fields[3]),
        paused=fields[4] in (b"1", "1"),
    )


def _claimed_by(op: Op[list[ClaimedJob]], replies: list[Any] | None) -> list[ClaimedJob]:
    """What a claim whose first step was answered with `replies` claimed, without sending
    anything more: nothing, when it needed another step (several queues) or failed."""
    if replies is None or any(isinstance(r, BaseException) for r in replies):
        op.close()
        return []
    try:
        op.send(replies)
    except StopIteration as done:
        return list(done.value)
    op.close()
    return []


__all__ = ["RedisBackend"]
