"""The libraries to measure, read from their adapter modules without importing them.

An adapter (`adapters/peer_<name>.py`) imports its library at the top, which only its own
venv has; the driver reads what it needs (the pins, engines, worker command, defaults) from
the module's docstring and its literal top-level constants instead:

- `NAME`: the library as the table names it; `PACKAGES`: the pinned requirements of its
  venv (empty: the project's own venv, for stagecrew); `ENGINES`: the engines it runs on;
  `VARIANTS`: the tasks it is measured with (`""`: one);
- `WORKER`: the worker command, with `{python}`, `{bin}` (the venv's bin folder) and
  `{url}` filled in; `WORKER_COPIES`: how many of it make the workload's 2 processes.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ADAPTERS = Path(__file__).resolve().parent / "adapters"
PREFIX = "peer_"
FIELDS = ("NAME", "PACKAGES", "ENGINES", "VARIANTS", "WORKER", "WORKER_COPIES")
ENGINE_ORDER = ("sqlite", "postgres", "redis")
ENGINE_NAMES = {"sqlite": "SQLite", "postgres": "PostgreSQL", "redis": "Redis"}


@dataclass(frozen=True)
class Library:
    """One adapter's facts, as its module states them."""

    key: str
    """The adapter's name without `peer_` (`huey`), as `--libs` takes it."""
    module: str
    name: str
    packages: tuple[str, ...]
    engines: tuple[str, ...]
    variants: tuple[str, ...]
    worker: tuple[str, ...]
    worker_copies: int
    defaults: str
    """The module's docstring: what the library runs with, every default written down."""

    @property
    def is_stagecrew(self) -> bool:
        return not self.packages

    @property
    def distributions(self) -> tuple[str, ...]:
        """The packages' distribution names (`celery[redis]==5.7.*` gives `celery`)."""
        return tuple(re.split(r"[\[<>=!~ ]", p, maxsplit=1)[0] for p in self.packages)

    def label(self, variant: str, versions: dict[str, str]) -> str:
        """`Huey 3.5`, `stagecrew, sync task`: the name, the main package's major.minor."""
        name = self.name
        if self.distributions:
            version = versions.get(self.distributions[0], "")
            name = f"{name} {'.'.join(version.split('.')[:2])}".strip()
        return f"{name}, {variant}" if variant else name


def read_library(path: Path) -> Library:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id in FIELDS:
            found[target.id] = ast.literal_eval(value)
    missing = [f for f in FIELDS if f not in found]
    if missing:
        raise ValueError(f"{path.name} does not define {', '.join(missing)}")
    return Library(
        key=path.stem.removeprefix(PREFIX),
        module=path.stem,
        name=str(found["NAME"]),
        packages=tuple(found["PACKAGES"]),
        engines=tuple(found["ENGINES"]),
        variants=tuple(found["VARIANTS"]),
        worker=tuple(found["WORKER"]),
        worker_copies=int(found["WORKER_COPIES"]),
        defaults=ast.get_docstring(tree) or "",
    )


def libraries() -> list[Library]:
    """Every adapter, stagecrew last."""
    found = [read_library(p) for p in sorted(ADAPTERS.glob(f"{PREFIX}*.py"))]
    return sorted(found, key=lambda lib: lib.is_stagecrew)
