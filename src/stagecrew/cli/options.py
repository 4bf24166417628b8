"""Options every command shares: which app (`--app`), `--json`, and durations like `7d`."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..app import App
from ..errors import StagecrewError
from .exits import CliUsageError
from .loading import load_app

F = TypeVar("F", bound=Callable[..., Any])

APP_HELP = "The app as module:attr, e.g. myapp.jobs:app [default: $STAGECREW_APP]."

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


class FiniteSeconds(click.FloatRange):
    """A number of seconds within a range, and finite.

    click's float ranges accept "nan" (it fails no comparison) and "inf"; a worker given
    either would compute leases and sleeps that never end.
    """

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        seconds = super().convert(value, param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        return seconds


def app_option(fn: F) -> F:
    return click.option("--app", "app_ref", metavar="MODULE:ATTR", help=APP_HELP)(fn)


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(fn)


def app_ref(given: str | None) -> str | None:
    """The app reference from the command, else the top-level `--app`, else STAGECREW_APP."""
    if given:
        return given
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root().params.get("app_ref") if ctx else None
    return root or os.environ.get("STAGECREW_APP") or None


def load(given: str | None) -> App:
    """Import the user's app; a failure is a usage error (exit 2) with one line of explanation.

    The store is closed when the command ends, so no connection outlives it.
    """
    ref = app_ref(given)
    try:
        app = load_app(ref)
    except StagecrewError as exc:
        raise CliUsageError(str(exc)) from None
    except Exception as exc:  # the user's module raised while being imported
        module = (ref or "").partition(":")[0]
        raise CliUsageError(
            f"importing the app {ref!r} failed with {type(exc).__name__}: {exc} "
            f"(run python -c 'import {module}' to see the traceback)"
        ) from None
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(app.close)
    return app


def parse_duration(text: str) -> float:
    """Seconds in `90`, `30s`, `15m`, `12h`, `7d`, `2w` or a sum such as `1h30m`."""
    value = text.strip().lower()
    try:
        seconds = float(value)
    except ValueError:
        parts = _DURATION.findall(value)
        if not parts or "".join(n + u for n, u in parts) != value.replace(" ", ""):
            raise ValueError(
                f"{text!r} is not a duration; use seconds or a number with a unit: "
                "30s, 15m, 12h, 7d, 2w (or 1h30m)"
            ) from None
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{text!r}: a duration must be a finite number of seconds, 0 or more")
    return seconds


def duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """An option callback turning `7d` into seconds (a callback works on every click 8)."""
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
