"""How a command fails: one line on stderr and an exit code, never a traceback.

2 for a mistake in what was asked (bad arguments, an unknown task, an app that
does not load), 1 when the store fails or a job is not there. Kept apart from
`output` (rich tables) so that a command printing no table, such as `worker`,
does not import rich to start.
"""

from __future__ import annotations

import click

from ..errors import (
    ConfigurationError,
    InvalidArgumentsError,
    SerializationError,
    StagecrewError,
    UnknownTaskError,
)

EXIT_FAILURE = 1
EXIT_USAGE = 2

USAGE_ERRORS = (ConfigurationError, UnknownTaskError, InvalidArgumentsError, SerializationError)
"""Errors caused by what the user asked for, rather than by the store."""


class CliError(click.ClickException):
    """A failure the user can act on: printed as `Error: message`, no traceback; exit 1."""

    exit_code = EXIT_FAILURE


class CliUsageError(CliError):
    """A mistake in what was asked (exit 2); the message alone says what to change."""

    exit_code = EXIT_USAGE


def as_cli_error(exc: StagecrewError) -> CliError:
    return CliUsageError(str(exc)) if isinstance(exc, USAGE_ERRORS) else CliError(str(exc))
