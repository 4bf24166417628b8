"""`stagecrew worker`: run a supervisor and its worker processes until SIGTERM or Ctrl-C."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

import click

from ..backends import redact_url
from ..errors import BackendError, ConfigurationError, StagecrewError
from ..observability.alert_config import ALERTS_VARIABLE
from ..worker import defaults
from ..worker.logs import FORMAT_VARIABLE, JOB_LEVEL_VARIABLE, LOG_FORMATS
from ..worker.supervisor import Supervisor, WorkerOptions
from .exits import CliUsageError
from .options import FiniteSeconds, app_ref, duration, load

if TYPE_CHECKING:
    from ..observability.host_metrics import HostMetrics

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def split_queues(values: tuple[str, ...]) -> list[str] | None:
    """`--queues a,b --queues c` as ["a", "b", "c"]; None (every queue the app uses) if empty."""
    queues = [q.strip() for value in values for q in value.split(",") if q.strip()]
    return list(dict.fromkeys(queues)) or None


@click.command()
@click.argument("app_argument", metavar="[APP]", required=False)
@click.option("--app", "app_option", metavar="MODULE:ATTR", help="Same as the APP argument.")
@click.option(
    "--queues",
    "-q",
    multiple=True,
    metavar="Q1,Q2",
    help="Queues to serve, comma-separated or repeated [default: every queue the app's tasks use].",
)
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(min=1),
    default=defaults.CONCURRENCY,
    show_default=True,
    help="Jobs run at once by each worker process (sync tasks: threads). CPU-bound work: "
    "raise --processes instead.",
)
@click.option(
    "--processes",
    "-p",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes the supervisor starts and restarts.",
)
@click.option(
    "--cpu-affinity/--no-cpu-affinity",
    default=None,
    help="Keep each worker process to one core, round robin, so that its threads hand over "
    "the GIL on one core (the first job thread too; further job threads run anywhere) "
    "[default: when --processes is a multiple of the usable cores].",
)
@click.option(
    "--lease-seconds",
    type=FiniteSeconds(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="How long a claimed job stays with a worker that stops renewing it (a crash).",
)
@click.option(
    "--grace",
    type=FiniteSeconds(min=0),
    default=30.0,
    show_default=True,
    help="Seconds running jobs get to finish after SIGTERM before they are handed back.",
)
@click.option(
    "--poll-interval",
    type=FiniteSeconds(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Longest sleep of an idle worker between looks for due jobs.",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="INFO",
    show_default=True,
)
@click.option(
    "--job-log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default=None,
    help="The level of each attempt's start and end lines (logger stagecrew.jobs, with its "
    "duration and outcome) [default: $STAGECREW_JOB_LOG_LEVEL, else DEBUG: not shown].",
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default=None,
    help="text for people, json for machines (one object per line, with the running job's "
    "id, task, queue and attempt) [default: $STAGECREW_LOG_FORMAT, else text].",
)
@click.option(
    "--alerts",
    "alerts_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="A TOML file of alert rules, added to those the app declares "
    "[default: $STAGECREW_ALERTS] (see docs/alerts.md).",
)
@click.option(
    "--alert-interval",
    metavar="DURATION",
    callback=duration,
    default=None,
    help="How often the fleet evaluates its alert rules, once per interval in all [default: 15s].",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    envvar="STAGECREW_METRICS_PORT",
    default=None,
    help="Serve Prometheus metrics of every worker process, summed, on this port (0: any "
    "free port, logged) [default: $STAGECREW_METRICS_PORT, else no metrics]. See "
    "docs/metrics.md.",
)
@click.option(
    "--metrics-host",
    metavar="ADDRESS",
    envvar="STAGECREW_METRICS_HOST",
    default="0.0.0.0",
    show_default=True,
    help="The address the metrics endpoint listens on (127.0.0.1: this machine only).",
)
def worker(
    *,
    app_argument: str | None,
    app_option: str | None,
    queues: tuple[str, ...],
    concurrency: int,
    processes: int,
    cpu_affinity: bool | None,
    lease_seconds: float,
    grace: float,
    poll_interval: float,
    log_level: str,
    job_log_level: str | None,
    log_format: str | None,
    alerts_file: str | None,
    alert_interval: float | None,
    metrics_port: int | None,
    metrics_host: str,
) -> None:
    """Run worker processes for APP (module:attr, or $STAGECREW_APP).

    \b
      stagecrew worker myapp.jobs:app --queues images,default --concurrency 20 --processes 2

    SIGTERM or Ctrl-C once: stop claiming, let running jobs finish within
    --grace, hand the rest back (a SIGTERM that reaches the workers directly
    too, as systemd sends it, is the same request). A second signal to this
    command kills the workers at once, and their jobs go back to the queue.
    A store that is down at start is waited for: the workers log why and keep
    trying.
    """
    if app_argument and app_option and app_argument != app_option:
        raise CliUsageError("give the app once: as the APP argument or with --app")
    ref = app_ref(app_argument or app_option)
    if log_format is not None:  # every process of this worker reads them, isolated ones too
        os.environ[FORMAT_VARIABLE] = log_format
    if job_log_level is not None:
        os.environ[JOB_LEVEL_VARIABLE] = job_log_level.upper()
    if alerts_file is not None:
        os.environ[ALERTS_VARIABLE] = os.path.abspath(alerts_file)
    # load the app here first: a child that cannot import it would only crash and restart
    app = load(ref, code=True, creates=True)
    assert ref is not None  # load() has succeeded, so a reference was given
    try:
        app.alert_rules()  # a rule file with a mistake is refused here, not in every child
    except ConfigurationError as exc:
        raise CliUsageError(str(exc)) from None
    options = WorkerOptions(
        queues=split_queues(queues),
        concurrency=concurrency,
        lease_seconds=lease_seconds,
        grace=grace,
        poll_interval=poll_interval,
        log_level=log_level.upper(),
        cpu_affinity=cpu_affinity,
        extra={} if alert_interval is None else {"alert_interval": alert_interval},
    )
    with contextlib.ExitStack() as stack:
        metrics = None
        if metrics_port is not None:
            # before the fork server and the workers start: they inherit its directory
            metrics = stack.enter_context(_host_metrics(metrics_host, metrics_port))
        supervisor = Supervisor(ref, processes, options, store_url=app.url, metrics=metrics)
        supervisor.start_fork_server()  # its imports run while this process checks the store
        try:
            app.backend  # noqa: B018 - builds the engine, so a bad URL fails now, not in every child
        except BackendError as exc:
            # Down is not misconfigured: the workers log it and keep trying until the store is up.
            store = redact_url(app.url)
            click.echo(f"warning: the app's store {store!r} cannot be reached yet: {exc}", err=True)
        except (StagecrewError, ImportError) as exc:
            store = redact_url(app.url)
            raise CliUsageError(f"the app's store {store!r} cannot be used: {exc}") from None
        finally:
            app.close()
        code = supervisor.run()
    click.get_current_context().exit(code)


def _host_metrics(host: str, port: int) -> HostMetrics:
    from ..observability.host_metrics import HostMetrics

    try:
        return HostMetrics(host, port)
    except ConfigurationError as exc:
        raise CliUsageError(f"--metrics-port: {exc}") from None
