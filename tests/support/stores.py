"""A fresh store of each engine for one test: a file, a migrated schema or a key prefix."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from stagecrew.testing.engines import ENGINES


@contextlib.contextmanager
def fresh_store(engine: str, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty, migrated store of `engine` (a name in the engine registry),
    removed afterwards.

    A server engine whose server is unreachable skips the test, or fails it in CI.
    """
    if engine not in ENGINES:
        raise ValueError(f"no such engine: {engine!r}")
    with ENGINES[engine].stores(tmp_path) as stores:
        yield stores.url()
