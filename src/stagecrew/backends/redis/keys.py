"""Store URLs, and the key layout: the one place it is written down.

P is the key prefix (`?prefix=`, default `stagecrew`); T is a queue's hash tag,
`{P:<queue, percent-encoded>}`, so that every key of one queue lives in one Cluster slot.
KEYS[n] is the key's place in `QueueKeys.keys`, which every script receives, in that order
(the scripts' own headers name the keys each touches)::

    key              KEYS  type     what it holds
    {P}:ids           11   STRING   the job id counter (INCRBY)
    {P}:queues         -   SET      every queue that ever got a job (stats, rescue, listing)
    {P}:idempotency    8   HASH     idempotency key -> "<job id> <T of its queue>" (single
                                    Redis; see Cluster below): one index serves every queue, so
                                    an entry says where its job's hash is (an entry of the id
                                    alone, as older versions wrote, names a job of the queue
                                    reading it)
    {P}:unique        13   HASH     unique key -> the job that took it last, as in
                                    {P}:idempotency (single Redis; see Cluster below); that job
                                    holds it while its state is one of its unique_states, which
                                    enqueue.lua and requeue.lua read: an entry whose job left
                                    those states, or is gone, is free (nothing else updates
                                    the index)
    {P}:layout         -   STRING   the version of this layout ("1")
    {P}:schedules      -   HASH     schedule name -> the queue whose slot holds its record (an
                                    index for listing, written before each fire; see below)
    {P}:workflows      -   HASH     workflow id -> the queue whose slot holds its record and every
                                    member (written before enqueue_workflow.lua; see below)
    {P}:limits         -   HASH     limit name -> its limit record (limit_states.py), the text
                                    "<version> <expires_at> <value>": the version's digits (kept
                                    as text in the scripts: versions reach 2**62, past a Lua
                                    number's exact integers), expires_at by %.17g, then the JSON
                                    value as given. A record expired at now reads as absent
    {P}:limits:expiry  -   ZSET     limit name, scored by its record's expires_at: what
                                    prune_limits.lua deletes from, earliest first
    {P}:workers        -   HASH     worker id -> its worker record (worker_registry.py), the
                                    text "<started_at> <seen_at> <alive_until> <stopped_at>
                                    <info>": times by %.17g (stopped_at '-' while it runs),
                                    then the JSON info as the worker wrote it
    {P}:workers:seen   -   ZSET     worker id, scored by its record's seen_at: what
                                    prune_workers.lua deletes from, longest silent first
    {P}:counts         -   HASH     "<bucket> <key>" -> a count of finished attempts
                                    (job_counts.py): bucket the minute's start by %.17g, key
                                    the JSON text [queue, task, outcome]
    {P}:counts:buckets -   ZSET     those fields, scored by bucket: what read_counts.lua reads
                                    and prune_counts.lua deletes from
    T:job:<id>         -   HASH     one job: task, queue, state, payload, priority, run_at,
                                    attempt, max_attempts, enqueued_at, started_at, finished_at,
                                    lease_owner, lease_expires_at, idempotency_key,
                                    cancel_requested ("1"), lost, claims, snoozes, result, errors
                                    (a JSON array), fairness_key, order_at, original_priority,
                                    progress (JSON text), progress_at, unique_key,
                                    unique_states (names joined by commas),
                                    concurrency_key (what a per-key cap counts);
                                    absent or '' fields are None / 0
    T:steps:<id>       -   HASH     a job's completed steps and checkpoint, only for a job that
                                    stored one: "s:<name>" -> a step's result, "state" -> the
                                    checkpoint, each "<seq> <stored_at> <JSON>" (seq: the order
                                    first stored); written by store_step.lua (fenced), deleted
                                    with the job (prune, purge)
    T:available        1   ZSET     due jobs; score = priority, member = "<order_at µs, 17
                                    digits>:<L><id>", L the character '0' + the id's length, so
                                    that the set's order is the claim order (priority, order_at,
                                    id); order_at is run_at but for a fair-keyed job enqueued
                                    due, whose hash holds it in `order_at` while available
    T:scheduled        2   ZSET     delayed and retrying jobs; score = run_at, member = id
    T:running          3   ZSET     claimed jobs; score = lease expiry (the rescuer's index,
                                    what release_worker reads whole: there is no index by worker,
                                    and what a capped claim counts: the members scored after now
                                    hold a slot of their caps)
    T:succeeded        4   ZSET     score = finished_at (retention), member = id
    T:dead             5   ZSET     the dead-letter queue; score = finished_at, member = id
    T:cancelled        6   ZSET     score = finished_at, member = id
    T:all              7   ZSET     every job of the queue; score = member = id (listing)
    T:registered       9   STRING   "1" once the queue is in {P}:queues
    T:due             10   ZSET     scheduled jobs whose run_at has passed, moved there by a
                                    claim and ordered like T:available; still in state scheduled
                                    until claimed
    T:fairness        12   ZSET     fair queues: member = fairness key, score = the order time
                                    (µs) given to that key's latest job; entries idle for a day
                                    are removed by the next keyed enqueue
    T:wake             -   LIST     a wake-up token ("1"), at most one, pushed whenever work
                                    becomes due (enqueue, retry, hand-back, rescue, requeue) and
                                    by a claim that leaves work behind; an idle worker's BLPOP
                                    takes it (see wake.py)
    T:schedule:<name>  -   HASH     one schedule whose jobs go to this queue: last_tick,
                                    last_job_id, last_job_tick, last_fired_at, paused ("1"/"0");
                                    kept in the queue's slot so that fire_schedule.lua can
                                    compare-and-set it and insert the tick's jobs in one script
    T:workflow:<id>    -   HASH     one workflow whose members are all in this queue: status,
                                    step, shape (JSON [[is a group, size], ...]), on_failure,
                                    created_at, finished_at, result, members (JSON: the member
                                    ids by step), stored (members whose hash still exists; the
                                    last one deleted deletes the record). Member hashes hold
                                    workflow_id, workflow_step, workflow_index and, once their
                                    step is reached, workflow_input. The fan-in (`fan_in` in
                                    _lib.lua) runs inside ack.lua and cancel.lua
    T:paused           -   STRING   "1" while the queue is paused: claim.lua and peek.lua then
                                    give out none of its jobs (an O(1) EXISTS in the claim
                                    itself); set and removed by queue_control.lua
    T:finished         -   channel  one message per script call that made jobs final (ack,
                                    cancel, rescue, release_worker): their ids, separated by
                                    spaces, or '' for "any job of this queue" (past 1000 ids);
                                    what wait_finished listens to (see finished.py)

Each job is in exactly one of the state indexes, the one its `state` field names (a scheduled
job in T:scheduled or T:due); the scripts keep them consistent. A claim moves a job from
T:available or T:due to T:running in the same script that sets its lease ("never pop and
hope"): a worker that dies holding it leaves it in T:running, where the rescuer finds it once
the lease has expired. `claims` counts every claim of the job and only a claim changes it (by
one more): it is the fencing token of the latest claim, kept by a requeue, hand-back or rescue.
In a job hash, lease_owner, lease_expires_at and result hold '' where they are None, and an
absent attempt, lost or claims is 0.

A claim with concurrency caps (backends/caps.py) is claim_capped.lua, one script that counts
and claims: on a single Redis it reads {P}:queues and names every queue's T:running and job
hashes itself (T built from the queue's name as `Keys.queue` does), so task and key caps count
the running jobs of every queue, and one call claims from all the claimed queues, merged in
claim order. A claim without caps is claim.lua, unchanged.

Redis Cluster (`?cluster=1`). Every script touches the keys of one queue only, hence one slot;
operations over several queues call one script per queue. Two store-wide structures do not fit
that rule: the id counter, whose ids the engine reserves with INCRBY before it calls a queue's
enqueue script (on a single Redis the script increments it itself), and the idempotency index,
kept per queue there (T:idempotency, in KEYS[8]; T:ids in KEYS[11] is unused), so that on a
Cluster an idempotency key deduplicates within its queue only; so is the unique index
(T:unique, in KEYS[13]): on a Cluster a unique key holds within its queue only. Concurrency
caps likewise: claim_capped.lua counts the running jobs of its own queue only there, so a task
cap or a key cap bounds each queue's running jobs (a claim over several queues calls it per
queue, in the order of their heads, each for what is left of the limit); a queue cap is exact
on both layouts. A schedule's record lives under
its queue's tag for the same reason (its fire is one script on one slot); the {P}:schedules
index, in another slot, is written by a separate command before the script and only lists
the records: losing a write to it can hide a schedule from `cron list`, never fire a tick twice.
A workflow is kept the same way: its record and all its members in one queue's slot, so that
the fan-in is part of the ack script of that queue (a workflow whose members name several
queues is refused, on both layouts, before anything is written); {P}:workflows only finds
the queue of a workflow id, for `get_workflow` and `cancel_workflow`.
The limit records belong to no queue: {P}:limits and {P}:limits:expiry share the slot of the
store's tag {P}, so each limit-state script (read, swap, list, prune) touches that one slot,
and a swap of several records is one atomic write on both layouts. The worker registry's
{P}:workers and {P}:workers:seen, and the history's {P}:counts and
{P}:counts:buckets, share that slot too.
"""

