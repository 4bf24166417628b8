"""Every store call is bounded: a connection whose peer stopped answering fails it, never hangs it.

A real PostgreSQL and Redis are reached through a TCP proxy (tests/support/proxy.py) that is
switched to swallow traffic, like a half-open connection: a heartbeat, an ack and a claim
through it must fail with the engine's error. pytest-timeout is the hang guard (such a call
used to wait for the kernel's 15 minutes, or for ever); nothing here times a call.

Then the settings themselves: defaults and URL values reach the connections (SHOW on the
server, getsockopt on the sockets, the options redis-py was given).
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from stagecrew.backends.base import Ack, AckKind, Backend
from stagecrew.backends.postgres import PostgresBackend
from stagecrew.backends.redis import RedisBackend
from stagecrew.errors import BackendError, ConfigurationError, EnqueueError
from stagecrew.job import ClaimedJob, NewJob
from tests.backends import test_postgres, test_redis
from tests.support.proxy import TcpProxy, tcp_proxy

PAYLOAD = '{"args":[],"kwargs":{}}'
LEASE = 30.0
LINUX = hasattr(socket, "TCP_KEEPIDLE") and hasattr(socket, "TCP_USER_TIMEOUT")


def through(url: str, proxy: TcpProxy) -> str:
    """`url` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{user + '@' if user else ''}127.0.0.1:{proxy.port}"))


def with_query(url: str, **params: Any) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{url}{'&' if '?' in url else '?'}{query}"


def proxy_to(url: str, default_port: int) -> Iterator[TcpProxy]:
    server = urlsplit(url)
    with tcp_proxy(server.hostname or "127.0.0.1", server.port or default_port) as made:
        yield made


def tcp_options(sock: socket.socket) -> dict[str, int]:
    return {
        "keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        "idle": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
        "interval": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
        "count": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
        "user_timeout": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
    }


def socket_of(fileno: int) -> socket.socket:
    """A socket object on a duplicate of `fileno` (closing it leaves the original open)."""
    return socket.socket(fileno=os.dup(fileno))


async def through_a_silent_connection(backend: Backend, proxy: TcpProxy) -> list[str]:
    """Claim a job, make the connection go silent, then heartbeat, ack and claim: each raises."""
    backend.enqueue([NewJob("t", PAYLOAD)])
    [claimed] = await backend.claim_async(["default"], "w", 1, LEASE)
    assert isinstance(claimed, ClaimedJob)
    proxy.swallow()
    failures = []
    with pytest.raises(BackendError) as heartbeat:
        await backend.heartbeat_async("w", [claimed.ref], LEASE)
    failures.append(str(heartbeat.value))
    with pytest.raises(BackendError) as ack:
        await backend.ack_async([Ack(claimed.ref, AckKind.COMPLETE, result="1")])
    failures.append(str(ack.value))
    with pytest.raises(BackendError) as claim:
        await backend.claim_async(["default"], "w", 1, LEASE)
    failures.append(str(claim.value))
    return failures


# -- PostgreSQL -------------------------------------------------------------------------------
@pytest.fixture
def postgres_schemas() -> Iterator[test_postgres.Schemas]:
    test_postgres._server_or_skip()
    made = test_postgres.Schemas()
    yield made
    made.drop()


@pytest.fixture
def postgres_proxy() -> Iterator[TcpProxy]:
    yield from proxy_to(test_postgres.URL, 5432)


def migrated(url: str) -> str:
    backend = PostgresBackend(url)
    backend.migrate()
    backend.close()
    return url


@pytest.mark.timeout(90)
def test_postgres_heartbeat_ack_and_fetch_through_a_silent_connection_fail_instead_of_hanging(
    postgres_schemas: test_postgres.Schemas, postgres_proxy: TcpProxy
) -> None:
    schema = postgres_schemas.new()
    migrated(test_postgres.with_schema(test_postgres.URL, schema))
    url = test_postgres.with_schema(through(test_postgres.URL, postgres_proxy), schema)
    backend = PostgresBackend(with_query(url, statement_timeout=1, connect_timeout=2))
    try:
        failures = asyncio.run(through_a_silent_connection(backend, postgres_proxy))
        assert "did not answer within 2s" in failures[0]
        with pytest.raises(EnqueueError):  # the producer's sync path is bounded too
            backend.enqueue([NewJob("t", PAYLOAD)])
        with pytest.raises(BackendError):
            backend.stats()
    finally:
        backend.close()


