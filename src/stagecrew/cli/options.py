"""Options every command shares: which app (`--app`), `--json`, and durations like `7d`."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..app import App
from ..backends import redact_url
from ..durations import parse_duration
from ..errors import StagecrewError
from .exits import CliUsageError
from .loading import load_app

F = TypeVar("F", bound=Callable[..., Any])

APP_HELP = "The app as module:attr, e.g. myapp.jobs:app [default: $STAGECREW_APP]."


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


URL_HELP = (
    "The store's URL, e.g. postgresql://host/db [default: $STAGECREW_URL]; enough without "
    "--app for a command that only reads or operates the store."
)
URL_KEY = "stagecrew.url"


def _remember_url(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.meta[URL_KEY] = value


def url_option(fn: F) -> F:
    """`--url`, on the top-level group and every command that takes `--app`; kept in the
    context's meta (shared by the whole command line), read by `load`."""
    return click.option(
        "--url", metavar="URL", help=URL_HELP, expose_value=False, callback=_remember_url
    )(fn)


def app_option(fn: F) -> F:
    fn = url_option(fn)
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


def given_url() -> str | None:
    """The store's URL from `--url` (the command's or the top level's)."""
    ctx = click.get_current_context(silent=True)
    given = ctx.meta.get(URL_KEY) if ctx is not None else None
    return str(given) if given else None


def load(given: str | None, *, code: bool = False, creates: bool = False) -> App:
    """The app this command works on; a failure is a usage error (exit 2) in one line.

    With `--app` (or STAGECREW_APP) the user's app is imported: its tasks, caps, schedules.
    Without it, a command that only reads or operates the store (`code=False`) gets a bare
    app on `--url` (or STAGECREW_URL), so an on-call engineer needs only the URL. Unless
    the command `creates` the store (`migrate`), a SQLite file that does not exist is refused
    rather than created empty. The store is closed when the command ends.
    """
    ref = app_ref(given)
    explicit = given_url()
    url = explicit or os.environ.get("STAGECREW_URL") or None
    if ref is None and (code or url is None):
        what = "this command runs the app's code: " if code else "no store given: "
        raise CliUsageError(
            f"{what}pass --app module:attr (for example myapp.jobs:app) or set STAGECREW_APP"
            + ("" if code else "; or --url URL (or STAGECREW_URL) for the store alone")
        )
    if ref is None:
        assert url is not None
        app = App(url)
    else:
        app = _imported(ref, explicit)
    if not creates:
        _refuse_missing_sqlite(app.url)
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(app.close)
    return app


def _imported(ref: str, url: str | None) -> App:
    if url is not None:
        os.environ["STAGECREW_URL"] = url  # an app built with App() reads it on import
    try:
        app = load_app(ref)
    except StagecrewError as exc:
        raise CliUsageError(str(exc)) from None
    except Exception as exc:  # the user's module raised while being imported
        module = ref.partition(":")[0]
        raise CliUsageError(
            f"importing the app {ref!r} failed with {type(exc).__name__}: {exc} "
            f"(run python -c 'import {module}' to see the traceback)"
        ) from None
    if url is not None and app.url != url:
        raise CliUsageError(
            f"the app {ref!r} names its own store ({redact_url(app.url)}), not {redact_url(url)}: "
            "build it with App() to take the store from STAGECREW_URL or --url"
        )
    return app


def store_name(url: str) -> str:
    """How a command names the store it opened: a SQLite file by its absolute path, a server
    by its URL without the password."""
    if url.startswith("sqlite:"):
        from ..backends.sqlite.backend import database_path

        try:
            return str(database_path(url))
        except StagecrewError:
            pass
    return redact_url(url)


def _refuse_missing_sqlite(url: str) -> None:
    if not url.startswith("sqlite:"):
        return
    from ..backends.sqlite.backend import database_path

    try:
        path = database_path(url)
    except StagecrewError as exc:
        raise CliUsageError(str(exc)) from None
    if not path.exists():
        raise CliUsageError(
            f"no store at {path} ({url}): run `stagecrew migrate` or start a worker to create "
            "it, or give the right --url"
        )


def duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """An option callback turning `7d` into seconds (a callback works on every click 8)."""
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
