"""SQLite benchmark: stagecrew against the engine's raw limit, measured in the same run.

Reports enqueue (one by one and batched), drain of pre-queued no-op jobs with
real worker processes, and pickup latency with idle workers. The raw limit is
a bare sqlite3 loop doing, per job, an insert transaction and then a
claim-and-mark-done transaction (WAL, synchronous=NORMAL).

    python benchmarks/bench_sqlite.py [--drain-jobs 20000] [--processes 2] [--write-results]
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import harness
from harness import drain, enqueue_batched, enqueue_one_by_one, make_app, pickup_latency


def raw_loop(path: Path, jobs: int) -> float:
    """Jobs/s of the bare loop: INSERT txn, then claim+complete txn, per job."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE q (id INTEGER PRIMARY KEY, payload TEXT, state TEXT, run_at REAL)")
    db.execute("CREATE INDEX q_ready ON q (run_at) WHERE state = 'available'")
    start = time.perf_counter()
    for i in range(jobs):
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "INSERT INTO q (payload, state, run_at) VALUES (?, 'available', ?)",
            (f'{{"args":[{i}]}}', time.time()),
        )
        db.execute("COMMIT")
        db.execute("BEGIN IMMEDIATE")
        row = db.execute(
            "UPDATE q SET state = 'running' WHERE id = (SELECT id FROM q "
            "WHERE state = 'available' ORDER BY run_at LIMIT 1) RETURNING id"
        ).fetchone()
        db.execute("UPDATE q SET state = 'done' WHERE id = ?", row)
        db.execute("COMMIT")
    elapsed = time.perf_counter() - start
    db.close()
    return jobs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--drain-jobs", type=int, default=20_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--raw-jobs", type=int, default=20_000)
    parser.add_argument("--enqueue-jobs", type=int, default=10_000)
    parser.add_argument("--batch-jobs", type=int, default=100_000)
    parser.add_argument("--latency-samples", type=int, default=300)
    parser.add_argument("--write-results", action="store_true")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    opts = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        raw = raw_loop(tmpdir / "raw.db", opts.raw_jobs)
        print(f"raw sqlite3 loop (insert txn + claim/complete txn): {raw:,.0f} jobs/s")

        url = f"sqlite:///{tmpdir / 'one.db'}"
        app = make_app(url)
        one = enqueue_one_by_one(app, opts.enqueue_jobs)
        print(f"enqueue one by one: {one:,.0f} jobs/s")
        many = enqueue_batched(app, opts.batch_jobs, 10_000)
        print(f"enqueue_many (batches of 10,000): {many:,.0f} jobs/s")
        app.close()

        results = {}
        for task in ("noop", "noop_sync"):
            url = f"sqlite:///{tmpdir / f'drain-{task}.db'}"
            app = make_app(url)
            rate = drain(app, url, opts.drain_jobs, opts.processes, opts.concurrency, task).rate
            results[task] = rate
            print(
                f"drain {opts.drain_jobs:,} {task} jobs, {opts.processes} processes: "
                f"{rate:,.0f} jobs/s ({rate / raw:.2f}x raw)"
            )
            app.close()

        url = f"sqlite:///{tmpdir / 'latency.db'}"
        app = make_app(url)
        p50, p99 = pickup_latency(app, url, opts.latency_samples, opts.processes)
        print(f"pickup latency, idle workers: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
        app.close()

    harness.write_json(
        opts.json,
        {"raw": raw, "one": one, "many": many, "drains": results, "latency": [p50, p99]},
    )
    if opts.write_results:
        write_results(opts, raw, one, many, results, p50, p99)


def write_results(
    opts: argparse.Namespace,
    raw: float,
    one: float,
    many: float,
    drains: dict[str, float],
    p50: float,
    p99: float,
) -> None:
    lines = [
        f"## SQLite, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        harness.machine(f"SQLite {sqlite3.sqlite_version}"),
        "",
        "| measurement | figure | ratio to raw loop |",
        "| --- | --- | --- |",
        f"| raw loop: insert txn + claim/complete txn per job | {raw:,.0f} jobs/s | 1.00 |",
        f"| enqueue one by one | {one:,.0f} jobs/s | {one / raw:.2f} |",
        f"| enqueue_many, batches of 10,000 | {many:,.0f} jobs/s | {many / raw:.2f} |",
    ]
    for task, rate in drains.items():
        kind = "async" if task == "noop" else "sync"
        lines.append(
            f"| drain {opts.drain_jobs:,} pre-queued {kind} no-op jobs, "
            f"--processes {opts.processes} --concurrency {opts.concurrency} "
            f"| {rate:,.0f} jobs/s | {rate / raw:.2f} |"
        )
    lines.append(
        f"| pickup latency, idle workers (p50 / p99) "
        f"| {p50 * 1000:.1f} ms / {p99 * 1000:.1f} ms | |"
    )
    harness.prepend_results(lines)


if __name__ == "__main__":
    main()