@pytest.mark.timeout(90)
def test_postgres_statement_deadline_closes_only_a_connection_that_did_not_answer(
    postgres_schemas: test_postgres.Schemas, postgres_proxy: TcpProxy
) -> None:
    """A slow statement the server times out is its ordinary error; the pool keeps working."""
    schema = postgres_schemas.new()
    url = migrated(
        with_query(test_postgres.with_schema(test_postgres.URL, schema), statement_timeout=1)
    )
    backend = PostgresBackend(url)
    try:
        with (
            backend._pool.connection() as conn,
            pytest.raises(psycopg.errors.QueryCanceled, match="statement timeout"),
        ):
            conn.execute("SELECT pg_sleep(5)")
        assert backend.stats() == []  # the next statements run as before
        assert backend.enqueue([NewJob("t", PAYLOAD)])[0].created
    finally:
        backend.close()


@pytest.mark.skipif(not LINUX, reason="reads Linux TCP socket options")
def test_postgres_timeout_defaults_reach_every_connection(
    postgres_schemas: test_postgres.Schemas,
) -> None:
    url = migrated(test_postgres.with_schema(test_postgres.URL, postgres_schemas.new()))
    backend = PostgresBackend(url)
    try:
        expected = {"keepalive": 1, "idle": 10, "interval": 5, "count": 3, "user_timeout": 20000}
        with backend._pool.connection() as conn:
            assert conn.execute("SHOW statement_timeout").fetchone() == ("30s",)
            with socket_of(conn.pgconn.socket) as sock:
                assert tcp_options(sock) == expected
        with backend._task_pool.connection() as conn:  # the tasks' own transactions
            assert conn.execute("SHOW statement_timeout").fetchone() == ("0",)
            with socket_of(conn.pgconn.socket) as sock:
                assert tcp_options(sock) == expected

        async def pooled() -> tuple[Any, dict[str, int]]:
            async with backend._apools.connection() as conn:
                row = await (await conn.execute("SHOW statement_timeout")).fetchone()
                with socket_of(conn.pgconn.socket) as sock:
                    return row, tcp_options(sock)

        assert asyncio.run(pooled()) == (("30s",), expected)
        assert backend.settings.statement_deadline == 35.0
    finally:
        backend.close()


@pytest.mark.skipif(not LINUX, reason="reads Linux TCP socket options")
def test_postgres_timeouts_are_set_from_the_url(postgres_schemas: test_postgres.Schemas) -> None:
    url = migrated(test_postgres.with_schema(test_postgres.URL, postgres_schemas.new()))
    backend = PostgresBackend(
        with_query(
            url,
            statement_timeout=2.5,
            keepalives_idle=7,
            keepalives_interval=2,
            keepalives_count=4,
            tcp_user_timeout=9000,
            connect_timeout=3,
        )
    )
    off = PostgresBackend(with_query(url, statement_timeout=0, keepalives=0))
    try:
        with backend._pool.connection() as conn:
            assert conn.execute("SHOW statement_timeout").fetchone() == ("2500ms",)
            assert conn.info.get_parameters()["connect_timeout"] == "3"
            with socket_of(conn.pgconn.socket) as sock:
                options = tcp_options(sock)
        assert options == {
            "keepalive": 1, "idle": 7, "interval": 2, "count": 4, "user_timeout": 9000
        }  # fmt: skip
        assert backend.settings.statement_deadline == 5.0
        with off._pool.connection() as conn:
            assert conn.execute("SHOW statement_timeout").fetchone() == ("0",)
            with socket_of(conn.pgconn.socket) as sock:
                assert tcp_options(sock)["keepalive"] == 0
        assert off.settings.statement_deadline is None
    finally:
        backend.close()
        off.close()


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "soon"])
def test_postgres_statement_timeout_in_the_url_must_be_finite_seconds(value: str) -> None:
    with pytest.raises(ConfigurationError, match="statement_timeout"):
        PostgresBackend(f"postgresql://u@localhost/db?statement_timeout={value}")


# -- Redis ------------------------------------------------------------------------------------
@pytest.fixture
def redis_prefix() -> Iterator[str]:
    test_redis._server_or_skip()
    prefix = f"sctest-{uuid.uuid4().hex[:12]}"
    yield prefix
    test_redis.delete_prefix(test_redis.URL, prefix)


@pytest.fixture
def redis_proxy() -> Iterator[TcpProxy]:
    yield from proxy_to(test_redis.URL, 6379)


