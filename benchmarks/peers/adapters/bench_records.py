"""The task body every library runs, and the environment an adapter is configured by.

A job appends `"<index> <time.time() at its start>\\n"` to the run's records file, opened in
append mode for each job (short appends from several processes do not interleave). The
driver computes drain, steady rate and pickup latency from these lines alone, the same way
for every library.
"""

from __future__ import annotations

import os
import time

URL = os.environ.get("PEER_URL", "")
"""The store of this run: a SQLite path, a PostgreSQL or a Redis URL."""
ENGINE = os.environ.get("PEER_ENGINE", "")
"""`sqlite`, `postgres` or `redis`."""
VARIANT = os.environ.get("PEER_VARIANT", "")
"""Which task of a library that is measured with more than one (e.g. `sync`, `async`)."""
RECORDS = os.environ.get("PEER_RECORDS", "")
"""The file the jobs append their records to."""


def append_record(i: int) -> None:
    """Record that job `i` started now."""
    started = time.time()
    with open(RECORDS, "a") as records:
        records.write(f"{i} {started!r}\n")


def read_records(path: str) -> dict[int, float]:
    """Each job's first start time by index (a job run twice keeps its first start)."""
    starts: dict[int, float] = {}
    try:
        with open(path) as records:
            lines = records.read().splitlines()
    except FileNotFoundError:
        return starts
    for line in lines:
        index, _, started = line.partition(" ")
        if started:
            starts.setdefault(int(index), float(started))
    return starts
