"""The records of the worker registry, and what the front layer checks in them.

Each worker process writes a record of itself with its heartbeat (`record_worker`): who it
is (host, pid, queues, slots, version) as one JSON text the store keeps as it is, and how
long it counts as alive without another beat (`ttl`). The store stamps the times by its own
clock, so a host whose clock is off is judged by the same now as the rest of the fleet:
`started_at` at the first beat, `seen_at` at each, `alive_until` = now + ttl. A worker's last
beat, when it stops cleanly, marks it stopped; a stopped record stays stopped (a beat that was
already on its way cannot bring it back). A worker that died leaves its record to go stale:
it reads as lost once `alive_until` has passed, and the pruner deletes it `WORKER_KEEP`
seconds after it was last seen. `list_workers` returns every record and the store's now, so
`stagecrew workers` shows the live ones and the recently stopped or lost ones. A worker id
names one run of one worker (the supervisor and `make_worker_id` draw a fresh one for each):
a program that gives a `Worker` a fixed id finds it stopped after its first clean stop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import orjson

from .inputs import check_queue_name

MAX_WORKER_ID = 200
MAX_WORKER_TTL = 86_400.0
WORKER_KEEP = 86_400.0
"""Seconds the record of a worker that stopped or died is kept after it was last seen."""


class WorkerStatus(StrEnum):
    ALIVE = "alive"
    """Beating: its last beat promised another before `alive_until`, which has not passed."""
    STOPPED = "stopped"
    """Stopped cleanly: its last beat said so."""
    LOST = "lost"
    """Silent past `alive_until` without saying it stopped: killed, crashed or cut off."""


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """What a worker process says of itself with each beat."""

    host: str
    pid: int
    queues: tuple[str, ...]
    concurrency: int
    busy: int
    """Slots running a job at this beat."""
    version: str
    """The stagecrew version the worker runs."""


@dataclass(frozen=True, slots=True)
class WorkerBeat:
    """One `record_worker` write: a worker's id, what it says of itself, and for how long."""

    id: str
    info: WorkerInfo
    ttl: float
    """Seconds from the store's now during which the worker counts as alive without another
    beat (a few of its beat intervals)."""
    stopped: bool = False
    """Its last beat: it stops cleanly now."""


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    """One worker's record as the store keeps it; every time is the store's."""

    id: str
    info: WorkerInfo
    started_at: float
    seen_at: float
    alive_until: float
    stopped_at: float | None

    def status(self, now: float) -> WorkerStatus:
        if self.stopped_at is not None:
            return WorkerStatus.STOPPED
        return WorkerStatus.ALIVE if self.alive_until > now else WorkerStatus.LOST


@dataclass(frozen=True, slots=True)
class WorkerRegistry:
    """What `list_workers` returns: every record the store keeps, and its now."""

    now: float
    workers: tuple[WorkerRecord, ...]
    """Sorted by id."""

    def alive(self) -> list[WorkerRecord]:
        return [w for w in self.workers if w.status(self.now) is WorkerStatus.ALIVE]

    def served_queues(self) -> set[str]:
        """The queues at least one live worker claims from."""
        return {queue for worker in self.alive() for queue in worker.info.queues}


def recorded(previous: WorkerRecord | None, beat: WorkerBeat, now: float) -> WorkerRecord:
    """The record `beat` leaves at `now` over `previous`: the rule every engine applies."""
    if previous is not None and previous.stopped_at is not None:
        return WorkerRecord(
            beat.id, beat.info, previous.started_at, now, previous.alive_until, previous.stopped_at
        )
    started_at = now if previous is None else previous.started_at
    stopped_at = now if beat.stopped else None
    alive_until = now if beat.stopped else now + beat.ttl
    return WorkerRecord(beat.id, beat.info, started_at, now, alive_until, stopped_at)


def info_text(info: WorkerInfo) -> str:
    """The JSON text an engine stores for `info` (and `info_from` reads back)."""
    return orjson.dumps(
        {
            "host": info.host,
            "pid": info.pid,
            "queues": list(info.queues),
            "concurrency": info.concurrency,
            "busy": info.busy,
            "version": info.version,
        }
    ).decode()


def info_from(text: str | bytes) -> WorkerInfo:
    """The info of a stored record; a record no worker could have written reads as empty."""
    try:
        data = orjson.loads(text)
        return WorkerInfo(
            host=str(data["host"]),
            pid=int(data["pid"]),
            queues=tuple(str(q) for q in data["queues"]),
            concurrency=int(data["concurrency"]),
            busy=int(data["busy"]),
            version=str(data["version"]),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return WorkerInfo(host="?", pid=0, queues=(), concurrency=0, busy=0, version="?")


def check_worker_id(worker_id: object, operation: str) -> str:
    if not isinstance(worker_id, str) or not worker_id:
        raise ValueError(f"{operation} needs a worker id (non-empty str), got {worker_id!r}")
    if len(worker_id) > MAX_WORKER_ID or any(ord(c) < 32 for c in worker_id):
        raise ValueError(
            f"{operation}: a worker id is at most {MAX_WORKER_ID} characters without control "
            f"characters, got {worker_id!r}"
        )
    _check_text(worker_id, operation, "the worker id")
    return worker_id


def check_beat(beat: object) -> WorkerBeat:
    """Refuse, before anything is written, a beat the store could not keep as given."""
    operation = "record_worker"
    if not isinstance(beat, WorkerBeat):
        raise TypeError(f"{operation} takes a WorkerBeat, not {beat!r}")
    check_worker_id(beat.id, operation)
    info = beat.info
    if not isinstance(info, WorkerInfo):
        raise TypeError(f"{operation}: a beat's info is a WorkerInfo, not {info!r}")
    for what, value in (("host", info.host), ("version", info.version)):
        if not isinstance(value, str):
            raise TypeError(f"{operation}: the worker's {what} must be a str, not {value!r}")
        _check_text(value, operation, f"the worker's {what}")
    if isinstance(info.queues, str) or not isinstance(info.queues, tuple):
        raise TypeError(
            f"{operation}: the worker's queues are a tuple of names, not {info.queues!r}"
        )
    for queue in info.queues:
        check_queue_name(queue, operation)
    for what, number, least in (
        ("pid", info.pid, 0),
        ("concurrency", info.concurrency, 1),
        ("busy", info.busy, 0),
    ):
        if isinstance(number, bool) or not isinstance(number, int) or number < least:
            raise ValueError(f"{operation}: the worker's {what} must be an int >= {least}")
    ttl = beat.ttl
    if (
        isinstance(ttl, bool)
        or not isinstance(ttl, int | float)
        or not math.isfinite(ttl)
        or not 0 < ttl <= MAX_WORKER_TTL
    ):
        raise ValueError(
            f"{operation}: ttl must be seconds in (0, {MAX_WORKER_TTL:g}], not {ttl!r}"
        )
    if not isinstance(beat.stopped, bool):
        raise TypeError(f"{operation}: stopped is a bool, not {beat.stopped!r}")
    return beat


def check_keep(keep: object, operation: str) -> float:
    if (
        isinstance(keep, bool)
        or not isinstance(keep, int | float)
        or not math.isfinite(keep)
        or keep < 0
    ):
        raise ValueError(f"{operation}: keep must be finite seconds >= 0, not {keep!r}")
    return float(keep)


def _check_text(text: str, operation: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{operation}: {what} {text!r} is not valid UTF-8") from None