from __future__ import annotations

import math
import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from ...errors import ConfigurationError

DEFAULT_PREFIX = "stagecrew"
TIMEOUT_DEFAULTS: dict[str, Any] = {
    "socket_timeout": 10.0,  # seconds a command may wait for its reply
    "socket_connect_timeout": 5.0,  # seconds to open a connection
    "health_check_interval": 30,  # seconds idle before a connection is PINGed before use
    "socket_keepalive": True,
}
"""redis-py options stagecrew sets on every connection; the URL's own (same names) win."""
KEEPALIVE_DEFAULTS = {"keepalive_idle": 10, "keepalive_interval": 5, "keepalive_count": 3}
"""TCP keepalive timing (seconds idle, seconds between probes, probes): a dead peer of an idle
connection is noticed in about 25 s. stagecrew's own URL options, as redis-py has none."""
_KEEPALIVE_SOCKET_OPTIONS = {
    "keepalive_idle": getattr(socket, "TCP_KEEPIDLE", None),
    "keepalive_interval": getattr(socket, "TCP_KEEPINTVL", None),
    "keepalive_count": getattr(socket, "TCP_KEEPCNT", None),
}
_OUR_QUERY = frozenset(
    {"prefix", "allow_eviction", "cluster", "cluster_layout", *KEEPALIVE_DEFAULTS}
)
_SECONDS_QUERY = {"socket_timeout": 0.0, "socket_connect_timeout": 0.0, "health_check_interval": -1}
"""redis-py's time options in a URL, checked here (finite, above the bound) before redis-py
reads them: a NaN or infinite socket timeout would make every call wait for ever."""
_TRUE = frozenset({"1", "true", "yes", "on"})


