"""Concurrency caps: what a claim within caps costs, and other keys beside a saturated one.

Per engine, with real worker processes (`stagecrew worker`, 2 processes of 32 slots, the
default claim batch), each drain into an empty store:

- **generous cap**: N no-op jobs of a task capped at 1,000,000 (never reached), by workers
  of `bench_caps_app`, against N no-op jobs by workers of `bench_app`, which declares no cap:
  the drain rate with the cap over the rate without. A worker whose app declares any cap
  sends it with every claim, so every claim of the capped run takes the engine's capped path
  (counting the running jobs), and the uncapped run's none. `--rounds` pairs of drains,
  alternating which goes first; the ratio is the median of the pairs' ratios (a drift of the
  machine during a run moves both drains of a pair alike).
- **saturated key**: M jobs (10 ms each) spread over 200 keys with a cap of 2 per key, alone,
  and then behind 5,000 jobs of one key with the same cap (that key saturated for the whole
  run): the other keys' drain rate with the hot key over their rate without it. Keyed jobs
  are fair-queued by their key (the default), so the hot key's backlog does not lie ahead of
  the other keys' jobs; the same with `fair=False` (plain FIFO: every capped claim steps
  over the backlog) for comparison.

Rates are jobs/s from the first job's start to the last job's end (store times).

    python benchmarks/bench_caps.py [--engine all|sqlite|postgres|redis] [--jobs 20000]
        [--keyed 4000] [--hot 5000] [--json PATH] [--write-results]
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

import harness
from bench_fairness import configure, empty_store
from harness import DrainRates
from stagecrew import App

ENGINES = ("sqlite", "postgres", "redis")
PROCESSES, CONCURRENCY = 2, 32
KEYS = 200


CAPPED = "bench_caps_app:app"


def generous_drain(app: App, url: str, jobs: int, task: str, app_ref: str) -> DrainRates:
    return harness.drain(app, url, jobs, PROCESSES, CONCURRENCY, task, app_ref)


def keyed(app: App, url: str, jobs: int, hot: int, name: str = "keyed_sleep") -> DrainRates:
    """Drain `jobs` keyed jobs over KEYS keys, behind `hot` jobs of one key when `hot`."""
    return harness.drain_beside_hot_key(
        app,
        url,
        name,
        jobs,
        hot,
        keys=KEYS,
        processes=PROCESSES,
        concurrency=CONCURRENCY,
        app_ref=CAPPED,
    )


def median_drain(runs: list[DrainRates]) -> DrainRates:
    """The run of median rate (the lower middle one of an even count)."""
    return sorted(runs, key=lambda r: r.rate)[(len(runs) - 1) // 2]


def run_engine(engine: str, opts: argparse.Namespace) -> dict[str, Any]:
    plain = harness.make_app("memory://")  # bench_app: its workers declare no cap
    capped = harness.make_app("memory://", "bench_caps_app")
    out: dict[str, Any] = {}
    drains: dict[str, list[DrainRates]] = {"uncapped": [], "capped": []}
    generous = (
        (
            "uncapped",
            plain,
            lambda url: generous_drain(plain, url, opts.jobs, "noop", "bench_app:app"),
        ),
        (
            "capped",
            capped,
            lambda url: generous_drain(capped, url, opts.jobs, "capped_noop", CAPPED),
        ),
    )
    for round_ in range(opts.rounds):  # alternating, so a drift of the machine hits both alike
        for name, app, measure in generous if round_ % 2 == 0 else generous[::-1]:
            with empty_store(engine) as url:
                configure(app, url)
                drains[name].append(measure(url))
                app.close()
    out["uncapped"], out["capped"] = (median_drain(drains[n]) for n in ("uncapped", "capped"))
    out["cap_ratios"] = sorted(
        c.rate / u.rate for u, c in zip(drains["uncapped"], drains["capped"], strict=True)
    )
    for name, app, measure in (
        ("keys_alone", capped, lambda url: keyed(capped, url, opts.keyed, 0)),
        ("keys_beside_hot", capped, lambda url: keyed(capped, url, opts.keyed, opts.hot)),
        (
            "fifo_beside_hot",
            capped,
            lambda url: keyed(capped, url, opts.keyed, opts.hot, "keyed_fifo_sleep"),
        ),
    ):
        with empty_store(engine) as url:
            configure(app, url)
            out[name] = measure(url)
            app.close()
    out["cap_ratio"] = out["cap_ratios"][(len(out["cap_ratios"]) - 1) // 2]
    out["hot_ratio"] = out["keys_beside_hot"].rate / out["keys_alone"].rate
    out["fifo_ratio"] = out["fifo_beside_hot"].rate / out["keys_alone"].rate
    print(
        f"{engine:8}: drain uncapped {out['uncapped'].rate:8,.0f}/s, capped "
        f"{out['capped'].rate:8,.0f}/s ({out['cap_ratio']:.2f}x; each round "
        f"{', '.join(f'{r:.2f}' for r in out['cap_ratios'])}); other keys alone "
        f"{out['keys_alone'].rate:6,.0f}/s, beside a saturated key "
        f"{out['keys_beside_hot'].rate:6,.0f}/s ({out['hot_ratio']:.2f}x), in FIFO order "
        f"{out['fifo_beside_hot'].rate:6,.0f}/s ({out['fifo_ratio']:.2f}x)",
        flush=True,
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engine", choices=(*ENGINES, "all"), default="all")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--keyed", type=int, default=4_000)
    parser.add_argument("--hot", type=int, default=5_000)
    parser.add_argument(
        "--rounds", type=int, default=3, help="generous-cap drains of each kind, alternating"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--write-results", action="store_true")
    opts = parser.parse_args()
    engines = ENGINES if opts.engine == "all" else (opts.engine,)
    results: dict[str, Any] = {"jobs": opts.jobs, "keyed": opts.keyed, "hot": opts.hot}
    for engine in engines:
        results[engine] = run_engine(engine, opts)
    harness.write_json(opts.json, results)
    if opts.write_results:
        lines = [
            f"## Concurrency caps — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            "",
            f"`bench_caps.py`: {PROCESSES} worker processes of {CONCURRENCY} slots. Generous "
            f"cap: {opts.jobs:,} async no-ops of a task capped at 1,000,000 against an uncapped "
            f"task, {opts.rounds} alternating pairs (median drains; the ratio is the median "
            f"pair's, every pair's in brackets). Saturated key: {opts.keyed:,} jobs of 10 ms "
            f"over {KEYS} keys (2 per key), "
            f"alone and behind {opts.hot:,} jobs of one key. {harness.machine('all engines')}",
            "",
            "| engine | drain uncapped | drain capped | capped / uncapped | other keys alone "
            "| beside a saturated key | beside / alone | the same in FIFO order (fair=False) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for engine in engines:
            r = results[engine]
            lines.append(
                f"| {engine} | {r['uncapped'].rate:,.0f}/s | {r['capped'].rate:,.0f}/s | "
                f"{r['cap_ratio']:.2f}x ({', '.join(f'{x:.2f}' for x in r['cap_ratios'])}) | "
                f"{r['keys_alone'].rate:,.0f}/s | "
                f"{r['keys_beside_hot'].rate:,.0f}/s | {r['hot_ratio']:.2f}x | "
                f"{r['fifo_beside_hot'].rate:,.0f}/s ({r['fifo_ratio']:.2f}x) |"
            )
        lines.append("")
        harness.prepend_results(lines)


if __name__ == "__main__":
    main()
