"""The engines stagecrew's own tests and benchmarks run against, each named once here.

An `Engine` makes fresh stores for one test (`Engine.stores`): empty and migrated,
either as a `Backend` on the test's `FakeClock` (`Stores.factory`, the conformance
suite's `BackendFactory`) or as a URL that worker processes can open (`Stores.url`).
Whatever a test made is removed when its block ends: a SQLite file in the test's
temp folder, a PostgreSQL schema (dropped), a Redis key prefix (its keys deleted).

PostgreSQL is found at STAGECREW_TEST_POSTGRES_URL and Redis at
STAGECREW_TEST_REDIS_URL (the local servers when unset). A test whose server does
not answer is skipped with the reason, except in CI (the CI variable set), where it
fails: there a missing server is a broken build, not a pass.
"""

from __future__ import annotations

import contextlib
import itertools
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ..backends import backend_from_url
from ..backends.base import Backend
from ..clock import FakeClock
from .servers import (
    POSTGRES_SERVER,
    REDIS_SERVER,
    Server,
    delete_prefix,
    drop_schemas,
    with_query,
    with_schema,
)

__all__ = [
    "ENGINES",
    "POSTGRES_SERVER",
    "REDIS_SERVER",
    "Engine",
    "Prefixes",
    "Schemas",
    "Server",
    "Stores",
    "delete_prefix",
    "engine_names",
    "engine_params",
    "with_query",
    "with_schema",
]


# -- servers: see servers.py ------------------------------------------------------------------
class _Names:
    """Fresh random names on one server for one test, kept to be removed afterwards."""

    stem: str
    server: Server

    def __init__(self, url: str | None = None) -> None:
        self.url = url or self.server.url
        self.names: list[str] = []

    def new(self) -> str:
        name = f"{self.stem}{uuid.uuid4().hex[:12]}"
        self.names.append(name)
        return name


class Schemas(_Names):
    """Fresh PostgreSQL schema names for one test; every one is dropped by `drop`."""

    stem = "stagecrew_test_"
    server = POSTGRES_SERVER

    def drop(self) -> None:
        drop_schemas(self.url, self.names)


class Prefixes(_Names):
    """Fresh Redis key prefixes for one test; all their keys are deleted by `delete`."""

    stem = "sctest-"
    server = REDIS_SERVER

    def url_for(self, prefix: str | None = None, **params: str) -> str:
        return with_query(self.url, prefix=prefix or self.new(), **params)

    def delete(self) -> None:
        for name in self.names:
            delete_prefix(self.url, name)


# -- fresh stores ----------------------------------------------------------------------------
class Stores(ABC):
    """Fresh stores of one engine for one test; `close` removes every one of them."""

    def __init__(self) -> None:
        self._made: list[Backend] = []

    @abstractmethod
    def _new_url(self) -> str:
        """Where a new, empty store lives (nothing is created yet)."""

    def _remove(self) -> None:  # noqa: B027 - a store that lives in memory or in tmp_path
        """Remove every store made, once their backends are closed."""

    def url(self) -> str:
        """The URL of a new, empty, migrated store, for an `App` or a worker process."""
        url = self._new_url()
        with backend_from_url(url) as backend:
            backend.migrate()
        return url

    def factory(self, clock: FakeClock) -> Backend:
        """A new, empty, migrated store on `clock` (a `BackendFactory`), closed by `close`."""
        backend = backend_from_url(self._new_url(), clock)
        self._made.append(backend)
        backend.migrate()
        return backend

    def close(self) -> None:
        try:
            for backend in self._made:
                with contextlib.suppress(Exception):  # a test may have closed it already
                    backend.close()
        finally:
            self._remove()


class _MemoryStores(Stores):
    def _new_url(self) -> str:
        return "memory://"  # every backend made from it is a store of its own


class _SQLiteStores(Stores):
    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder
        self.numbers = itertools.count(1)

    def _new_url(self) -> str:
        # An absolute path gives sqlite://// (four slashes); tmp_path removes the files.
        return f"sqlite:///{self.folder / f'store-{next(self.numbers)}.db'}"


class _PostgresStores(Stores):
    def __init__(self) -> None:
        super().__init__()
        self.schemas = Schemas()

    def _new_url(self) -> str:
        return with_schema(self.schemas.url, self.schemas.new())

    def _remove(self) -> None:
        self.schemas.drop()


class _RedisStores(Stores):
    def __init__(self, **params: str) -> None:
        super().__init__()
        self.prefixes = Prefixes()
        self.params = params

    def _new_url(self) -> str:
        return self.prefixes.url_for(**self.params)

    def _remove(self) -> None:
        self.prefixes.delete()


# -- the engines -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Engine:
    """One engine as the tests run it."""

    name: str
    make_stores: Callable[[Path], Stores]
    """Fresh stores for one test, given the test's temp folder."""
    server: Server | None = None
    cross_process: bool = True
    """Worker processes can share its store (not `memory://`)."""
    variant_of: str | None = None
    """The engine this one runs in another configuration (a key layout, say)."""
    state_machine_examples: int = 100
    """Examples of the conformance suite's state machine, sized to take well under a
    minute on a shared two-core machine."""
    interleaving_examples: int = 100
    """Examples of the interleaving model, sized likewise."""

    @contextlib.contextmanager
    def stores(self, tmp_path: Path) -> Iterator[Stores]:
        """Fresh stores for one test, all removed afterwards; skips (or fails in CI)
        when the engine's server does not answer."""
        if self.server is not None:
            self.server.require()
        made = self.make_stores(tmp_path)
        try:
            yield made
        finally:
            made.close()


# Server engines run fewer model examples than embedded ones: every step is a few
# round trips to the server, and every example gets a store of its own (a schema migrated
# on PostgreSQL, a key prefix on Redis). The cluster layout runs fewer still: it is the
# same scripts as `redis`, with other keys.
ENGINES: dict[str, Engine] = {
    engine.name: engine
    for engine in (
        Engine(
            "memory",
            lambda tmp_path: _MemoryStores(),
            cross_process=False,
            interleaving_examples=500,
        ),
        Engine("sqlite", _SQLiteStores, interleaving_examples=300),
        Engine(
            "postgres",
            lambda tmp_path: _PostgresStores(),
            server=POSTGRES_SERVER,
            state_machine_examples=60,
            interleaving_examples=120,
        ),
        Engine(
            "redis",
            lambda tmp_path: _RedisStores(),
            server=REDIS_SERVER,
            state_machine_examples=60,
            interleaving_examples=250,
        ),
        Engine(
            "redis-cluster-layout",
            lambda tmp_path: _RedisStores(cluster_layout="1"),
            server=REDIS_SERVER,
            variant_of="redis",
            state_machine_examples=30,
            interleaving_examples=60,
        ),
    )
}
"""Every engine by name; `redis-cluster-layout` is Redis with the key layout a Redis
Cluster needs (ids reserved first, idempotency keys per queue) on one server."""


def engine_names(*, cross_process: bool = False, variants: bool = True) -> list[str]:
    """The names of the engines, in registry order.

    `cross_process` keeps only engines whose store worker processes can share;
    `variants=False` leaves out engines that are another engine in another configuration.
    """
    return [
        name
        for name, engine in ENGINES.items()
        if (engine.cross_process or not cross_process) and (variants or engine.variant_of is None)
    ]


def engine_params(*, cross_process: bool = False, variants: bool = True) -> list[Any]:
    """The engines as `pytest.param`s whose ids are their names (see `engine_names`)."""
    return [
        pytest.param(ENGINES[name], id=name)
        for name in engine_names(cross_process=cross_process, variants=variants)
    ]