@pytest.mark.timeout(60)
def test_redis_heartbeat_ack_and_fetch_through_a_silent_connection_fail_instead_of_hanging(
    redis_prefix: str, redis_proxy: TcpProxy
) -> None:
    url = with_query(through(test_redis.URL, redis_proxy), prefix=redis_prefix, socket_timeout=1)
    backend = RedisBackend(with_query(url, socket_connect_timeout=1))
    try:
        failures = asyncio.run(through_a_silent_connection(backend, redis_proxy))
        assert all("Timeout" in f or "timed out" in f.lower() for f in failures), failures
        with pytest.raises(EnqueueError):
            backend.enqueue([NewJob("t", PAYLOAD)])
        with pytest.raises(BackendError):
            backend.stats()
    finally:
        backend.close()


@pytest.mark.timeout(60)
def test_redis_idle_wait_longer_than_the_socket_timeout_is_not_cut_short(
    redis_prefix: str,
) -> None:
    """The wake-up's BLPOP blocks for the wait's own timeout, not the socket timeout."""
    backend = RedisBackend(with_query(test_redis.URL, prefix=redis_prefix, socket_timeout=0.2))

    async def idle() -> int:
        await backend.wait(["default"], 0.1)  # connects
        await backend.wait(["default"], 1.0)  # five socket timeouts long, nothing published
        side = await backend._side()
        return side.failures

    try:
        assert asyncio.run(idle()) == 0
    finally:
        backend.close()


@pytest.mark.skipif(not LINUX, reason="reads Linux TCP socket options")
def test_redis_timeout_defaults_reach_every_connection(redis_prefix: str) -> None:
    backend = RedisBackend(with_query(test_redis.URL, prefix=redis_prefix))
    try:
        backend.enqueue([NewJob("t", PAYLOAD)])  # opens this thread's connection
        sync_kwargs = backend._wire._kwargs  # type: ignore[union-attr]
        client_kwargs = backend._client.connection_pool.connection_kwargs

        async def async_kwargs() -> dict[str, Any]:
            await backend.get_async(1)  # opens this loop's side
            side = await backend._side()
            return dict(side.wire._kwargs)  # type: ignore[union-attr]

        for kwargs in (sync_kwargs, client_kwargs, asyncio.run(async_kwargs())):
            assert kwargs["socket_timeout"] == 10.0
            assert kwargs["socket_connect_timeout"] == 5.0
            assert kwargs["health_check_interval"] == 30
            assert kwargs["socket_keepalive"] is True
            assert kwargs["socket_keepalive_options"] == {
                socket.TCP_KEEPIDLE: 10,
                socket.TCP_KEEPINTVL: 5,
                socket.TCP_KEEPCNT: 3,
            }
        conn = backend._wire._local.conn  # type: ignore[union-attr]
        sock = conn._sock
        assert sock.gettimeout() == 10.0
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 10
    finally:
        backend.close()


def test_redis_timeouts_are_set_from_the_url(redis_prefix: str) -> None:
    backend = RedisBackend(
        with_query(
            test_redis.URL,
            prefix=redis_prefix,
            socket_timeout=2.5,
            socket_connect_timeout=1.5,
            health_check_interval=7,
            keepalive_idle=4,
            keepalive_interval=2,
            keepalive_count=6,
        )
    )
    try:
        backend.enqueue([NewJob("t", PAYLOAD)])
        kwargs = backend._wire._kwargs  # type: ignore[union-attr]
        assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (2.5, 1.5)
        assert kwargs["health_check_interval"] == 7
        if LINUX:
            assert kwargs["socket_keepalive_options"] == {
                socket.TCP_KEEPIDLE: 4,
                socket.TCP_KEEPINTVL: 2,
                socket.TCP_KEEPCNT: 6,
            }
            sock = backend._wire._local.conn._sock  # type: ignore[union-attr]
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 4
            assert sock.gettimeout() == 2.5
    finally:
        backend.close()


@pytest.mark.parametrize(
    "query",
    [
        "socket_timeout=nan",
        "socket_timeout=inf",
        "socket_timeout=0",
        "socket_connect_timeout=nan",
        "health_check_interval=inf",
        "keepalive_idle=nan",
        "keepalive_count=0",
        "keepalive_interval=1.5",
    ],
)
def test_redis_time_options_in_the_url_must_be_finite(query: str) -> None:
    with pytest.raises(ConfigurationError, match=query.partition("=")[0]):
        RedisBackend(f"redis://127.0.0.1:6379/0?{query}")
