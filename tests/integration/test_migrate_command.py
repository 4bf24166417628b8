"""`stagecrew migrate` brings a PostgreSQL schema up to date so the app can use it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from stagecrew import App, SchemaOutOfDateError
from stagecrew.cli.main import main

POSTGRES_URL = os.environ.get(
    "STAGECREW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@pytest.fixture
def schema_url() -> Iterator[str]:
    psycopg = pytest.importorskip("psycopg")
    schema = f"migrate_cmd_{uuid.uuid4().hex[:10]}"
    try:
        conn = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {POSTGRES_URL} is unreachable in CI: {exc}")
        pytest.skip(f"PostgreSQL at {POSTGRES_URL} is unreachable: {exc}")
    sep = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{sep}schema={schema}"
    finally:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.close()


def test_migrate_command_makes_an_unmigrated_postgres_schema_usable(
    schema_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pg_app.py").write_text(
        "from stagecrew import App\napp = App()\n@app.task\ndef noop() -> None: ...\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("STAGECREW_URL", schema_url)

    with pytest.raises(SchemaOutOfDateError, match="stagecrew migrate"):
        App(schema_url).backend  # noqa: B018 - first use checks the schema

    result = CliRunner().invoke(main, ["migrate", "--app", "pg_app:app"])
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output
    assert ": applied 0001_jobs, 0002_claims, " in result.output  # says what it did

    app = App(schema_url)
    try:
        app.task(lambda: None, name="noop")
        assert app.enqueue("noop").get().task == "noop"
    finally:
        app.close()
