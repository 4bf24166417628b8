"""The records every engine writes and reads alike: built and decoded here, once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ..job import AttemptError, ClaimedJob, ErrorKind, Job, JobState
from .steps import progress_from_store
from .unique import states_from_text


@dataclass(frozen=True, slots=True)
class LostWorkerError:
    """The error a rescue or a release-worker records on each job it settles.

    Its text is decided here; a statement or script that settles jobs in the store gets
    these fields as parameters (`params`) and fills in only what each row knows: the
    lease owner (`message` has one `%s` for it), the attempt and the store's time.
    """

    type: str = "WorkerLost"
    message: str = "worker %s lost its lease (worker lost)"
    kind: ErrorKind = ErrorKind.LOST
    cancelled_kind: ErrorKind = ErrorKind.CANCELLED
    """The kind when a cancellation was pending: the job ends cancelled, not lost."""

    def build(self, owner: str | None, attempt: int, at: float, *, cancelled: bool) -> AttemptError:
        return AttemptError(
            attempt=attempt,
            at=at,
            kind=self.cancelled_kind if cancelled else self.kind,
            type=self.type,
            message=self.message % (owner,),
        )

    def params(self) -> dict[str, str]:
        """The record's fixed fields, named as the engines' statements and scripts take them."""
        return {
            "lost_type": self.type,
            "lost_message": self.message,
            "lost_kind": self.kind.value,
            "lost_cancelled_kind": self.cancelled_kind.value,
        }


WORKER_LOST = LostWorkerError()


def _as_text(raw: object) -> str:
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "replace")
    return raw if isinstance(raw, str) else repr(raw)


def _corrupt(raw: object, why: str) -> AttemptError:
    return AttemptError(
        attempt=0,
        at=0.0,
        kind=ErrorKind.ERROR,
        type="CorruptErrorRecord",
        message=f"the stored errors of this job could not be read ({why}); "
        "the stored text is kept as this entry's traceback",
        traceback=_as_text(raw),
    )


def decode_errors(raw: object) -> tuple[AttemptError, ...]:
    """Read a stored errors array without ever failing: inspection must work on a damaged job.

    Whatever cannot be read becomes a `CorruptErrorRecord` entry that keeps
    the stored text, so nothing is hidden and nothing raises.
    """
    if raw is None or raw in ("[]", b"[]"):
        return ()
    if not isinstance(raw, str | bytes):
        return (_corrupt(raw, f"a {type(raw).__name__}, not JSON text"),)
    try:
        items = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return (_corrupt(raw, f"not valid JSON: {exc}"),)
    if not isinstance(items, list):
        return (_corrupt(raw, "not a JSON array"),)
    errors = []
    for item in items:
        try:
            errors.append(AttemptError.from_json(item))
        except (AttributeError, TypeError, ValueError) as exc:
            errors.append(_corrupt(orjson.dumps(item), f"a bad entry: {exc}"))
    return tuple(errors)


class _Salvage:
    """Lenient readers of stored fields that note what is wrong instead of raising."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def text(self, name: str, raw: object) -> str:
        if type(raw) is str:
            return raw
        if isinstance(raw, bytes):
            try:
                return raw.decode()
            except UnicodeDecodeError:
                self.problems.append(f"{name} is not valid UTF-8")
                return raw.decode("utf-8", "replace")
        self.problems.append(f"{name} is missing" if raw is None else f"{name} is not text")
        return ""

    def number(self, name: str, raw: object, default: float, kind: type[int] | type[float]) -> Any:
        if type(raw) is int or (type(raw) is float and kind is float):
            return raw if kind is int else float(raw)
        if isinstance(raw, bytes | str):
            try:
                return kind(raw)
            except ValueError:
                pass
        wanted = "an integer" if kind is int else "a number"
        self.problems.append(
            f"{name} is missing"
            if raw is None
            else f"{name} is not {wanted}: {_as_text(raw)[:40]!r}"
        )
        return default


def salvage_claim(
    *,
    job_id: int,
    attempt: int,
    token: int,
    queue: str,
    task: object,
    payload: object,
    max_attempts: object,
    priority: object,
    enqueued_at: object,
    run_at: object,
    started_at: float,
    lease_expires_at: float,
    lost: object = 0,
    snoozes: object = 0,
) -> ClaimedJob:
    """A claimed job from stored fields that may be damaged; never raises.

    An engine calls this only when its fast conversion failed. A sound record
    comes out as the fast path would make it; a damaged one gets placeholders
    and a `defect` naming every bad field, and the worker dead-letters it unrun.
    `job_id`, `attempt`, `token` (the fencing token) and `queue` are taken as they are.
    """
    read = _Salvage()
    job = ClaimedJob(
        id=job_id,
        task=read.text("task", task),
        queue=queue,
        payload=read.text("payload", payload),
        attempt=attempt,
        token=token,
        max_attempts=read.number("max_attempts", max_attempts, attempt, int),
        priority=read.number("priority", priority, 0, int),
        enqueued_at=read.number("enqueued_at", enqueued_at, started_at, float),
        run_at=read.number("run_at", run_at, started_at, float),
        started_at=started_at,
        lease_expires_at=lease_expires_at,
        lost=lost if isinstance(lost, int) else 0,
        snoozes=snoozes if isinstance(snoozes, int) else 0,
    )
    if not read.problems:
        return job
    return job._replace(defect="; ".join(read.problems))


_JOB_STATE = {state.value: state for state in JobState}


def _as_is(value: Any) -> Any:
    return value


def job_from_row(row: Sequence[Any], time_value: Callable[[Any], Any] = _as_is) -> Job:
    """A job from a SQL engine's row of the jobs table's columns, in the migrations' order.

    `time_value` converts each time column as the engine stores it (SQLite hands back an
    integral REAL as an int). The errors column is read leniently (`decode_errors`).
    """
    return Job(
        id=row[0],
        task=row[1],
        queue=row[2],
        state=_JOB_STATE[row[3]],
        payload=row[4],
        priority=row[5],
        run_at=time_value(row[6]),
        attempt=row[7],
        max_attempts=row[8],
        enqueued_at=time_value(row[9]),
        started_at=time_value(row[10]),
        finished_at=time_value(row[11]),
        lease_owner=row[12],
        lease_expires_at=time_value(row[13]),
        idempotency_key=row[14],
        cancel_requested=bool(row[15]),
        lost=row[16],
        result_json=row[17],
        errors=decode_errors(row[18]),
        claims=row[19],
        snoozes=row[20],
        fairness_key=row[21] if len(row) > 21 else None,
        original_priority=row[22] if len(row) > 22 else None,
        progress=progress_from_store(row[23], time_value(row[24])) if len(row) > 24 else None,
        unique_key=row[25] if len(row) > 26 else None,
        unique_states=states_from_text(row[26]) if len(row) > 26 else frozenset(),
        workflow_id=row[27] if len(row) > 29 else None,
        workflow_step=row[28] if len(row) > 29 else None,
        workflow_index=row[29] if len(row) > 29 else None,
        concurrency_key=row[30] if len(row) > 30 else None,
    )
