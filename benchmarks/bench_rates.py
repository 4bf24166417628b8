"""Rate limits: what drawing tokens costs when the limit is not reached, and how closely a
saturated limit is kept.

- **generous rate**: N no-op jobs of a task limited to 1,000,000/s (never reached), against N
  no-op jobs of a task without a limit, by the same workers: the drain rate with the limit
  over the rate without. Each claimed batch holding a rate-limited job costs one more store
  call (the compare-and-set of its bucket).
- **saturated rate**: M no-op jobs of a task limited to 500/s with a burst of 1, far below
  what the workers can run: the start rate achieved over the declared one (1.00 is exact;
  above 1 would be a limit exceeded), from the start times the jobs return.
- **saturated key**: K jobs over 200 keys limited to 10/s per key, alone, and then behind
  5,000 jobs of one key under the same limit (that key saturated for minutes, its backlog
  booked ahead): the other keys' drain rate beside the saturated key over their rate alone.

Usage:
    python benchmarks/bench_rates.py [--engine all|sqlite|postgres|redis] [--jobs 20000]
        [--saturated 3000] [--keyed 4000] [--hot 5000] [--json PATH] [--write-results]
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

import harness
from bench_fairness import configure, empty_store
from bench_rates_app import KEY_RATE, SATURATED_RATE
from stagecrew import JobState

ENGINES = ("sqlite", "postgres", "redis")
PROCESSES, CONCURRENCY = 2, 32
APP_REF = "bench_rates_app:app"
KEYS = 200


def saturated(app: Any, url: str, jobs: int) -> float:
    """The achieved start rate of `jobs` jobs over the declared rate."""
    harness.queue_jobs(app, "saturated_noop", jobs)
    harness.run_workers_until(
        url,
        PROCESSES,
        CONCURRENCY,
        lambda: harness.count_state(app, JobState.SUCCEEDED) >= jobs,
        app_ref=APP_REF,
    )
    starts = sorted(
        float(j.result)
        for j in app.jobs.list(state=JobState.SUCCEEDED, task="saturated_noop", limit=jobs)
    )
    return (len(starts) - 1) / (starts[-1] - starts[0]) / SATURATED_RATE


def keyed(app: Any, url: str, jobs: int, hot: int) -> harness.DrainRates:
    return harness.drain_beside_hot_key(
        app,
        url,
        "keyed_noop",
        jobs,
        hot,
        keys=KEYS,
        processes=PROCESSES,
        concurrency=CONCURRENCY,
        app_ref=APP_REF,
    )


def run_engine(engine: str, opts: argparse.Namespace) -> dict[str, Any]:
    app = harness.make_app("memory://", "bench_rates_app")
    out: dict[str, Any] = {}
    for name, task in (("unlimited", "noop"), ("generous", "generous_noop")):
        with empty_store(engine) as url:
            configure(app, url)
            out[name] = harness.drain(app, url, opts.jobs, PROCESSES, CONCURRENCY, task, APP_REF)
            app.close()
    with empty_store(engine) as url:
        configure(app, url)
        out["saturated_ratio"] = saturated(app, url, opts.saturated)
        app.close()
    for name, hot in (("keys_alone", 0), ("keys_beside_hot", opts.hot)):
        with empty_store(engine) as url:
            configure(app, url)
            out[name] = keyed(app, url, opts.keyed, hot)
            app.close()
    out["generous_ratio"] = out["generous"].rate / out["unlimited"].rate
    out["hot_ratio"] = out["keys_beside_hot"].rate / out["keys_alone"].rate
    print(
        f"{engine:8}: drain without a limit {out['unlimited'].rate:8,.0f}/s, under a generous "
        f"rate {out['generous'].rate:8,.0f}/s ({out['generous_ratio']:.2f}x); saturated "
        f"{SATURATED_RATE}/s kept at {out['saturated_ratio']:.3f}x; other keys alone "
        f"{out['keys_alone'].rate:6,.0f}/s, beside a saturated key "
        f"{out['keys_beside_hot'].rate:6,.0f}/s ({out['hot_ratio']:.2f}x)",
        flush=True,
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engine", choices=(*ENGINES, "all"), default="all")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--saturated", type=int, default=3_000)
    parser.add_argument("--keyed", type=int, default=4_000)
    parser.add_argument("--hot", type=int, default=5_000)
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--write-results", action="store_true")
    opts = parser.parse_args()
    engines = ENGINES if opts.engine == "all" else (opts.engine,)
    results: dict[str, Any] = {"jobs": opts.jobs, "saturated": opts.saturated}
    for engine in engines:
        results[engine] = run_engine(engine, opts)
    harness.write_json(opts.json, results)
    if opts.write_results:
        lines = [
            f"## Rate limits — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            "",
            f"`bench_rates.py`: {PROCESSES} worker processes of {CONCURRENCY} slots. Generous "
            f"rate: {opts.jobs:,} async no-ops of a task limited to 1,000,000/s against a task "
            f"without a limit. Saturated: {opts.saturated:,} no-ops limited to "
            f"{SATURATED_RATE}/s (burst 1), the start rate achieved over the declared one. "
            f"Saturated key: {opts.keyed:,} no-ops over {KEYS} keys limited to {KEY_RATE}/s "
            f"per key, alone and behind {opts.hot:,} jobs of one key. "
            f"{harness.machine('all engines')}",
            "",
            "| engine | drain without a limit | drain under a generous rate | generous / none "
            "| saturated rate kept at | other keys alone | beside a saturated key "
            "| beside / alone |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for engine in engines:
            r = results[engine]
            lines.append(
                f"| {engine} | {r['unlimited'].rate:,.0f}/s | {r['generous'].rate:,.0f}/s | "
                f"{r['generous_ratio']:.2f}x | {r['saturated_ratio']:.3f}x | "
                f"{r['keys_alone'].rate:,.0f}/s | {r['keys_beside_hot'].rate:,.0f}/s | "
                f"{r['hot_ratio']:.2f}x |"
            )
        lines.append("")
        harness.prepend_results(lines)


if __name__ == "__main__":
    main()
