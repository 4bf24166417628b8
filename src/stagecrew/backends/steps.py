"""Durable steps, checkpoints and progress: the records the store keeps for them, and input checks.

A step's or a checkpoint's value is JSON text kept with the job (in its own table or key, so a
job that stores none pays nothing: no column of the jobs row, no part of a claim). Progress is
small and kept in the jobs row (`Job.progress`). Every write is fenced by the claim's token,
like an ack: it applies only while the job is running that claim (see base.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import orjson

from ..job import Progress

MAX_STEP_BYTES = 1024 * 1024
"""The largest JSON text of one step's result or of the checkpoint: 1 MiB."""

MAX_STEP_NAME = 200
"""The longest step name, in characters."""

MAX_PROGRESS_MESSAGE = 500
"""The longest progress message, in characters."""


@dataclass(frozen=True, slots=True)
class StoredValue:
    """One stored step result or checkpoint: its JSON text and when the store wrote it."""

    text: str
    stored_at: float

    @property
    def size(self) -> int:
        """The size of the stored JSON text, in bytes (UTF-8)."""
        return len(self.text.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class JobSteps:
    """Everything a job stored for its later attempts: completed steps and the checkpoint."""

    steps: dict[str, StoredValue] = field(default_factory=dict)
    """Step name -> its stored result, in the order they were stored."""
    state: StoredValue | None = None
    """The last checkpoint (`ctx.checkpoint_state`), or None."""


def check_step_name(name: object, operation: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{operation}: a step name must be a str, not {type(name).__name__}")
    if not name or len(name) > MAX_STEP_NAME:
        raise ValueError(
            f"{operation}: a step name must be 1 to {MAX_STEP_NAME} characters, not {len(name)}"
        )
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{operation}: step name {name!r} is not valid UTF-8") from None
    if "\x00" in name:
        raise ValueError(f"{operation}: step name {name!r} holds a NUL character")
    return name


def check_stored_text(text: object, operation: str, what: str) -> str:
    """JSON text the store can keep: a str, valid JSON, at most `MAX_STEP_BYTES`."""
    if not isinstance(text, str):
        raise TypeError(f"{operation}: {what} must be JSON text (a str), not {text!r}")
    try:
        size = len(text.encode("utf-8"))
        orjson.loads(text)
    except UnicodeEncodeError:
        raise ValueError(f"{operation}: {what} is not valid UTF-8") from None
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{operation}: {what} is not valid JSON: {exc}") from None
    if size > MAX_STEP_BYTES:
        raise ValueError(
            f"{operation}: {what} is {size} bytes of JSON, over the limit of {MAX_STEP_BYTES}; "
            "store large data elsewhere (a file, a blob store) and keep a reference"
        )
    return text


def _number(value: object, what: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"progress: {what} must be a number, not {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"progress: {what} must be finite and >= 0, not {value!r}")
    return value


def check_progress(done: object, total: object = None, message: object = None) -> Progress:
    """A `Progress` from a task's `ctx.progress(...)` arguments, or a clear error."""
    checked_total = None if total is None else _number(total, "total")
    if message is not None:
        if not isinstance(message, str):
            raise TypeError(f"progress: message must be a str or None, not {message!r}")
        if len(message) > MAX_PROGRESS_MESSAGE:
            raise ValueError(
                f"progress: message is {len(message)} characters, "
                f"over the limit of {MAX_PROGRESS_MESSAGE}"
            )
        try:
            message.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("progress: message is not valid UTF-8") from None
    return Progress(done=_number(done, "done"), total=checked_total, message=message)


def progress_text(progress: Progress) -> str:
    """The stored form of a progress value (its time is stored beside it, by the store)."""
    return orjson.dumps(
        {"done": progress.done, "total": progress.total, "message": progress.message}
    ).decode()


def progress_from_store(text: object, at: object) -> Progress | None:
    """A stored progress value, read leniently: None when absent or unreadable."""
    if text is None or text in ("", b""):
        return None
    try:
        data = orjson.loads(text)  # type: ignore[arg-type]
        done, total, message = data["done"], data.get("total"), data.get("message")
        return Progress(
            done=done,
            total=total,
            message=message if isinstance(message, str) else None,
            at=None if at is None or at in ("", b"") else float(at),  # type: ignore[arg-type]
        )
    except (orjson.JSONDecodeError, TypeError, KeyError, ValueError, AttributeError):
        return None


STEP = "step"
STATE = "state"
"""The kinds of stored value: a step's result (by name), and the checkpoint (name '')."""


def _text(raw: object) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def steps_from_rows(rows: Iterable[Sequence[object]]) -> JobSteps:
    """`JobSteps` from stored (kind, name, value, stored_at) rows, in the order stored."""
    steps: dict[str, StoredValue] = {}
    state: StoredValue | None = None
    for kind, name, value, stored_at in rows:
        stored = StoredValue(_text(value), float(stored_at))  # type: ignore[arg-type]
        if _text(kind) == STATE:
            state = stored
        else:
            steps[_text(name)] = stored
    return JobSteps(steps, state)