@dataclass(frozen=True, slots=True)
class Settings:
    redis_url: str
    """The URL without stagecrew's own query parameters, as redis-py reads it."""
    display_url: str
    """The URL without its password, for messages."""
    prefix: str
    allow_eviction: bool
    cluster: bool
    """Talk to a Redis Cluster (`?cluster=1`): redis-py's cluster clients route by slot."""
    cluster_layout: bool
    """Keep the idempotency index per queue and reserve ids before enqueueing (implied by
    `cluster`; `?cluster_layout=1` alone runs that layout on a single Redis, for tests)."""
    connection_options: dict[str, Any] = field(default_factory=dict)
    """Timeouts and keepalives for redis-py's connections (the URL's own settings win)."""


def parse_url(url: str) -> Settings:
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigurationError(f"not a Redis URL: {url!r}; use redis://host:6379/0")
    ours: dict[str, str] = {}
    theirs: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in _OUR_QUERY:
            ours[name] = value
        else:
            if name in _SECONDS_QUERY:
                _check_seconds(url, name, value, above=_SECONDS_QUERY[name])
            theirs.append((name, value))
    prefix = ours.get("prefix", DEFAULT_PREFIX)
    if not prefix or "{" in prefix or "}" in prefix:
        raise ConfigurationError(
            f"bad key prefix {prefix!r} in {url!r}: use a non-empty name without braces, "
            "e.g. ?prefix=myapp"
        )
    redis_url = urlunsplit(parts._replace(query=urlencode(theirs)))
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    display = urlunsplit(parts._replace(netloc=netloc))
    keepalive: dict[int, int] = {}
    for name, default in KEEPALIVE_DEFAULTS.items():
        given = ours.get(name, str(default))
        seconds = _check_seconds(url, name, given, above=0)
        if seconds != int(seconds):
            raise ConfigurationError(f"option {name}={given!r} in {url!r} must be whole seconds")
        option = _KEEPALIVE_SOCKET_OPTIONS[name]
        if option is not None:  # not every platform can tune keepalives per socket
            keepalive[option] = int(seconds)
    return Settings(
        redis_url=redis_url,
        display_url=display,
        prefix=prefix,
        allow_eviction=ours.get("allow_eviction", "").lower() in _TRUE,
        cluster=ours.get("cluster", "").lower() in _TRUE,
        cluster_layout=(ours.get("cluster_layout") or ours.get("cluster", "")).lower() in _TRUE,
        connection_options={**TIMEOUT_DEFAULTS, "socket_keepalive_options": keepalive},
    )


