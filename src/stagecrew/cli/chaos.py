"""`stagecrew chaos`: kill, pause and stop real workers against a store, then audit every job."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..chaos import SCENARIOS, ChaosOptions, run_scenario
from .exits import CliError, CliUsageError
from .options import FiniteSeconds, duration

ALL = "all"


@click.command()
@click.option(
    "--url",
    help="The store to test, as for STAGECREW_URL [default: $STAGECREW_URL]. Jobs go to "
    "the stagecrew-chaos queue and are removed afterwards.",
)
@click.option(
    "--scenario",
    "scenarios",
    multiple=True,
    type=click.Choice([*SCENARIOS, ALL]),
    default=(ALL,),
    show_default=True,
    help="Scenario to run; repeat for several.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Jobs per scenario (kill storm, kill points, future and poison jobs).",
)
@click.option("--processes", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--concurrency", type=click.IntRange(min=1), default=8, show_default=True)
@click.option(
    "--lease-seconds",
    type=FiniteSeconds(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="The chaos workers' lease: short, so killed workers' jobs come back quickly.",
)
@click.option(
    "--job-seconds",
    type=FiniteSeconds(min=0),
    default=0.1,
    show_default=True,
    help="Each job sleeps a random time up to this.",
)
@click.option(
    "--kill-interval",
    type=FiniteSeconds(min=0, min_open=True),
    default=0.3,
    show_default=True,
    help="Mean seconds between SIGKILLs in the kill storm.",
)
@click.option(
    "--kills",
    type=click.IntRange(min=0),
    help="Stop the kill storm after this many kills [default: kill until every job finished].",
)
@click.option(
    "--fault-chance",
    type=click.FloatRange(0, 1),
    default=0.1,
    show_default=True,
    help="Chance a worker kills itself each time it passes the point (kill-* scenarios).",
)
@click.option(
    "--timeout",
    metavar="DURATION",
    callback=duration,
    default="10m",
    show_default=True,
    help="Longest wait for a scenario's jobs before it is judged as it stands.",
)
@click.option("--seed", type=int, help="Seed of the storm's choices, to repeat a run.")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where ledgers and worker logs go [default: a new temporary folder].",
)
def chaos(
    *,
    url: str | None,
    scenarios: tuple[str, ...],
    jobs: int,
    processes: int,
    concurrency: int,
    lease_seconds: float,
    job_seconds: float,
    kill_interval: float,
    kills: int | None,
    fault_chance: float,
    timeout: float,
    seed: int | None,
    workdir: Path | None,
) -> None:
    """Run chaos scenarios against a store and print the ledger's verdict on each.

    \b
      stagecrew chaos --url sqlite:///chaos.db --scenario kill-storm --jobs 10000
      stagecrew chaos --url postgresql://app@db/app --scenario all

    Worker processes run the built-in task module stagecrew.chaos.tasks (no
    code of yours) on the stagecrew-chaos queue, while they are SIGKILLed,
    paused and stopped. Every job writes a ledger outside the store; the report
    counts lost, stuck and duplicate runs. Exit code 1 when a report is not OK.
    See docs/chaos.md.
    """
    url = url or os.environ.get("STAGECREW_URL")
    if not url:
        raise CliUsageError("give the store to test with --url or STAGECREW_URL")
    names = list(SCENARIOS) if ALL in scenarios else list(dict.fromkeys(scenarios))
    options = ChaosOptions(
        url=url,
        jobs=jobs,
        processes=processes,
        concurrency=concurrency,
        lease_seconds=lease_seconds,
        job_seconds=job_seconds,
        kill_interval=kill_interval,
        kills=kills,
        fault_chance=fault_chance,
        timeout=timeout,
        seed=seed,
        workdir=workdir,
    )
    failed = []
    for name in names:
        report = run_scenario(name, options)
        click.echo(report.render())
        click.echo()
        if not report.ok:
            failed.append(name)
    if failed:
        raise CliError(f"{len(failed)} of {len(names)} scenarios failed: {', '.join(failed)}")
    click.echo(f"all {len(names)} scenarios OK")
