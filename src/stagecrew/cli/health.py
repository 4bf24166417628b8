"""`stagecrew health`: exit 0 when the fleet is healthy, else non-zero with the reasons.

For load balancers, Kubernetes probes and cron checks: the answer is the exit code, the
reasons are one line each on stderr (or `--json` on stdout). Unhealthy means: the store
cannot be reached, no worker is alive, an alert is firing, a queue named with `--queue` has
no live worker, or a queue's oldest due job has waited longer than `--max-wait`.
"""

from __future__ import annotations

import click

from ..app import App
from ..backends.inputs import check_queue_name
from ..errors import ConfigurationError, StagecrewError
from ..observability.alerts import FIRING, AlertState
from .exits import EXIT_FAILURE, CliUsageError
from .options import app_option, duration, json_option, load, store_name
from .output import format_duration, print_json

EXIT_UNHEALTHY = EXIT_FAILURE


def problems(app: App, queues: tuple[str, ...], max_wait: float | None) -> tuple[list[str], int]:
    """Why the fleet is unhealthy (empty: it is healthy), and how many workers are alive."""
    registry = app.backend.list_workers()
    alive = registry.alive()
    found = []
    if not alive:
        found.append(f"no live worker in {store_name(app.url)}")
    served = registry.served_queues()
    found += [f"no live worker serves queue {q!r}" for q in queues if q not in served]
    for record in app.backend.list_limits("alert:"):
        state = AlertState.from_text(record.value)
        if state.state == FIRING and not state.stale(registry.now):
            where = f" (queue {state.queue})" if state.queue else ""
            found.append(
                f"alert {record.name.removeprefix('alert:')} is firing: {state.rule}{where}"
            )
    if max_wait is not None:
        for q in app.backend.stats():
            age = q.oldest_available_age
            if age is not None and age > max_wait and not q.paused:
                found.append(
                    f"queue {q.queue!r}: its oldest due job has waited {format_duration(age)} "
                    f"(over {format_duration(max_wait)})"
                )
    return found, len(alive)


@click.command()
@app_option
@click.option(
    "--queue",
    "queues",
    multiple=True,
    metavar="NAME",
    help="A queue that must have a live worker (repeat for several).",
)
@click.option(
    "--max-wait",
    metavar="DURATION",
    callback=duration,
    help="Unhealthy when a queue's oldest due job has waited longer (paused queues aside).",
)
@json_option
def health(
    app_ref: str | None, queues: tuple[str, ...], max_wait: float | None, as_json: bool
) -> None:
    """Exit 0 if healthy; else exit 1 with each reason (no live worker, an alert firing, a
    queue without a worker, a queue waiting too long, the store unreachable)."""
    for queue in queues:
        try:
            check_queue_name(queue, "--queue")
        except ValueError as exc:
            raise CliUsageError(str(exc)) from None
    app = load(app_ref)
    try:
        found, alive = problems(app, queues, max_wait)
    except ConfigurationError as exc:
        raise CliUsageError(str(exc)) from None
    except StagecrewError as exc:
        found, alive = [f"the store cannot be reached: {exc}"], 0
    if as_json:
        print_json({"healthy": not found, "workers_alive": alive, "problems": found})
    elif found:
        for problem in found:
            click.echo(f"unhealthy: {problem}", err=True)
    else:
        click.echo(f"healthy: {alive} worker(s) alive in {store_name(app.url)}")
    if found:
        raise SystemExit(EXIT_UNHEALTHY)
