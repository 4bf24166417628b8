"""A PostgreSQL store that refuses connections gives a bounded, clear failure, never a hang.

The hang once seen in CI (a drain after psycopg-pool's "error connecting" warning, then the
event loop's cleanup, neither returning) had two causes: `drain` retried a failing store for
ever, and psycopg-pool's background tasks swallow the cancellation `asyncio.run` sends at the
end while they are connecting, so a loop ending during an outage waited for them for ever.

The refusing store is a role with `CONNECTION LIMIT 0` (created and dropped here): its
sessions are ended and it may open no new one, as on a server out of connection slots.
Each test carries a pytest-timeout, so a regression fails instead of hanging the run.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from stagecrew import App
from stagecrew.backends.postgres import PostgresBackend
from stagecrew.errors import BackendError
from stagecrew.worker.runner import Worker
from tests.backends import test_postgres
from tests.support.proxy import TcpProxy, tcp_proxy


@pytest.fixture(scope="module", autouse=True)
def _postgres_server() -> None:
    test_postgres._server_or_skip()


@dataclass
class RefusingStore:
    url: str
    refuse: Callable[[], None]
    """Set the role's connection limit to 0 and end its sessions."""


@pytest.fixture
def refusing_store() -> Iterator[RefusingStore]:
    role = f"stagecrew_refused_{uuid.uuid4().hex[:10]}"
    schema = f"stagecrew_test_{uuid.uuid4().hex[:12]}"
    admin_url = test_postgres.URL
    info = psycopg.conninfo.conninfo_to_dict(admin_url)
    with test_postgres.admin() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        # stagecrew migrate runs CREATE SCHEMA IF NOT EXISTS (DROP OWNED BY revokes this)
        conn.execute(
            sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                sql.Identifier(info["dbname"]), sql.Identifier(role)
            )
        )
    host, port, dbname = info.get("host", "127.0.0.1"), info.get("port", 5432), info["dbname"]
    url = f"postgresql://{role}@{host}:{port}/{dbname}?schema={schema}"

    def refuse() -> None:
        with test_postgres.admin() as conn:
            conn.execute(sql.SQL("ALTER ROLE {} CONNECTION LIMIT 0").format(sql.Identifier(role)))
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )

    try:
        yield RefusingStore(url, refuse)
    finally:
        with test_postgres.admin() as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def app_on(url: str) -> App:
    migrating = PostgresBackend(url)
    migrating.migrate()
    migrating.close()
    app = App(url)

    @app.task
    def probe(token: str) -> str:
        return token

    return app


@pytest.mark.timeout(90)
def test_drain_against_a_store_that_refuses_connections_raises_a_clear_error(
    refusing_store: RefusingStore,
) -> None:
    app = app_on(refusing_store.url)
    try:
        app.tasks["probe"].enqueue("before")
        refusing_store.refuse()
        with pytest.raises(BackendError, match=r"drain gave up.*too many connections for role"):
            asyncio.run(Worker(app, concurrency=2).drain())
    finally:
        app.close()


@pytest.mark.timeout(90)
def test_drain_whose_outcomes_cannot_be_written_raises_instead_of_waiting_for_ever(
    refusing_store: RefusingStore,
) -> None:
    app = app_on(refusing_store.url)

    @app.task
    def shut_the_door() -> None:
        refusing_store.refuse()  # while the job runs: its outcome cannot be written

    try:
        handle = shut_the_door.enqueue()
        with pytest.raises(BackendError, match="drain gave up"):
            asyncio.run(Worker(app, concurrency=1).drain())
        assert handle.id > 0
    finally:
        app.close()


@pytest.mark.timeout(60)
def test_a_stopped_worker_returns_while_the_store_refuses_connections(
    refusing_store: RefusingStore,
) -> None:
    app = app_on(refusing_store.url)
    refused = threading.Event()

    @app.task
    def shut_the_door() -> None:
        refusing_store.refuse()  # from now on every claim, ack and heartbeat fails
        refused.set()

    try:
        shut_the_door.enqueue()

        async def main() -> int:
            worker = Worker(app, concurrency=2, grace=1.0, lease_seconds=5.0)
            running = asyncio.create_task(worker.run(install_signal_handlers=False))
            await asyncio.to_thread(refused.wait, 30)
            worker.request_stop()
            return await running

        assert asyncio.run(main()) == 0  # and asyncio.run's own cleanup returned too
    finally:
        app.close()


def through(url: str, proxy: TcpProxy) -> str:
    """`url` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{user + '@' if user else ''}127.0.0.1:{proxy.port}"))


@pytest.fixture
def schemas() -> Iterator[test_postgres.Schemas]:
    made = test_postgres.Schemas()
    yield made
    made.drop()


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    server = urlsplit(test_postgres.URL)
    with tcp_proxy(server.hostname or "127.0.0.1", server.port or 5432) as made:
        yield made


@pytest.mark.timeout(60)
def test_an_event_loop_ends_while_its_pool_is_still_connecting(
    proxy: TcpProxy, schemas: test_postgres.Schemas
) -> None:
    """asyncio.run returns although psycopg-pool is in the middle of a connection attempt."""
    proxy.swallow()  # connection attempts get no answer (for an hour, by connect_timeout)
    url = test_postgres.with_schema(through(test_postgres.URL, proxy), schemas.new())
    backend = PostgresBackend(f"{url}&connect_timeout=3600")

    async def main() -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await backend.get_async(1)  # the pool starts connecting; so does this call

    try:
        asyncio.run(main())  # hung for ever: the pool's connecting task ate the cancellation
        assert proxy.connections >= 1
    finally:
        backend.close()
