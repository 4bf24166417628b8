"""The worker runtime: supervisor, runner, executor, completer.

`Worker` is imported on first use, so that the supervisor (`stagecrew worker`'s own process,
which runs no job) does not import the runner, the executor and the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .runner import Worker

__all__ = ["Worker"]


def __getattr__(name: str) -> Any:
    if name == "Worker":
        from .runner import Worker

        return Worker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
