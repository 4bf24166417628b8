"""The `stagecrew` command: workers, producing, inspection, the dead-letter queue, the demo.

Every command finds the app from `--app module:attr` (here or on the command)
or `STAGECREW_APP`; the worker also takes it as its first argument.
"""

from __future__ import annotations

from typing import Any

import click

from ..errors import StagecrewError
from .chaos import chaos
from .demo import demo
from .dlq import dlq
from .enqueue import enqueue
from .jobs import jobs
from .migrate import migrate
from .options import APP_HELP
from .output import as_cli_error
from .stats import stats
from .worker import worker


class _Main(click.Group):
    """Turns the errors a user can meet into one line and an exit code, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except StagecrewError as exc:
            raise as_cli_error(exc) from None


@click.group(
    cls=_Main,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option("--app", "app_ref", metavar="MODULE:ATTR", help=APP_HELP)
def main(app_ref: str | None) -> None:
    """stagecrew: background jobs that survive crashes.

    \b
      stagecrew worker myapp.jobs:app --concurrency 20 --processes 2
      stagecrew enqueue resize --args '["a.png"]' --kwargs '{"width": 3}'
      stagecrew stats
      stagecrew demo
      stagecrew chaos --url sqlite:///chaos.db --scenario kill-storm
    """


for command in (worker, enqueue, jobs, dlq, stats, demo, migrate, chaos):
    main.add_command(command)
