"""The table: per engine, each library's medians, each stagecrew figure as a ratio to the
best peer of that engine; RESULTS.md and JSON."""

from __future__ import annotations

import json
import sqlite3
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import catalog
from catalog import Library
from measure import median

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import harness


@dataclass
class Figures:
    """One run of one library, variant and engine; None where it failed or does not apply."""

    enqueue: float | None = None
    bulk: float | None = None
    drain: float | None = None
    steady: float | None = None
    pickup_p50: float | None = None
    pickup_p99: float | None = None
    error: str | None = None


@dataclass
class Row:
    """One line of the table: a library (and variant) on an engine, over the runs."""

    engine: str
    library: Library
    variant: str
    label: str
    runs: list[Figures] = field(default_factory=list)
    error: str | None = None
    """Why it did not run at all (its venv could not be created)."""

    def median(self, name: str) -> float | None:
        return median([getattr(run, name) for run in self.runs])

    def note(self) -> str:
        if self.error:
            return self.error
        failed = [run.error for run in self.runs if run.error]
        if not failed:
            return ""
        return f"{len(failed)} of {len(self.runs)} runs failed: {failed[0]}"


@dataclass(frozen=True)
class Result:
    when: datetime
    rows: list[Row]
    jobs: int
    runs: int
    samples: int
    pause: float
    versions: dict[str, dict[str, str]]
    """Per library (its adapter's key), each of its packages' installed version."""
    servers: dict[str, str]
    wall_seconds: float


WIDTH = 96
HIGHER_IS_BETTER = {
    "enqueue": True,
    "bulk": True,
    "drain": True,
    "steady": True,
    "pickup_p50": False,
    "pickup_p99": False,
}


def best_peer(rows: Sequence[Row], engine: str, name: str) -> float | None:
    values = [r.median(name) for r in rows if r.engine == engine and not r.library.is_stagecrew]
    known = [v for v in values if v is not None]
    if not known:
        return None
    return max(known) if HIGHER_IS_BETTER[name] else min(known)


NONE = "\u2013"
"""An en dash: no figure (not applicable, or failed)."""


def rate(value: float | None) -> str:
    return NONE if value is None else f"{value:,.0f}"


def millis(value: float | None) -> str:
    return NONE if value is None else f"{value * 1000:.1f}"


def progress(figures: Figures) -> str:
    """One line of a run's figures, for the console."""
    text = (
        f"enqueue {rate(figures.enqueue)}/s, bulk {rate(figures.bulk)}/s, "
        f"drain {rate(figures.drain)} ({rate(figures.steady)})/s, "
        f"pickup {millis(figures.pickup_p50)} / {millis(figures.pickup_p99)} ms"
    )
    return f"{text}; FAILED: {figures.error}" if figures.error else text


def pair(
    result: Result,
    row: Row,
    names: Sequence[str],
    show: Callable[[float | None], str],
    layout: str = "{}",
) -> str:
    """The medians of `names` laid out in `layout`; for stagecrew, then `; ` and the same
    layout of its ratios to the best peer (`6,164 (7,676); 2.52x (3.01x)`)."""
    values = [row.median(name) for name in names]
    text = layout.format(*(show(v) for v in values))
    if not row.library.is_stagecrew:
        return text
    bests = [best_peer(result.rows, row.engine, name) for name in names]
    ratios = [
        NONE if v is None or b is None else f"{v / b:.2f}x"
        for v, b in zip(values, bests, strict=True)
    ]
    if all(r == NONE for r in ratios):
        return text
    return f"{text}; {layout.format(*ratios)}"


