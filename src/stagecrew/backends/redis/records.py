"""Job records to and from what the scripts take and return."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from ...job import ClaimedJob, Job, JobState, NewJob
from ..base import JobFilter
from ..records import decode_errors, salvage_claim
from ..steps import STATE, STEP, JobSteps, progress_from_store, steps_from_rows
from ..unique import states_from_text, states_text


def steps_from_hash(h: Mapping[bytes, Any]) -> JobSteps:
    """A T:steps:<id> hash: fields "s:<name>" and "state", values "<seq> <stored_at> <JSON>"."""
    rows = []
    for field, raw in h.items():
        seq, stored_at, value = bytes(raw).split(b" ", 2)
        name = bytes(field)
        kind, step = (STATE, b"") if name == b"state" else (STEP, name[2:])
        rows.append((int(seq), (kind, step, value, float(stored_at))))
    rows.sort(key=lambda row: row[0])
    return steps_from_rows(row for _, row in rows)


Arg = str | bytes | int | float
"""One argument of a Redis command."""

_STATES = {state.value: state for state in JobState}


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def opt_text(value: Any) -> str | None:
    """A field that may be absent or '' (the scripts write '' for None)."""
    return None if value is None or value in (b"", "") else text(value)


def opt_float(value: Any) -> float | None:
    return None if value is None or value in (b"", "") else float(value)


def pairs(flat: Sequence[Any]) -> dict[bytes, Any]:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


def hash_fields(reply: Any) -> dict[bytes, Any]:
    """An HGETALL reply: a flat list from the lean wires, a dict from redis-py's clients."""
    return reply if isinstance(reply, dict) else pairs(reply)


def _opt_int(value: Any) -> int | None:
    return None if value is None or value == b"" else int(value)


def job_from_hash(job_id: int, queue: str, h: Mapping[bytes, Any]) -> Job:
    try:
        return _job_from_hash(job_id, queue, h)
    except (KeyError, ValueError, TypeError):
        return _damaged_job_from_hash(job_id, queue, h)


def _damaged_job_from_hash(job_id: int, queue: str, h: Mapping[bytes, Any]) -> Job:
    """A job hash with fields missing or garbled, shown as far as it can be read.

    Inspection must work on a damaged job (the worker dead-letters one it claims):
    unreadable text is shown with U+FFFD, unreadable numbers as 0 or NaN.
    """

    def lenient(name: bytes) -> str:
        raw = h.get(name)
        return "" if raw is None else bytes(raw).decode("utf-8", "replace")

    def number(name: bytes, kind: type[int] | type[float], default: float | None) -> Any:
        try:
            return kind(h[name])
        except (KeyError, ValueError, TypeError):
            return default

    nan = float("nan")
    return Job(
        id=job_id,
        task=lenient(b"task"),
        queue=queue,
        state=_STATES.get(lenient(b"state"), JobState.DEAD),
        payload=lenient(b"payload"),
        priority=number(b"priority", int, 0),
        run_at=number(b"run_at", float, nan),
        attempt=number(b"attempt", int, 0),
        max_attempts=number(b"max_attempts", int, 0),
        enqueued_at=number(b"enqueued_at", float, nan),
        started_at=number(b"started_at", float, None),
        finished_at=number(b"finished_at", float, None),
        lease_owner=lenient(b"lease_owner") or None,
        lease_expires_at=number(b"lease_expires_at", float, None),
        idempotency_key=lenient(b"idempotency_key") or None,
        cancel_requested=h.get(b"cancel_requested") == b"1",
        lost=number(b"lost", int, 0),
        result_json=lenient(b"result") or None,
        errors=decode_errors(h.get(b"errors")),
        claims=number(b"claims", int, 0),
        snoozes=number(b"snoozes", int, 0),
        fairness_key=lenient(b"fairness_key") or None,
        original_priority=number(b"original_priority", int, None),
        progress=progress_from_store(h.get(b"progress"), h.get(b"progress_at")),
        unique_key=lenient(b"unique_key") or None,
        unique_states=states_from_text(h.get(b"unique_states")),
        workflow_id=lenient(b"workflow_id") or None,
        workflow_step=number(b"workflow_step", int, None),
        workflow_index=number(b"workflow_index", int, None),
        concurrency_key=lenient(b"concurrency_key") or None,
    )


