"""`task.options(connection=conn).enqueue(...)` writes the job inside the caller's transaction."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator

import pytest

from stagecrew import App, ConfigurationError, JobNotFoundError
from stagecrew.backends import backend_from_url

POSTGRES_URL = os.environ.get(
    "STAGECREW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
psycopg = pytest.importorskip("psycopg")


@pytest.fixture
def app() -> Iterator[App]:
    schema = f"txn_enqueue_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {POSTGRES_URL} is unreachable in CI: {exc}")
        pytest.skip(f"PostgreSQL at {POSTGRES_URL} is unreachable: {exc}")
    sep = "&" if "?" in POSTGRES_URL else "?"
    url = f"{POSTGRES_URL}{sep}schema={schema}"
    migrator = backend_from_url(url)
    migrator.migrate()
    migrator.close()
    app = App(url)

    @app.task
    def send_welcome(user_id: int) -> None: ...

    try:
        yield app
    finally:
        app.close()
        admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.close()


def test_committed_transaction_enqueues_and_rolled_back_one_does_not(app: App) -> None:
    task = app.tasks["send_welcome"]
    with psycopg.connect(POSTGRES_URL) as conn:
        kept = task.options(connection=conn).enqueue(1)
        conn.commit()
        dropped = task.options(connection=conn).enqueue(2)
        conn.rollback()
    assert kept.get().args == [1]
    with pytest.raises(JobNotFoundError):
        dropped.get()


def test_async_connection_enqueues_inside_its_transaction(app: App) -> None:
    task = app.tasks["send_welcome"]

    async def main() -> tuple[int, int]:
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as conn:
            kept = await task.options(connection=conn).enqueue_async(3)
            await conn.commit()
            dropped = await task.options(connection=conn).enqueue_async(4)
            await conn.rollback()
        return kept.id, dropped.id

    kept_id, dropped_id = asyncio.run(main())
    assert app.jobs.get(kept_id).args == [3]
    with pytest.raises(JobNotFoundError):
        app.jobs.get(dropped_id)


def test_a_store_without_transactions_refuses_a_connection(tmp_path: object) -> None:
    app = App("memory://")

    @app.task
    def noop() -> None: ...

    with pytest.raises(ConfigurationError, match="transactional enqueue needs PostgreSQL"):
        noop.options(connection=object()).enqueue()


def test_sqlalchemy_engine_begin_enqueues_inside_its_transaction(app: App) -> None:
    """The docs/postgres.md example, with SQLAlchemy 2 on the psycopg 3 driver."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    task = app.tasks["send_welcome"]
    engine = sqlalchemy.create_engine(
        POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://")
    )
    try:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
            kept = task.options(connection=conn).enqueue(5)
        with pytest.raises(RuntimeError), engine.begin() as conn:
            dropped = task.options(connection=conn).enqueue(6)
            raise RuntimeError("roll back")
    finally:
        engine.dispose()
    assert kept.get().args == [5]
    with pytest.raises(JobNotFoundError):
        dropped.get()


def test_django_atomic_block_enqueues_inside_its_transaction(app: App) -> None:
    """The docs/postgres.md example, with Django's psycopg 3 backend."""
    django = pytest.importorskip("django")
    from django.conf import settings
    from django.db import connection, transaction
    from psycopg.conninfo import conninfo_to_dict

    if not settings.configured:
        info = conninfo_to_dict(POSTGRES_URL)
        settings.configure(
            DATABASES={
                "default": {
                    "ENGINE": "django.db.backends.postgresql",
                    "NAME": info.get("dbname", ""),
                    "USER": info.get("user", ""),
                    "HOST": info.get("host", ""),
                    "PORT": info.get("port", ""),
                }
            }
        )
        django.setup()
    task = app.tasks["send_welcome"]
    try:
        with transaction.atomic():
            kept = task.options(connection=connection).enqueue(7)
        with pytest.raises(RuntimeError), transaction.atomic():
            dropped = task.options(connection=connection).enqueue(8)
            raise RuntimeError("roll back")
    finally:
        connection.close()
    assert kept.get().args == [7]
    with pytest.raises(JobNotFoundError):
        dropped.get()
