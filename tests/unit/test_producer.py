"""The producer validates everything before writing and writes once."""

from __future__ import annotations

import math
import socket
import time
from datetime import UTC, datetime, timedelta

import pytest

from stagecrew import (
    App,
    ConfigurationError,
    Context,
    EnqueueError,
    FakeClock,
    InvalidArgumentsError,
    JobState,
    PayloadTooLargeError,
    SerializationError,
    UnknownTaskError,
    call,
)
from stagecrew.backends import redact_url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(clock: FakeClock) -> App:
    app = App("memory://", clock=clock)

    @app.task(queue="images", max_attempts=5)
    def resize(path: str, width: int = 100) -> str:
        return f"{path}@{width}"

    @app.task
    async def notify(user_id: int, ctx: Context) -> None:
        ctx.log.info("sending")

    return app


def test_enqueue_returns_a_handle_to_a_stored_available_job(app: App) -> None:
    job = app.tasks["resize"].enqueue("a.png", width=320)
    stored = job.get()
    assert stored.state is JobState.AVAILABLE
    assert stored.queue == "images"
    assert stored.max_attempts == 5
    assert stored.args == ["a.png"] and stored.kwargs == {"width": 320}
    assert job.state() is JobState.AVAILABLE


def test_context_parameter_is_not_part_of_the_enqueued_arguments(app: App) -> None:
    job = app.tasks["notify"].enqueue(7)
    assert job.get().args == [7]
    with pytest.raises(InvalidArgumentsError):
        app.tasks["notify"].enqueue(7, None)


def test_delay_and_run_at_schedule_the_job(app: App, clock: FakeClock) -> None:
    resize = app.tasks["resize"]
    delayed = resize.options(delay=60, priority=5).enqueue("b.png", width=64).get()
    assert delayed.state is JobState.SCHEDULED
    assert delayed.run_at == clock.now() + 60
    assert delayed.priority == 5
    when = datetime.fromtimestamp(clock.now(), UTC) + timedelta(hours=1)
    at = resize.options(run_at=when).enqueue("c.png").get()
    assert at.run_at == when.timestamp()


def test_naive_run_at_is_refused(app: App) -> None:
    with pytest.raises(ConfigurationError, match="timezone-aware"):
        app.tasks["resize"].options(run_at=datetime(2030, 1, 1)).enqueue("a.png")


def test_enqueue_many_writes_all_jobs_in_order(app: App) -> None:
    jobs = app.tasks["resize"].enqueue_many([("a.png", 1), ("b.png", 2), call("c.png", width=3)])
    assert [j.get().args for j in jobs] == [["a.png", 1], ["b.png", 2], ["c.png"]]
    assert [j.id for j in jobs] == sorted(j.id for j in jobs)


def test_enqueue_many_writes_nothing_when_one_job_is_invalid(app: App) -> None:
    with pytest.raises(SerializationError):
        app.tasks["resize"].enqueue_many([("a.png", 1), ("b.png", object())])
    assert app.jobs.list() == []


@pytest.mark.parametrize(
    "bad",
    [object(), {1, 2}, datetime.now(UTC), math.nan, math.inf, {"nested": [-math.inf]}, b"bytes"],
    ids=["object", "set", "datetime", "nan", "inf", "nested-inf", "bytes"],
)
def test_unserializable_argument_raises_before_writing(app: App, bad: object) -> None:
    with pytest.raises(SerializationError, match="cannot be stored as JSON"):
        app.tasks["resize"].enqueue(bad)
    assert app.jobs.list() == []


def test_arguments_that_do_not_bind_raise_before_writing(app: App) -> None:
    with pytest.raises(InvalidArgumentsError, match="resize"):
        app.tasks["resize"].enqueue("a.png", height=3)
    assert app.jobs.list() == []


def test_unknown_task_name_is_refused(app: App) -> None:
    with pytest.raises(UnknownTaskError, match="no task named 'nope'"):
        app.enqueue("nope", ["x"])


def test_payload_over_the_size_limit_is_refused(clock: FakeClock) -> None:
    app = App("memory://", clock=clock, max_payload_bytes=1000)

    @app.task
    def store(blob: str) -> None: ...

    with pytest.raises(PayloadTooLargeError, match="over the limit of 1000"):
        store.enqueue("x" * 2000)
    assert app.jobs.list() == []


def test_idempotency_key_returns_the_existing_job(app: App) -> None:
    resize = app.tasks["resize"]
    first = resize.options(idempotency_key="order-1").enqueue("a.png")
    second = resize.options(idempotency_key="order-1").enqueue("other.png")
    assert first.created and not second.created
    assert second.id == first.id
    assert len(app.jobs.list()) == 1


def test_store_that_cannot_be_reached_raises_enqueue_error(tmp_path: object) -> None:
    app = App("sqlite:////nonexistent-dir/sub/jobs.db")

    @app.task
    def noop() -> None: ...

    with pytest.raises(EnqueueError):
        noop.enqueue()


def test_a_producer_whose_server_is_down_fails_at_once_without_showing_the_password() -> None:
    with socket.socket() as s:  # a port nobody listens on: the connection is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = App(f"postgresql://jobs:s3cret@127.0.0.1:{port}/app")

    @app.task
    def noop() -> None: ...

    started = time.monotonic()
    with pytest.raises(EnqueueError) as raised:
        noop.enqueue()
    assert time.monotonic() - started < 2.0
    message = str(raised.value)
    assert "nothing was written" in message and f"127.0.0.1:{port}" in message
    assert "s3cret" not in message


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://jobs:s3cret@db:5432/app?sslmode=require",
            "postgresql://jobs:***@db:5432/app?sslmode=require",
        ),
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("postgresql://jobs@db/app", "postgresql://jobs@db/app"),
        ("sqlite:///jobs.db", "sqlite:///jobs.db"),
    ],
)
def test_store_urls_in_messages_never_show_a_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_duplicate_task_names_are_refused(app: App) -> None:
    def resize(x: int) -> None: ...

    with pytest.raises(ConfigurationError, match="already registered"):
        app.task(resize)


def test_calling_a_task_runs_the_function_directly(app: App) -> None:
    assert app.tasks["resize"]("a.png", width=3) == "a.png@3"


def _sig_fn(a: int, b: int = 2, c: int = 3) -> None: ...


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((), {}),
        ((1,), {}),
        ((1, 2, 3), {}),
        ((1, 2, 3, 4), {}),
        ((1,), {"c": 5}),
        ((1,), {"a": 5}),
        ((), {"a": 1, "b": 2}),
        ((), {"b": 2}),
        ((1,), {"d": 1}),
        ((1, 2), {"b": 1}),
    ],
)
def test_fast_argument_check_agrees_with_signature_bind(
    args: tuple[int, ...], kwargs: dict[str, int]
) -> None:
    import inspect

    app = App("memory://")
    task = app.task(_sig_fn)
    try:
        inspect.signature(_sig_fn).bind(*args, **kwargs)
        expected = True
    except TypeError:
        expected = False
    try:
        task.bind(args, kwargs)
        got = True
    except InvalidArgumentsError:
        got = False
    assert got is expected
    assert task._binder is not None and task._binder(args, kwargs) is expected
