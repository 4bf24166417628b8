"""A ledger that jobs write outside the store under test, to prove what really ran.

Each execution appends `start` and `end` lines (job id, attempt, pid, time) to
a plain file with O_APPEND, so lines from many processes never interleave.
`executions()` pairs them up; `check` tells lost jobs, duplicate runs and
attempts that ran twice, and `stagecrew.testing.audit` builds the full report
(causes of duplicates, stuck jobs, attempt counts) of a crash scenario.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Entry:
    event: str
    job_id: int
    attempt: int
    pid: int
    at: float


@dataclass(frozen=True, slots=True)
class Execution:
    """One run of a job's function as the ledger saw it; `ended` is None if it never returned."""

    job_id: int
    attempt: int
    pid: int
    started: float
    ended: float | None


class Ledger:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def record(self, event: str, job_id: int, attempt: int) -> None:
        line = f"{event} {job_id} {attempt} {os.getpid()} {time.time():.6f}\n".encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def entries(self) -> list[Entry]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            parts = line.split()
            if len(parts) != 5:
                continue  # a line torn by SIGKILL mid-write
            try:
                out.append(
                    Entry(parts[0], int(parts[1]), int(parts[2]), int(parts[3]), float(parts[4]))
                )
            except ValueError:
                continue  # torn differently: a number cut short
        return out

    def executions(self) -> list[Execution]:
        """Every started run, in the order of their start lines, with its end when there is one."""
        runs: list[Execution] = []
        open_runs: dict[tuple[int, int, int], list[int]] = {}
        for e in self.entries():
            key = (e.job_id, e.attempt, e.pid)
            if e.event == "start":
                open_runs.setdefault(key, []).append(len(runs))
                runs.append(Execution(e.job_id, e.attempt, e.pid, e.at, None))
            elif e.event == "end" and open_runs.get(key):
                index = open_runs[key].pop()
                runs[index] = Execution(e.job_id, e.attempt, e.pid, runs[index].started, e.at)
        return runs


@dataclass(frozen=True, slots=True)
class LedgerReport:
    expected: int
    completed: int
    lost: frozenset[int]
    """Enqueued jobs with no completed execution."""
    duplicate_runs: int
    """Completed executions beyond the first, per job (what a crash can cause)."""
    attempts_started_twice: frozenset[tuple[int, int]]
    """(job id, attempt) pairs that started more than once: must never happen."""
    pids: frozenset[int]

    @property
    def ok(self) -> bool:
        return not self.lost and not self.attempts_started_twice


def check(ledger: Ledger, expected_ids: Iterable[int]) -> LedgerReport:
    entries = ledger.entries()
    expected = set(expected_ids)
    ends = Counter(e.job_id for e in entries if e.event == "end")
    starts = Counter((e.job_id, e.attempt) for e in entries if e.event == "start")
    return LedgerReport(
        expected=len(expected),
        completed=len(expected & set(ends)),
        lost=frozenset(expected - set(ends)),
        duplicate_runs=sum(n - 1 for n in ends.values() if n > 1),
        attempts_started_twice=frozenset(k for k, n in starts.items() if n > 1),
        pids=frozenset(e.pid for e in entries),
    )
