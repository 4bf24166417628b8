"""The `stagecrew` command: workers, producing, inspection, the dead-letter queue, the demo.

Every command finds the app from `--app module:attr` (here or on the command)
or `STAGECREW_APP`; the worker also takes it as its first argument.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from ..errors import StagecrewError
from .exits import as_cli_error
from .options import APP_HELP, url_option

COMMANDS = (
    "worker",
    "enqueue",
    "jobs",
    "workflows",
    "dlq",
    "stats",
    "metrics",
    "limits",
    "circuits",
    "queues",
    "workers",
    "health",
    "alerts",
    "top",
    "cron",
    "demo",
    "migrate",
    "chaos",
)
"""Each command is the attribute of that name in the module of that name in this package."""


class _Main(click.Group):
    """Turns the errors a user can meet into one line and an exit code, not a traceback.

    A command's module is imported only when that command runs (or help lists it): a
    worker's start does not pay for the demo's, the chaos harness's or rich's imports.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS and cmd_name not in self.commands:
            module = importlib.import_module(f"{__package__}.{cmd_name}")
            self.add_command(getattr(module, cmd_name), cmd_name)
        return super().get_command(ctx, cmd_name)

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
@url_option
@click.version_option(package_name="stagecrew", message="stagecrew %(version)s")
def main(app_ref: str | None) -> None:
    """stagecrew: background jobs that survive crashes.

    \b
      stagecrew worker myapp.jobs:app --concurrency 20 --processes 2
      stagecrew enqueue resize --args '["a.png"]' --kwargs '{"width": 3}'
      stagecrew stats
      stagecrew cron list
      stagecrew queues pause email
      stagecrew metrics serve --url postgresql://db/jobs --port 9101
      stagecrew demo
      stagecrew chaos --url sqlite:///chaos.db --scenario kill-storm
    """
