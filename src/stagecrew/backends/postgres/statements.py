"""The engine's SQL: files under `sql/`, rendered once per schema with every name qualified.

Each file holds one statement with a one-line `-- ` header saying what it does
(comment lines are dropped before a statement is sent, so they may mention
placeholders freely). `{schema}` stands for the quoted schema name, so the text works on any
connection, including a caller's own (transactional enqueue) whose
`search_path` stagecrew must not touch. A few statements take a `{filter}`
fragment (the terms of a `JobFilter`, built by the backend from fixed text), or other
named fragments of fixed text the backend chooses between (which may use `{schema}`).
Parameters are psycopg named placeholders, `%(name)s`.
"""

from __future__ import annotations

import functools

from psycopg import sql

from ..sql_files import read_migrations, read_statement


@functools.cache
def _source(name: str) -> str:
    return read_statement("stagecrew.backends.postgres", name)


@functools.cache
def _migration_sources() -> tuple[tuple[int, str, str], ...]:
    return read_migrations("stagecrew.backends.postgres", "PostgreSQL")


def schema_version() -> int:
    """The schema version this stagecrew expects: the number of its migrations."""
    return len(_migration_sources())


class Statements:
    """The engine's statements for one schema, rendered on first use and kept."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self._names = {
            "schema": sql.Identifier(schema),
            "id_sequence": sql.Literal(sql.Identifier(schema, "jobs_id_seq").as_string()),
            "jobs_table": sql.Literal(sql.Identifier(schema, "jobs").as_string()),
        }
        self._rendered: dict[tuple[object, ...], str] = {}

    def _render(self, text: str, filter_terms: str = "", **fragments: str) -> str:
        body = "".join(
            line for line in text.splitlines(keepends=True) if not line.lstrip().startswith("--")
        )
        parts = {name: sql.SQL(part).format(**self._names) for name, part in fragments.items()}
        return (
            sql.SQL(body).format(filter=sql.SQL(filter_terms), **parts, **self._names).as_string()
        )

    def get(self, name: str, filter_terms: str = "", /, **fragments: str) -> str:
        """Statement `name` (sql/<name>.sql), with `filter_terms` put in place of `{filter}`
        and each of `fragments` in place of its `{name}`."""
        key = (
            (name, filter_terms, *sorted(fragments.items())) if fragments else (name, filter_terms)
        )
        text = self._rendered.get(key)
        if text is None:
            text = self._render(_source(name), filter_terms, **fragments)
            self._rendered[key] = text
        return text

    def migrations(self) -> list[tuple[int, str, str]]:
        """(version, file name, rendered script) of every migration, oldest first."""
        return [(version, name, self._render(text)) for version, name, text in _migration_sources()]
