"""A `JobFilter` as the terms a SQL engine appends to its WHERE clause, decided once.

Which fields a filter has, the column each one tests, whether it is a set ("one of") or an
upper bound, and the order of a set's values (sorted, so a statement's parameters do not
depend on a set's iteration order) are the same on every SQL engine; only the spelling of a
term differs (an array parameter in PostgreSQL, a JSON array in SQLite).
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import JobFilter


@dataclass(frozen=True, slots=True)
class FilterTerm:
    column: str
    param: str
    """The parameter's name in the statement."""
    values: list[str] | list[int] | None
    """For a set term: the sorted values the column must be one of."""
    bound: float | int | None = None
    """For a bound term: the column must be below this."""
    sql_type: str = "text"
    """The column's type, for engines that spell an array parameter's type."""


def filter_terms(job_filter: JobFilter) -> list[FilterTerm]:
    terms: list[FilterTerm] = []
    if job_filter.states:
        terms.append(FilterTerm("state", "f_states", sorted(str(s) for s in job_filter.states)))
    if job_filter.queues:
        terms.append(FilterTerm("queue", "f_queues", sorted(job_filter.queues)))
    if job_filter.tasks:
        terms.append(FilterTerm("task", "f_tasks", sorted(job_filter.tasks)))
    if job_filter.ids:
        terms.append(FilterTerm("id", "f_ids", sorted(job_filter.ids), sql_type="bigint"))
    if job_filter.before_id is not None:
        terms.append(FilterTerm("id", "f_before_id", None, job_filter.before_id, "bigint"))
    if job_filter.finished_before is not None:
        before = job_filter.finished_before
        terms.append(
            FilterTerm("finished_at", "f_finished_before", None, before, "double precision")
        )
    return terms
