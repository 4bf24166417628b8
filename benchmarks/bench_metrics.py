"""Worker metrics: what `stagecrew worker --metrics-port` costs a drain, per engine.

Per engine, with real worker processes (`stagecrew worker`, 2 processes of 32 slots), each
drain into an empty store: N async no-op jobs with metrics off, and the same with
`--metrics-port 0` (multiprocess mode: every process writes its counts to files the
supervisor serves). The machine is shared and noisy, so the two alternate, `--rounds` times
each; the figure is the median rate with metrics over the median rate without, and the
ratio of each round's pair shows the spread.

Rates are jobs/s from the first job's start to the last job's end (store times).

    python benchmarks/bench_metrics.py [--engine all|sqlite|postgres|redis] [--jobs 50000]
        [--rounds 5] [--json PATH] [--write-results]
"""

from __future__ import annotations

import argparse
import statistics
from datetime import UTC, datetime
from typing import Any

import harness
from bench_fairness import configure, empty_store

ENGINES = ("sqlite", "postgres", "redis")
PROCESSES, CONCURRENCY = 2, 32
METRICS_ON = ("--metrics-port", "0", "--metrics-host", "127.0.0.1")


def run_engine(engine: str, opts: argparse.Namespace) -> dict[str, Any]:
    app = harness.make_app("memory://")
    rates: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(opts.rounds):
        for name, extra in (("off", ()), ("on", METRICS_ON)):
            with empty_store(engine) as url:
                configure(app, url)
                drained = harness.drain(
                    app, url, opts.jobs, PROCESSES, CONCURRENCY, "noop", extra_args=extra
                )
                rates[name].append(drained.rate)
                app.close()
    off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
    out = {
        "off": rates["off"],
        "on": rates["on"],
        "ratio": on / off,
        "round_ratios": [b / a for a, b in zip(rates["off"], rates["on"], strict=True)],
    }
    print(
        f"{engine:8}: drain metrics off {off:8,.0f}/s, on {on:8,.0f}/s ({out['ratio']:.2f}x; "
        f"rounds {', '.join(f'{r:.2f}' for r in out['round_ratios'])})",
        flush=True,
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engine", choices=(*ENGINES, "all"), default="all")
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--write-results", action="store_true")
    opts = parser.parse_args()
    engines = ENGINES if opts.engine == "all" else (opts.engine,)
    results: dict[str, Any] = {"jobs": opts.jobs, "rounds": opts.rounds}
    for engine in engines:
        results[engine] = run_engine(engine, opts)
    harness.write_json(opts.json, results)
    if opts.write_results:
        lines = [
            f"## Worker metrics — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            "",
            f"`bench_metrics.py`: {PROCESSES} worker processes of {CONCURRENCY} slots draining "
            f"{opts.jobs:,} async no-ops, with `--metrics-port` and without, alternating, "
            f"{opts.rounds} rounds each; the median rates. {harness.machine('all engines')}",
            "",
            "| engine | metrics off | metrics on | on / off | each round's on / off |",
            "| --- | --- | --- | --- | --- |",
        ]
        for engine in engines:
            r = results[engine]
            lines.append(
                f"| {engine} | {statistics.median(r['off']):,.0f}/s | "
                f"{statistics.median(r['on']):,.0f}/s | {r['ratio']:.2f}x | "
                f"{', '.join(f'{x:.2f}' for x in r['round_ratios'])} |"
            )
        lines.append("")
        harness.prepend_results(lines)


if __name__ == "__main__":
    main()