def _job_from_hash(job_id: int, queue: str, h: Mapping[bytes, Any]) -> Job:
    return Job(
        id=job_id,
        task=text(h[b"task"]),
        queue=queue,
        state=_STATES[text(h[b"state"])],
        payload=text(h[b"payload"]),
        priority=int(h[b"priority"]),
        run_at=float(h[b"run_at"]),
        attempt=int(h.get(b"attempt") or 0),
        max_attempts=int(h[b"max_attempts"]),
        enqueued_at=float(h[b"enqueued_at"]),
        started_at=opt_float(h.get(b"started_at")),
        finished_at=opt_float(h.get(b"finished_at")),
        lease_owner=opt_text(h.get(b"lease_owner")),
        lease_expires_at=opt_float(h.get(b"lease_expires_at")),
        idempotency_key=opt_text(h.get(b"idempotency_key")),
        cancel_requested=h.get(b"cancel_requested") == b"1",
        lost=int(h.get(b"lost") or 0),
        result_json=opt_text(h.get(b"result")),
        errors=decode_errors(h.get(b"errors")),
        claims=int(h.get(b"claims") or 0),
        snoozes=int(h.get(b"snoozes") or 0),
        fairness_key=opt_text(h.get(b"fairness_key")),
        original_priority=_opt_int(h.get(b"original_priority")),
        progress=progress_from_store(h.get(b"progress"), h.get(b"progress_at")),
        unique_key=opt_text(h.get(b"unique_key")),
        unique_states=states_from_text(h.get(b"unique_states")),
        workflow_id=opt_text(h.get(b"workflow_id")),
        workflow_step=_opt_int(h.get(b"workflow_step")),
        workflow_index=_opt_int(h.get(b"workflow_index")),
        concurrency_key=opt_text(h.get(b"concurrency_key")),
    )


def claimed_jobs(queue: str, reply: Sequence[Any]) -> tuple[list[int], list[ClaimedJob]]:
    """The ids and jobs of a claim.lua reply: {now, lease expiry, then 13 fields per job}.

    A job's first field is its member of the queue's waiting index: order_at in whole
    microseconds (17 digits), ":", one length character, then the id (`due_member` in
    _lib.lua). Its last two are nil but for a workflow member.
    """
    started, expires = float(reply[0]), float(reply[1])
    rows = list(zip(*(reply[2 + k :: 13] for k in range(13)), strict=True))
    ids = [int(row[0][19:]) for row in rows]
    try:
        return ids, [
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
                order_at=int(member[:17]) / 1_000_000,
                lost=lost,
                snoozes=snoozes,
                workflow_id=workflow_id.decode() if workflow_id else None,
                workflow_input=workflow_input.decode() if workflow_input else None,
            )
            for job_id, (
                member,
                attempt,
                task,
                payload,
                most,
                priority,
                enqueued,
                run_at,
                lost,
                token,
                snoozes,
                workflow_id,
                workflow_input,
            ) in zip(ids, rows, strict=True)
        ]
    except (AttributeError, TypeError, ValueError):  # a damaged job hash
        return ids, [
            salvage_claim(
                job_id=job_id,
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
                snoozes=r[10],
            )
            for job_id, r in zip(ids, rows, strict=True)
        ]


def new_job_fields(new: NewJob) -> tuple[Arg, ...]:
    """A job's fields as enqueue.lua reads them (after the reserved id)."""
    key, run_at, delay, fair = new.idempotency_key, new.run_at, new.delay, new.fairness_key
    return (
        new.task,
        new.payload,
        str(int(new.priority)),
        "" if run_at is None else repr(float(run_at)),
        "0.0" if not delay else repr(float(delay)),
        str(int(new.max_attempts)),
        "" if key is None else "=" + key,
        "" if fair is None else "=" + fair,
    )


NO_KEYS: tuple[Arg, ...] = ("", "", "")


def concurrency_field(new: NewJob) -> Arg:
    """A job's concurrency key as enqueue.lua reads it after `new_job_fields` ('' = none, else
    '=' .. key): the tenth field, sent only by a batch where some job has one."""
    key = new.concurrency_key
    return "" if key is None else "=" + key


def key_fields(new: NewJob) -> tuple[Arg, ...]:
    """The idempotency window and the unique key of a job, as enqueue.lua reads them after
    its concurrency key: window seconds ('' = none), unique key ('' = none, else '=' .. key),
    unique states (names joined by commas)."""
    if new.idempotency_key is None and new.unique_key is None:
        return NO_KEYS
    window = new.idempotency_window
    return (
        "" if window is None or new.idempotency_key is None else repr(float(window)),
        "" if new.unique_key is None else "=" + new.unique_key,
        states_text(new.unique_states),
    )


def filter_json(job_filter: JobFilter, states: Iterable[JobState] | None = None) -> str:
    """A JobFilter as the scripts read it (`job_filter` in lua/_lib.lua); queues are ours."""
    data: dict[str, Any] = {}
    wanted = job_filter.states if states is None else states
    if wanted:
        data["states"] = sorted(s.value for s in wanted)
    if job_filter.tasks:
        data["tasks"] = sorted(job_filter.tasks)
    if job_filter.ids:
        data["ids"] = sorted(job_filter.ids)
    if job_filter.before_id is not None:
        data["before_id"] = job_filter.before_id
    if job_filter.finished_before is not None:
        data["finished_before"] = job_filter.finished_before
    return orjson.dumps(data).decode()
