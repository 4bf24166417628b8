"""Which core each worker process keeps to, so that its threads hand over the GIL on one core.

A worker process runs Python on one core at a time (the GIL), but its threads take turns: the
event loop, the store's thread and the threads of sync jobs each wake the next. When the OS runs
them on different cores, every such hand-over is a wake-up across cores, which on a virtual
machine costs tens of microseconds; kept on one core it is a plain switch. Measured on 2 cores
(`benchmarks/RESULTS.md`, "Worker processes kept to a core"): two processes drained sync
no-ops 1.2x faster on SQLite, 1.1x on PostgreSQL; one process kept to a core, 1.1x to 1.15x.

The cost: a process kept to one core cannot use another for work that leaves the GIL (a C
library compressing or resizing inside a sync job). So only the first job thread, the one that
runs bursts of short jobs back to back, stays on the process's core; every further job thread
(woken for jobs that take long) may run on any core (`JobThreads(spread=...)`).

Only a fleet that covers the cores evenly is kept to them: `--processes` a multiple of the cores
this process may use. Then every core gets as many worker processes whatever else runs there,
and several fleets on one machine stack evenly; a smaller fleet is left to the OS, which would
otherwise see every one-process fleet on the machine kept to the first core.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("stagecrew.worker")


def usable_cpus() -> frozenset[int]:
    """The cores this process may run on (none known: an empty set, nothing is pinned)."""
    getaffinity = getattr(os, "sched_getaffinity", None)
    if getaffinity is None:
        return frozenset()
    return frozenset(getaffinity(0))


def core_for(slot: int, processes: int, cpus: frozenset[int], wanted: bool | None) -> int | None:
    """The core worker process `slot` of `processes` keeps to, or None to leave it to the OS.

    `wanted`: True pins whatever the fleet's size (round robin over `cpus`), False never,
    None (the default) only when the fleet covers the cores evenly (see the module docstring).
    """
    if wanted is False or len(cpus) < 2:
        return None
    if wanted is None and processes % len(cpus) != 0:
        return None
    return sorted(cpus)[slot % len(cpus)]


def keep_to(core: int) -> frozenset[int] | None:
    """Keep the calling thread, and every thread it starts from now on, to `core`.

    Returns the cores it could use before (for `spread_over`), or None if the OS refused (the
    core is no longer this process's to use, say): the thread then runs where the OS puts it.
    """
    before = usable_cpus()
    try:
        os.sched_setaffinity(0, {core})
    except OSError as exc:
        log.warning(
            "could not keep this worker process to core %d (%s); the OS places it", core, exc
        )
        return None
    return before


def spread_over(cpus: frozenset[int]) -> None:
    """Let the calling thread run on any of `cpus` again (where the OS allows: if it refuses,
    the thread stays where it is, which only costs it the other cores)."""
    try:
        os.sched_setaffinity(0, cpus)
    except OSError as exc:
        log.debug("job thread kept to its core: %s", exc)
