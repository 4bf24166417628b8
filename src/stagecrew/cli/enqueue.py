"""`stagecrew enqueue`: enqueue one job by task name, with JSON arguments."""

from __future__ import annotations

from typing import Any

import click
import orjson

from .exits import CliUsageError
from .options import app_option, duration, json_option, load
from .output import print_json


def parse_json(text: str, option: str, kind: type[list[Any]] | type[dict[str, Any]]) -> Any:
    """Decode an option's JSON and check it is an array (`list`) or an object (`dict`)."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise CliUsageError(f"{option} is not valid JSON ({exc}): {text!r}") from None
    if not isinstance(value, kind):
        example = "'[\"a.png\", 3]'" if kind is list else "'{\"width\": 3}'"
        wanted = "array" if kind is list else "object"
        raise CliUsageError(f"{option} must be a JSON {wanted}, for example {example}")
    return value


@click.command()
@click.argument("task_name", metavar="TASK")
@click.option(
    "--args", "args_json", default="[]", metavar="JSON", help="Positional arguments, a JSON array."
)
@click.option(
    "--kwargs",
    "kwargs_json",
    default="{}",
    metavar="JSON",
    help="Keyword arguments, a JSON object.",
)
@click.option("--queue", help="Queue [default: the task's].")
@click.option("--priority", type=int, help="Lower runs first [default: the task's].")
@click.option(
    "--delay",
    metavar="DURATION",
    callback=duration,
    help="Run no sooner than this from now: 90, 30s, 15m, 2h.",
)
@click.option("--max-attempts", type=click.IntRange(min=1), help="[default: the task's]")
@click.option("--idempotency-key", metavar="KEY", help="Enqueue at most one job with this key.")
@app_option
@json_option
def enqueue(
    *,
    task_name: str,
    args_json: str,
    kwargs_json: str,
    queue: str | None,
    priority: int | None,
    delay: float | None,
    max_attempts: int | None,
    idempotency_key: str | None,
    app_ref: str | None,
    as_json: bool,
) -> None:
    """Enqueue a job of TASK and print its id.

    \b
      stagecrew enqueue resize --args '["a.png"]' --kwargs '{"width": 3}' --delay 5m

    The arguments are checked against the task's signature before anything is
    written. With --idempotency-key, a key that is already stored returns the
    existing job's id instead of enqueueing a second one.
    """
    args = parse_json(args_json, "--args", list)
    kwargs = parse_json(kwargs_json, "--kwargs", dict)
    app = load(app_ref, code=True, creates=True)
    options: dict[str, Any] = {
        "queue": queue,
        "priority": priority,
        "delay": delay,
        "max_attempts": max_attempts,
        "idempotency_key": idempotency_key,
    }
    handle = app.enqueue(
        task_name, args, kwargs, **{k: v for k, v in options.items() if v is not None}
    )
    if as_json:
        print_json({"id": handle.id, "created": handle.created})
        return
    click.echo(handle.id)
    if not handle.created:
        click.echo(
            f"idempotency key {idempotency_key!r} matched job {handle.id}; "
            "nothing new was enqueued",
            err=True,
        )