def _check_seconds(url: str, name: str, value: str, *, above: float) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigurationError(f"option {name}={value!r} in {url!r} is not a number") from None
    if not above < seconds < math.inf:  # false for NaN
        bound = "0 or more" if above < 0 else "more than 0"
        raise ConfigurationError(
            f"option {name}={value!r} in {url!r} must be a finite number of seconds, {bound}"
        )
    return seconds


@dataclass(frozen=True, slots=True)
class QueueKeys:
    name: str
    tag: str
    keys: tuple[str, ...]
    """The thirteen KEYS every script receives, in the order of the table above."""
    registered: str
    wake: str
    finished: str
    paused: str

    def job(self, job_id: int | str) -> str:
        return f"{self.tag}:job:{job_id}"

    def steps(self, job_id: int | str) -> str:
        """A job's stored steps and checkpoint (store_step.lua names it)."""
        return f"{self.tag}:steps:{job_id}"

    def schedule(self, name: str) -> str:
        """The record of a schedule whose jobs go to this queue (fire_schedule.lua names it)."""
        return f"{self.tag}:schedule:{name}"

    def workflow(self, workflow_id: str) -> str:
        """The record of a workflow whose members are all in this queue."""
        return f"{self.tag}:workflow:{workflow_id}"


class Keys:
    def __init__(self, prefix: str, *, per_queue_globals: bool) -> None:
        self.prefix = prefix
        self.ids = f"{{{prefix}}}:ids"
        self.queues = f"{{{prefix}}}:queues"
        self.idempotency = f"{{{prefix}}}:idempotency"
        self.unique = f"{{{prefix}}}:unique"
        self.layout = f"{{{prefix}}}:layout"
        self.schedules = f"{{{prefix}}}:schedules"
        self.workflows = f"{{{prefix}}}:workflows"
        self.tag = f"{{{prefix}}}"
        """The store's own hash tag: the limit-state scripts' ARGV[1], as a queue's is T."""
        self.limits = f"{{{prefix}}}:limits"
        self.limits_expiry = f"{{{prefix}}}:limits:expiry"
        self.workers = f"{{{prefix}}}:workers"
        self.workers_seen = f"{{{prefix}}}:workers:seen"
        self.counts = f"{{{prefix}}}:counts"
        self.counts_buckets = f"{{{prefix}}}:counts:buckets"
        self._per_queue_globals = per_queue_globals
        self._queues: dict[str, QueueKeys] = {}

    def queue(self, name: str) -> QueueKeys:
        found = self._queues.get(name)
        if found is None:
            tag = "{" + self.prefix + ":" + quote(name, safe="") + "}"
            if self._per_queue_globals:
                idempotency, ids = f"{tag}:idempotency", f"{tag}:ids"
                unique = f"{tag}:unique"
            else:
                idempotency, ids, unique = self.idempotency, self.ids, self.unique
            keys = (
                f"{tag}:available",
                f"{tag}:scheduled",
                f"{tag}:running",
                f"{tag}:succeeded",
                f"{tag}:dead",
                f"{tag}:cancelled",
                f"{tag}:all",
                idempotency,
                f"{tag}:registered",
                f"{tag}:due",
                ids,
                f"{tag}:fairness",
                unique,
            )
            found = QueueKeys(
                name, tag, keys, keys[8], f"{tag}:wake", f"{tag}:finished", f"{tag}:paused"
            )
            if len(self._queues) < 10_000:
                self._queues[name] = found
        return found
