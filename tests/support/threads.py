"""Running a blocking call on a thread of its own, for tests that wait for something."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from stagecrew.job import AttemptError, ErrorKind, JobRef


def in_thread(fn: Callable[[], Any], hang: float) -> Callable[[], Any]:
    """Start `fn()` on a thread; the returned call joins it (failing after `hang` seconds)
    and gives back what it returned or raises what it raised."""
    outcome: list[tuple[str, Any]] = []

    def run() -> None:
        try:
            outcome.append(("value", fn()))
        except BaseException as exc:  # reported by the test's thread
            outcome.append(("error", exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def join() -> Any:
        thread.join(hang)
        assert not thread.is_alive(), f"still waiting after {hang}s"
        [(kind, value)] = outcome
        if kind == "error":
            raise value
        return value

    return join


def boom(ref: JobRef) -> AttemptError:
    """A failed attempt's error for the claim `ref`."""
    return AttemptError(ref.token, 0.0, ErrorKind.ERROR, "ValueError", "boom")
