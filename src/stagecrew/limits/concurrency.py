"""Concurrency caps as tasks and queues declare them; the store enforces them at claim time.

`@app.task(concurrency=5)` caps the task's running jobs fleet-wide; `concurrency=dict(key=...,
limit=2)` caps each key instead (a template over the job's arguments by name, or a function of
them); `app.queue("email", concurrency=20)` caps a queue. Workers send the caps of the code
they run with every claim (`ClaimLimits`), so a cap removed from the code limits nothing any
more, and jobs already queued are capped as soon as a cap is declared. See docs/limits.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..backends.caps import ClaimLimits, check_cap
from ..errors import ConfigurationError

ConcurrencyKey = str | Callable[..., str | None]
"""What a per-key cap counts by: a template over the job's arguments by name
(`"{customer_id}"`, `str.format` syntax) or a function of them (None: the job has no key and
only the task's other caps apply), as for unique keys."""


@dataclass(frozen=True, slots=True)
class Concurrency:
    """A task's concurrency cap: at most `limit` of its jobs running at once, fleet-wide, or
    with `key`, at most `limit` per key. Tasks that give the same `name` share each key's
    slots (a remote API several tasks call per customer); by default a key counts the jobs of
    its own task only. Keyed jobs are fair-queued by their key unless `fair=False`."""

    limit: int
    key: ConcurrencyKey | None = None
    name: str | None = None
    fair: bool = True
    """With `key`: queue each key's jobs fairly beside the other keys' (the job's fairness
    key is its concurrency key, unless the task or the enqueue gives one), so that one key's
    backlog, waiting on its cap, never lies ahead of the other keys' jobs in claim order."""

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "limit", check_cap(self.limit, "concurrency limit"))
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        key = self.key
        if key is not None and not callable(key) and (not isinstance(key, str) or not key):
            raise ConfigurationError(
                f"concurrency key must be a template str or a function, not {key!r}"
            )
        if not isinstance(self.fair, bool):
            raise ConfigurationError(f"concurrency fair= must be True or False, not {self.fair!r}")
        if self.name is not None:
            if self.key is None:
                raise ConfigurationError("a concurrency name groups keys: give key= with it")
            if not isinstance(self.name, str) or not self.name or ":" in self.name:
                raise ConfigurationError(
                    f"concurrency name must be a non-empty str without ':', not {self.name!r}"
                )

    @classmethod
    def coerce(cls, value: int | Concurrency | Mapping[str, Any] | None) -> Concurrency | None:
        if value is None or isinstance(value, Concurrency):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - {"limit", "key", "name", "fair"}
            if unknown or "limit" not in value:
                raise ConfigurationError(
                    "concurrency takes limit= (required), key=, name= and fair=, "
                    f"not {sorted(value)}"
                )
            return cls(value["limit"], value.get("key"), value.get("name"), value.get("fair", True))
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(value)
        raise ConfigurationError(
            "concurrency must be a number of jobs, a Concurrency, or "
            f"dict(limit=..., key=..., name=...), not {value!r}"
        )

    def group(self, task: str) -> str:
        """The prefix of this cap's stored keys: its name, or the task's."""
        return self.name or task


def claim_limits(
    tasks: Iterable[tuple[str, Concurrency | None]], queues: Mapping[str, int]
) -> ClaimLimits | None:
    """What a worker's claims send: the caps of these (task name, cap) pairs and of the
    queues, or None when there is none."""
    whole: dict[str, int] = {}
    per_key: dict[str, int] = {}
    for name, cap in tasks:
        if cap is not None:
            (whole if cap.key is None else per_key)[name] = cap.limit
    limits = ClaimLimits(tasks=whole, queues=dict(queues), keys=per_key)
    return limits if limits else None


def check_shared_names(tasks: Iterable[tuple[str, Concurrency | None]]) -> None:
    """Tasks that share a key group must give it one limit: its slots are one pool."""
    seen: dict[str, tuple[str, int]] = {}
    for task, cap in tasks:
        if cap is None or cap.name is None:
            continue
        first = seen.setdefault(cap.name, (task, cap.limit))
        if first[1] != cap.limit:
            raise ConfigurationError(
                f"tasks {first[0]!r} and {task!r} share the concurrency name {cap.name!r} "
                f"with different limits ({first[1]} and {cap.limit}); give them one limit"
            )
