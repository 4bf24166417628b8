"""The SQL engines' partial unique index on its own refuses a second holder of a unique key.

The library looks a key's holder up before it writes; these tests go around it, writing
rows with raw SQL on the store's own connection (after the library migrated the schema),
so what they see is the index of migration 0007 alone: a write that would make two rows
hold one key fails, whichever statement makes it, and rows that do not hold their key (a
state outside their unique states, or no key) are never refused.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql
from tests.support.raw_store import write_raw_job
from tests.support.stores import fresh_store

from stagecrew.backends.postgres.settings import parse_url as parse_postgres_url
from stagecrew.backends.sqlite.backend import _parse_url as parse_sqlite_url

LIVE = "scheduled,available,running"
"""The default unique states, as engines store them."""
PAYLOAD = b'{"args":[],"kwargs":{}}'


class RawJobs:
    """The jobs table of one SQL store, written with the engine's own driver."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite: sqlite3.Connection | None = None
        self.postgres: psycopg.Connection[Any] | None = None
        if url.startswith("sqlite:"):
            path, _, _ = parse_sqlite_url(url)
            self.sqlite = sqlite3.connect(path, isolation_level=None)
            self.table, self.index, self.mark = "stagecrew_jobs", "stagecrew_jobs_unique_key", "?"
        else:
            settings = parse_postgres_url(url)
            self.postgres = psycopg.connect(settings.conninfo, autocommit=True)
            schema = sql.Identifier(settings.schema).as_string(self.postgres)
            self.table, self.index, self.mark = f"{schema}.jobs", f"{schema}.jobs_unique_key", "%s"

    def insert(self, key: str | None, states: str | None, state: str = "available") -> int:
        """A due job of `key` in `state`, holding its key in `states`: its id."""
        return write_raw_job(
            self.url,
            "t",
            PAYLOAD,
            fields={"state": state, "unique_key": key, "unique_states": states},
        )

    def set(self, job_id: int, column: str, value: str) -> None:
        self._run(
            f"UPDATE {self.table} SET {column} = {self.mark} WHERE id = {self.mark}", value, job_id
        )

    def rows(self) -> list[tuple[str, str | None]]:
        """(state, unique_key) of every row, by id."""
        return self._run(f"SELECT state, unique_key FROM {self.table} ORDER BY id")

    def drop_index(self) -> None:
        """Without the index nothing else in the schema refuses a second holder."""
        self._run(f"DROP INDEX {self.index}")

    def _run(self, statement: str, *params: object) -> list[Any]:
        if self.sqlite is not None:
            return self.sqlite.execute(statement, params).fetchall()
        assert self.postgres is not None
        cursor = self.postgres.execute(statement, params)
        return cursor.fetchall() if cursor.description else []

    def close(self) -> None:
        if self.sqlite is not None:
            self.sqlite.close()
        if self.postgres is not None:
            self.postgres.close()


@pytest.fixture(params=["sqlite", "postgres"])
def jobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RawJobs]:
    with fresh_store(str(request.param), tmp_path) as url:
        raw = RawJobs(url)
        try:
            yield raw
        finally:
            raw.close()


def refused_as_a_second_holder(jobs: RawJobs) -> AbstractContextManager[Any]:
    """The error the engine raises for a write that would make a second row hold a key."""
    if jobs.sqlite is not None:
        return pytest.raises(
            sqlite3.IntegrityError, match=r"UNIQUE constraint failed: stagecrew_jobs\.unique_key"
        )
    return pytest.raises(errors.UniqueViolation, match="jobs_unique_key")


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(("available", LIVE), ("available", LIVE), id="both-available"),
        pytest.param(("running", LIVE), ("scheduled", LIVE), id="running-and-scheduled"),
        pytest.param(
            ("succeeded", LIVE + ",succeeded"),
            ("dead", LIVE + ",dead"),
            id="each-finished-in-a-state-it-holds-in",
        ),
    ],
)
def test_the_index_refuses_a_second_row_holding_a_key(
    jobs: RawJobs, first: tuple[str, str], second: tuple[str, str]
) -> None:
    jobs.insert("k", first[1], first[0])
    with refused_as_a_second_holder(jobs):
        jobs.insert("k", second[1], second[0])
    assert jobs.rows() == [(first[0], "k")]


def test_the_index_refuses_an_update_into_a_held_state(jobs: RawJobs) -> None:
    jobs.insert("k", LIVE, "running")
    finished = jobs.insert("k", LIVE, "succeeded")
    with refused_as_a_second_holder(jobs):
        jobs.set(finished, "state", "available")
    assert jobs.rows() == [("running", "k"), ("succeeded", "k")]


def test_the_index_refuses_an_update_that_makes_a_rows_state_a_unique_state(
    jobs: RawJobs,
) -> None:
    jobs.insert("k", LIVE, "available")
    finished = jobs.insert("k", LIVE, "dead")
    with refused_as_a_second_holder(jobs):
        jobs.set(finished, "unique_states", LIVE + ",dead")


def test_the_index_refuses_an_update_that_gives_a_row_a_held_key(jobs: RawJobs) -> None:
    jobs.insert("k", LIVE, "available")
    other = jobs.insert("other", LIVE, "available")
    with refused_as_a_second_holder(jobs):
        jobs.set(other, "unique_key", "k")


@pytest.mark.parametrize(
    ("holder", "others"),
    [
        pytest.param(
            ("available", LIVE),
            [("succeeded", LIVE), ("dead", LIVE), ("cancelled", LIVE + ",succeeded")],
            id="others-finished-outside-their-states",
        ),
        pytest.param(
            ("succeeded", LIVE + ",succeeded"),
            [("dead", LIVE + ",succeeded"), ("available", "")],
            id="others-in-no-state-they-hold-in",
        ),
    ],
)
def test_the_index_accepts_rows_of_one_key_that_do_not_hold_it(
    jobs: RawJobs, holder: tuple[str, str], others: list[tuple[str, str]]
) -> None:
    jobs.insert("k", holder[1], holder[0])
    for state, states in others:
        jobs.insert("k", states, state)
    assert jobs.rows() == [(holder[0], "k"), *((state, "k") for state, _ in others)]


def test_the_index_accepts_a_key_again_once_its_holder_left_its_unique_states(
    jobs: RawJobs,
) -> None:
    first = jobs.insert("k", LIVE, "running")
    jobs.set(first, "state", "succeeded")
    second = jobs.insert("k", LIVE, "available")
    with refused_as_a_second_holder(jobs):
        jobs.set(first, "state", "available")
    jobs.set(second, "state", "cancelled")
    jobs.set(first, "state", "available")
    assert jobs.rows() == [("available", "k"), ("cancelled", "k")]


def test_the_index_ignores_rows_without_a_key_and_distinct_keys(jobs: RawJobs) -> None:
    jobs.insert(None, None)
    jobs.insert(None, None)
    jobs.insert("a", LIVE)
    jobs.insert("b", LIVE)
    assert jobs.rows() == [
        ("available", None),
        ("available", None),
        ("available", "a"),
        ("available", "b"),
    ]


def test_the_refusals_are_the_indexs_own_without_it_a_second_holder_is_stored(
    jobs: RawJobs,
) -> None:
    jobs.drop_index()
    jobs.insert("k", LIVE, "available")
    jobs.insert("k", LIVE, "available")
    assert jobs.rows() == [("available", "k"), ("available", "k")]
