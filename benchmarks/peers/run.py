"""Side by side: the same workload on stagecrew and on the best peers of each engine.

    python benchmarks/peers/run.py [--quick] [--engines sqlite,postgres,redis] [--libs huey,rq]
        [--jobs 10000] [--runs 3] [--write-results] [--json FILE]

The workload: `--jobs` jobs whose body appends one record ("<index> <start time>") to a file,
enqueued one by one into an empty store, then drained by 2 worker processes started with the
library's default settings through its own CLI; the bulk enqueue of as many jobs into
another empty store; and pickup latency, a trickle of `--samples` single jobs `--pause` s
apart onto idle workers. Each figure is the median of `--runs` runs, the runs interleaved
across libraries. Each peer runs from a venv of its own, created from PyPI on first use
(`venvs.py`); stagecrew runs from this venv, with the tree at `STAGECREW_BENCH_SRC` if set.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import catalog
import measure
import processes
import report
import stores
import venvs
from catalog import ADAPTERS, Library
from processes import WorkerGroup
from report import Figures, Row

ROOT = Path(__file__).resolve().parents[2]
STAGECREW_SRC = Path(os.environ.get("STAGECREW_BENCH_SRC") or ROOT / "src").resolve()
LOGS = Path(__file__).resolve().parent / ".logs"
"""The worker and producer output of each failed measurement is kept here (ignored by git)."""
BULK_BATCH = 10_000
QUICK_JOBS, QUICK_SAMPLES = 2_000, 100


@dataclass(frozen=True)
class Setup:
    """Where a library runs: its venv's python and the environment of its processes."""

    python: str
    versions: dict[str, str]
    pythonpath: str

    def env(self, engine: str, variant: str, store: str, records: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        bin_dir = str(Path(self.python).parent)
        env.update(
            PYTHONPATH=self.pythonpath,
            PATH=os.pathsep.join([bin_dir, env.get("PATH", "")]),
            PYTHONUNBUFFERED="1",
            PEER_ENGINE=engine,
            PEER_VARIANT=variant,
            PEER_URL=store,
            PEER_RECORDS=str(records),
        )
        return env

    def worker_commands(self, library: Library, store: str) -> list[list[str]]:
        bin_dir = str(Path(self.python).parent)
        fill = {"python": self.python, "bin": bin_dir, "url": store}
        command = [part.format(**fill) for part in library.worker]
        return [command] * library.worker_copies


@dataclass(frozen=True)
class Options:
    jobs: int
    runs: int
    samples: int
    pause: float
    postgres_url: str
    redis_url: str


def stagecrew_version() -> str:
    """The measured tree's commit (`+` if it has uncommitted changes)."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(STAGECREW_SRC), *args], capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+" if git("status", "--porcelain", "--", ".") else "")


def set_up(library: Library) -> Setup:
    if library.is_stagecrew:
        paths = os.pathsep.join([str(ADAPTERS), str(STAGECREW_SRC)])
        return Setup(sys.executable, {"stagecrew": stagecrew_version()}, paths)
    python = venvs.ensure_venv(library.key, library.packages)
    versions = {d: venvs.installed_version(python, d) for d in library.distributions}
    return Setup(str(python), versions, str(ADAPTERS))


@dataclass(frozen=True)
class Measurement:
    """One library, variant and engine in one run: how to reach its stores and processes."""

    library: Library
    engine: str
    variant: str
    setup: Setup
    opts: Options
    folder: Path

    @property
    def log(self) -> Path:
        return self.folder / "log.txt"

    def fresh_store(self) -> AbstractContextManager[str]:
        return stores.fresh_store(
            self.engine, self.folder, self.opts.postgres_url, self.opts.redis_url
        )

    def client(self, store: str, records: Path, *args: str) -> dict[str, Any]:
        env = self.setup.env(self.engine, self.variant, store, records)
        command = [self.library.module, *args]
        return processes.run_client(self.setup.python, command, env, ADAPTERS, self.log)

    def workers(self, store: str, records: Path) -> AbstractContextManager[WorkerGroup]:
        env = self.setup.env(self.engine, self.variant, store, records)
        commands = self.setup.worker_commands(self.library, store)
        return processes.workers(commands, env, ADAPTERS, self.log)


def enqueue_and_drain(m: Measurement, figures: Figures) -> None:
    """Enqueue the jobs one by one into an empty store, then start the workers and time
    them until every job has started."""
    records = m.folder / "drain.records"
    with m.fresh_store() as store:
        m.client(store, records, "prepare")
        figures.enqueue = m.client(store, records, "enqueue", str(m.opts.jobs))["enqueue"]
        reader = measure.Records(records)
        launched = time.time()
        with m.workers(store, records) as group:
            starts = measure.wait_for_jobs(reader, range(m.opts.jobs), group.exited, "drain")
        drain = measure.drain_figures(launched, list(starts.values()))
        figures.drain, figures.steady = drain.rate, drain.steady


def bulk_enqueue(m: Measurement, figures: Figures) -> None:
    with m.fresh_store() as store:
        records = m.folder / "bulk.records"
        m.client(store, records, "prepare")
        batch = str(min(m.opts.jobs, BULK_BATCH))
        figures.bulk = m.client(store, records, "bulk", str(m.opts.jobs), batch)["bulk"]


def pickup(m: Measurement, figures: Figures) -> None:
    """The trickle onto idle workers; the producer waits for its warm-up jobs first."""
    records = m.folder / "pickup.records"
    with m.fresh_store() as store:
        m.client(store, records, "prepare")
        reader = measure.Records(records)
        with m.workers(store, records) as group:
            sent = m.client(store, records, "trickle", str(m.opts.samples), str(m.opts.pause))
            enqueued = {int(i): at for i, at in sent["enqueued"].items()}
            starts = measure.wait_for_jobs(reader, range(m.opts.samples), group.exited, "pickup")
        figures.pickup_p50, figures.pickup_p99 = measure.pickup_figures(enqueued, starts)


FAILURES = (
    processes.RunFailed,
    stores.StoreError,
    subprocess.SubprocessError,
    OSError,
    ValueError,
    KeyError,
)
"""What ends one measurement (reported in its row) rather than the whole benchmark."""


def measure_once(m: Measurement) -> Figures:
    """The three measurements, each in a new store; one that fails leaves the others to run,
    and the row reports the first failure."""
    figures = Figures()
    for phase in (enqueue_and_drain, bulk_enqueue, pickup):
        try:
            phase(m, figures)
        except FAILURES as exc:
            figures.error = figures.error or " ".join(str(exc).split())[:300]
    return figures


def build_rows(
    libraries: list[Library], engines: list[str]
) -> tuple[list[Row], dict[str, Setup], dict[str, dict[str, str]]]:
    """Rows per engine (peers, then stagecrew); every venv created before any measurement."""
    setups: dict[str, Setup] = {}
    failures: dict[str, str] = {}
    versions: dict[str, dict[str, str]] = {}
    for library in libraries:
        if not any(e in library.engines for e in engines):
            continue
        try:
            setups[library.key] = set_up(library)
            versions[library.key] = setups[library.key].versions
        except (venvs.InstallError, subprocess.CalledProcessError) as exc:
            failures[library.key] = " ".join(f"install failed: {exc}".split())[:300]
    rows = []
    for engine in engines:
        for library in libraries:
            if engine not in library.engines:
                continue
            for variant in library.variants:
                label = library.label(variant, versions.get(library.key, {}))
                rows.append(Row(engine, library, variant, label, error=failures.get(library.key)))
    return rows, setups, versions


def keep_log(log: Path, row: Row, run: int) -> Path:
    LOGS.mkdir(exist_ok=True)
    kept = LOGS / f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{row.library.key}-{row.engine}-{run + 1}.txt"
    if log.exists():
        shutil.copyfile(log, kept)
    else:
        kept.write_text("(no output)\n")
    return kept.relative_to(ROOT)


def run_all(rows: list[Row], setups: Mapping[str, Setup], opts: Options) -> None:
    for run in range(opts.runs):
        for row in rows:
            if row.error:
                continue
            started = time.monotonic()
            with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
                setup = setups[row.library.key]
                m = Measurement(row.library, row.engine, row.variant, setup, opts, Path(tmp))
                figures = measure_once(m)
                if figures.error:
                    figures.error += f" (log: {keep_log(Path(tmp) / 'log.txt', row, run)})"
            row.runs.append(figures)
            took = time.monotonic() - started
            print(
                f"[run {run + 1}/{opts.runs}] {catalog.ENGINE_NAMES[row.engine]}, {row.label}: "
                f"{report.progress(figures)} ({took:.0f} s)",
                flush=True,
            )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engines", default=",".join(catalog.ENGINE_ORDER))
    parser.add_argument("--libs", help="adapters to run, e.g. huey,rq,stagecrew [default: all]")
    parser.add_argument("--jobs", type=int, help="jobs per drain and bulk [default: 10,000]")
    parser.add_argument("--runs", type=int, help="runs, figures are their median [default: 3]")
    parser.add_argument("--samples", type=int, help="pickup trickle jobs [default: 200]")
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between them")
    parser.add_argument("--quick", action="store_true", help="2,000 jobs, 1 run, 100 samples")
    parser.add_argument("--postgres-url", default=stores.DEFAULT_POSTGRES_URL)
    parser.add_argument("--redis-url", default=stores.DEFAULT_REDIS_URL)
    parser.add_argument("--write-results", action="store_true", help="prepend to RESULTS.md")
    parser.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    opts = Options(
        jobs=args.jobs or (QUICK_JOBS if args.quick else 10_000),
        runs=args.runs or (1 if args.quick else 3),
        samples=args.samples or (QUICK_SAMPLES if args.quick else 200),
        pause=args.pause,
        postgres_url=args.postgres_url,
        redis_url=args.redis_url,
    )
    asked = {e.strip() for e in args.engines.split(",") if e.strip()}
    unknown = asked - set(catalog.ENGINE_ORDER)
    if unknown:
        raise SystemExit(f"unknown engines: {', '.join(sorted(unknown))}")
    engines = [e for e in catalog.ENGINE_ORDER if e in asked]
    libraries = catalog.libraries()
    if args.libs:
        wanted = {name.strip() for name in args.libs.split(",")}
        missing = wanted - {lib.key for lib in libraries}
        if missing:
            raise SystemExit(f"no adapter for: {', '.join(sorted(missing))}")
        libraries = [lib for lib in libraries if lib.key in wanted]
    if "redis" in engines:
        stores.check_redis(opts.redis_url)

    started = time.monotonic()
    processes.install_signal_handlers()
    try:
        rows, setups, versions = build_rows(libraries, engines)
        run_all(rows, setups, opts)
    except KeyboardInterrupt:
        raise SystemExit("interrupted: every worker stopped, every store removed") from None
    finally:
        processes.stop_all()
    wall = time.monotonic() - started
    result = report.Result(
        when=datetime.now(UTC),
        rows=rows,
        jobs=opts.jobs,
        runs=opts.runs,
        samples=opts.samples,
        pause=opts.pause,
        versions=versions,
        servers=report.server_versions(engines, opts.postgres_url, opts.redis_url),
        wall_seconds=wall,
    )
    print()
    print("\n".join(report.table(result)))
    print(f"\nTotal wall time: {wall / 60:.1f} min")
    if args.json:
        report.write_json(Path(args.json), result)
    if args.write_results:
        report.write_results(result)


if __name__ == "__main__":
    main()
