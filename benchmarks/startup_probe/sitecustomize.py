"""Time marks of `stagecrew worker`'s start-up, for `bench_startup.py --phases`.

Put on `PYTHONPATH` with `STAGECREW_STARTUP_MARKS` naming a file, this module is imported
by every Python process the command starts (the supervisor, a fork server, each worker), and
appends `pid event time.time()` lines to that file: the process start, the first import of
stagecrew, the app loaded, each child started, the store checked, the first claim sent. It
wraps the functions once their modules have run, and changes nothing they do.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import os
import sys
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

_PATH = os.environ.get("STAGECREW_STARTUP_MARKS")


def mark(event: str) -> None:
    if _PATH is None:
        return
    fd = os.open(_PATH, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{os.getpid()} {event} {time.time():.6f}\n".encode())
    finally:
        os.close(fd)


def _timed(fn: Callable[..., Any], before: str | None, after: str | None) -> Callable[..., Any]:
    if getattr(fn, "_marked", False):
        return fn
    if hasattr(fn, "__code__") and fn.__code__.co_flags & 0x80:  # a coroutine function

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            if before:
                mark(before)
            result = await fn(*args, **kwargs)
            if after:
                mark(after)
            return result

        async_wrapper._marked = True  # type: ignore[attr-defined]
        return async_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if before:
            mark(before)
        result = fn(*args, **kwargs)
        if after:
            mark(after)
        return result

    wrapper._marked = True  # type: ignore[attr-defined]
    return wrapper


# module -> [(dotted attribute, mark before, mark after)]
_TARGETS: dict[str, list[tuple[str, str | None, str | None]]] = {
    "stagecrew": [("", "imported-stagecrew", None)],
    "stagecrew.cli.loading": [("load_app", "load-app", "app-loaded")],
    "stagecrew.backends.sqlite": [("", "imported-engine", None)],
    "stagecrew.backends.postgres": [("", "imported-engine", None)],
    "stagecrew.backends.redis": [("", "imported-engine", None)],
    "stagecrew.worker.supervisor": [
        ("Supervisor.start_fork_server", "fork-server-start", None),
        ("Supervisor._start", "child-start", "child-started"),
        ("run_child", "run-child", None),
    ],
    "stagecrew.worker.runner": [
        ("Worker.run", "worker-run", None),
        ("Worker._open_store", "open-store", "store-open"),
    ],
    "stagecrew.backends.base": [("Backend.claim_async", "claim", None)],
}


def _patch(module: ModuleType) -> None:
    for dotted, before, after in _TARGETS.get(module.__name__, []):
        if not dotted:
            if before:
                mark(before)
            continue
        owner: Any = module
        *path, name = dotted.split(".")
        for part in path:
            owner = getattr(owner, part)
        if hasattr(owner, name):  # absent from the tree measured: nothing to mark
            setattr(owner, name, _timed(getattr(owner, name), before, after))


class _Loader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader) -> None:
        self._inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)
        _patch(module)

    def __getattr__(self, name: str) -> Any:  # resource readers, `get_code`, ...
        return getattr(self._inner, name)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _TARGETS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader)
                return spec
        return None


if _PATH is not None:
    mark("process-start")
    for _name in _TARGETS:
        if _name in sys.modules:
            _patch(sys.modules[_name])
    sys.meta_path.insert(0, _Finder())
