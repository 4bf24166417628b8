"""Reading an SQL engine's statement files and versioned migrations from its package."""

from __future__ import annotations

from importlib import resources


def read_statement(package: str, name: str) -> str:
    """The text of `sql/<name>.sql` inside `package`."""
    return (resources.files(package) / "sql" / f"{name}.sql").read_text(encoding="utf-8")


def read_migrations(package: str, engine: str) -> tuple[tuple[int, str, str], ...]:
    """(version, file name, SQL) of every `sql/migrations/NNNN_*.sql`, in version order.

    Versions must run 1, 2, 3 ... without gaps: the schema version is their count.
    """
    found = []
    for entry in (resources.files(package) / "sql" / "migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    if [version for version, _, _ in found] != list(range(1, len(found) + 1)):
        names = [name for _, name, _ in found]
        raise RuntimeError(f"{engine} migrations must be numbered 1, 2, 3 ...: {names}")
    return tuple(found)