def table(result: Result) -> list[str]:
    """The Markdown table; stagecrew's cells add `; N.NNx`: its figure ÷ the best peer's."""
    lines = [
        "| engine | library | enqueue 1-by-1 /s | bulk /s | drain /s (steady) "
        "| pickup p50 / p99 ms | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result.rows:
        enqueue, bulk = (pair(result, row, [n], rate) for n in ("enqueue", "bulk"))
        drain = pair(result, row, ["drain", "steady"], rate, "{} ({})")
        pickup = pair(result, row, ["pickup_p50", "pickup_p99"], millis, "{} / {}")
        lines.append(
            f"| {catalog.ENGINE_NAMES[row.engine]} | {row.label} | {enqueue} | {bulk} "
            f"| {drain} | {pickup} | {row.note().replace('|', '/')} |"
        )
    return lines


def legend(result: Result) -> list[str]:
    return [
        f"Workload: {result.jobs:,} jobs whose body appends one record (index, start time) to "
        "a file; 2 worker processes, each library's default settings (below); median of "
        f"{result.runs} run{'s' if result.runs != 1 else ''}. Enqueue: one call per job "
        "into an empty store; bulk: the library's batch call, batches of "
        f"{min(result.jobs, 10_000):,} ({NONE} where it has none). Drain: the one-by-one jobs "
        "from the workers' launch (start-up included) to the last job's start; steady: from "
        f"the first job's start to the last's. Pickup: {result.samples} jobs enqueued one at "
        f"a time {result.pause * 1000:.0f} ms apart onto idle workers, from the start of the "
        "enqueue call to the job's start. In stagecrew's cells, the figures after `;` are its "
        "figures divided by the best peer's on that engine, column by column (the highest "
        "rate, the lowest latency): above 1x is faster for rates, below 1x is faster for "
        "latency.",
    ]


def server_versions(engines: Sequence[str], postgres_url: str, redis_url: str) -> dict[str, str]:
    """Each engine's version, as its server reports it (`unreachable` if it does not answer)."""
    import psycopg
    import redis

    found: dict[str, str] = {}
    if "sqlite" in engines:
        found["SQLite"] = sqlite3.sqlite_version
    if "postgres" in engines:
        try:
            with psycopg.connect(postgres_url, connect_timeout=5) as conn:
                row = conn.execute("SHOW server_version").fetchone()
                found["PostgreSQL"] = str(row[0]) if row else "?"
        except psycopg.Error:
            found["PostgreSQL"] = "unreachable"
    if "redis" in engines:
        client = redis.Redis.from_url(redis_url, socket_timeout=5)
        try:
            found["Redis"] = str(client.info("server").get("redis_version", "?"))
        except redis.RedisError:
            found["Redis"] = "unreachable"
        finally:
            client.close()
    return found


def libraries(result: Result) -> list[Library]:
    """The libraries of the table, once each, peers first."""
    found = {row.library.key: row.library for row in result.rows}
    return sorted(found.values(), key=lambda lib: (lib.is_stagecrew, lib.key))


def versions_line(result: Result) -> str:
    parts = []
    for library in libraries(result):
        packages = result.versions.get(library.key, {})
        listed = ", ".join(f"{name} {version}" for name, version in packages.items())
        parts.append(f"{library.name}: {listed or 'not installed'}")
    return f"Versions: {'; '.join(parts)}."


def wrap(text: str, indent: str = "") -> list[str]:
    """A paragraph of RESULTS.md, wrapped as the rest of the file is."""
    return textwrap.wrap(
        " ".join(text.split()),
        WIDTH,
        initial_indent=indent[:-2] + "- " if indent else "",
        subsequent_indent=indent,
        break_on_hyphens=False,
        break_long_words=False,
    )


def write_results(result: Result) -> None:
    """Prepend a section (table, versions, machine, every library's defaults) to RESULTS.md."""
    lines = [
        f"## Peers side by side, {result.when:%Y-%m-%d %H:%M} UTC (`make bench-peers`)",
        "",
        *wrap(harness.machine(", ".join(f"{k} {v}" for k, v in result.servers.items()))),
        "",
        *wrap(versions_line(result)),
        "",
        *(line for paragraph in legend(result) for line in wrap(paragraph)),
        "",
        *table(result),
        "",
        f"Total wall time {result.wall_seconds / 60:.1f} min.",
        "",
        "Each library's settings, as its adapter in `benchmarks/peers/adapters/` runs it:",
        "",
    ]
    for library in libraries(result):
        lines.extend(wrap(f"**{library.name}**: {library.defaults}", indent="  "))
    harness.prepend_results(lines)


def write_json(path: Path, result: Result) -> None:
    def plain(row: Row) -> dict[str, Any]:
        return {
            "engine": row.engine,
            "library": row.library.key,
            "variant": row.variant,
            "label": row.label,
            "error": row.error,
            "runs": [asdict(run) for run in row.runs],
            "medians": {name: row.median(name) for name in HIGHER_IS_BETTER},
        }

    document = {
        "when": result.when.isoformat(),
        "jobs": result.jobs,
        "runs": result.runs,
        "samples": result.samples,
        "pause": result.pause,
        "versions": result.versions,
        "servers": result.servers,
        "wall_seconds": result.wall_seconds,
        "rows": [plain(row) for row in result.rows],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {path}")
